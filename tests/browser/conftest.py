"""Browser tests: the dashboard in Debian's headless Chromium, driven by Playwright, against a real
uvicorn server. Without Chromium (or Playwright) they skip with the reason, except under
GANTRY_REQUIRE_SERVICES=1 (CI, whose .ci/run installs Chromium), where they fail."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from gantry.jobs.settings import Settings

CHROMIUM = "/usr/bin/chromium"


def _unavailable(message: str) -> None:
    if os.environ.get("GANTRY_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (GANTRY_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if shutil.which(CHROMIUM) is None:
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        subprocess.run([CHROMIUM, "--version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"{CHROMIUM} does not run: {exc}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is not installed (gantry[dev])")
    return CHROMIUM


@pytest.fixture
def browser(chromium_path: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        launched = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, object]]:
    """`create_app(settings)` under uvicorn in a thread: (base URL, the app)."""
    import uvicorn

    from gantry.api.http.app import create_app

    app = create_app(settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=10)
