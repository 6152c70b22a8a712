"""The HTTP API (`gantry serve`): FastAPI routes over the same service layer as the CLI (docs/api.md).

Never imports torch or gantry.worker: tests/test_packaging.py checks."""
