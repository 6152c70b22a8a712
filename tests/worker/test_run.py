"""The job runner (gantry.worker.run): where a train job's checkpoints are found."""

from __future__ import annotations

from gantry.jobs import keys
from gantry.jobs.storage import open_store
from gantry.worker.run import resolve_checkpoint


def test_the_worker_reads_a_checkpoints_step_from_its_manifest(tmp_path) -> None:
    store = open_store(tmp_path.as_uri())
    assert resolve_checkpoint(store, "j1", "latest") is None
    # An old manifest (json.dumps of a dict) naming a key whose name says nothing of the step.
    store.put_bytes(
        keys.manifest_key("j1"),
        b'{"step": 1200, "key": "jobs/j1/checkpoints/renamed.pt", "uri": "x", "bytes": 1, "time": "2025-01-01T00:00:00+00:00"}',
    )
    assert resolve_checkpoint(store, "j1", "latest") == ("jobs/j1/checkpoints/renamed.pt", 1200)
    assert resolve_checkpoint(store, "j1", "40") is None  # an explicit step: that step's file, if any
    store.put_bytes(keys.checkpoint_key("j1", 40), b"weights")
    assert resolve_checkpoint(store, "j1", "40") == (keys.checkpoint_key("j1", 40), 40)
