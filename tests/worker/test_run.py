"""The job runner (gantry.worker.run): where a train job's checkpoints are found."""

from __future__ import annotations

from gantry.jobs import keys
from gantry.jobs.storage import open_store
from gantry.worker.checkpoints import resolve_checkpoint


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
    store.put_bytes(keys.legacy_checkpoint_key("j1", 40), b"weights")  # from before keys named attempts
    assert resolve_checkpoint(store, "j1", "40") == (keys.legacy_checkpoint_key("j1", 40), 40)
    # A step maps to the newest attempt's checkpoint at it.
    for attempt in (2, 3):
        store.put_bytes(keys.checkpoint_key("j1", 40, attempt=attempt), b"weights")
    assert resolve_checkpoint(store, "j1", "40") == (keys.checkpoint_key("j1", 40, attempt=3), 40)
    # The manifest's own entry for the step wins: its writer proved it whole.
    named = keys.Manifest(
        step=50,
        key=keys.checkpoint_key("j1", 50, attempt=2),
        uri="x",
        bytes=1,
        time="2025-01-01T00:00:00+00:00",
        history=(keys.CheckpointEntry(step=40, key=keys.checkpoint_key("j1", 40, attempt=2), bytes=7),),
    )
    store.put_bytes(keys.manifest_key("j1"), named.dump())
    assert resolve_checkpoint(store, "j1", "40") == (keys.checkpoint_key("j1", 40, attempt=2), 40)


class _Retry(Exception):
    pass


class _FakeTask:
    """What `_run` uses of a bound Celery task: its request and `retry`."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.request = SimpleNamespace(is_eager=False, retries=2)
        self.retried: dict | None = None

    def retry(self, **options):
        self.retried = options
        return _Retry()


def test_a_handed_back_job_is_retried_with_its_token_and_no_retry_count_limit(monkeypatch) -> None:
    import pytest

    from gantry.jobs.store import JobBusy
    from gantry.worker import tasks
    from gantry.worker.run import RetryLater

    calls = []

    def handed_back(job_id, *, token=None, outage_since=None, **_):
        calls.append((job_id, token, outage_since))
        raise RetryLater(job_id, "object storage", 3, 1234.0, ConnectionError("refused"))

    monkeypatch.setattr(tasks, "run_job", handed_back)
    task = _FakeTask()
    with pytest.raises(_Retry):
        tasks._run(task, "j1")
    assert task.retried is not None and task.retried["kwargs"] == {"token": 3, "outage_since": 1234.0}
    assert 0 < task.retried["countdown"] <= 300
    # The retried message carries them back to run_job.
    with pytest.raises(_Retry):
        tasks._run(task, "j1", token=3, outage_since=1234.0)
    assert calls[-1] == ("j1", 3, 1234.0)
    # A job another live worker holds: this message is a duplicate (a redelivery, or the reaper's),
    # dropped at once rather than retried for as long as the job runs; should the holder die, the
    # reaper queues the job again with a message of its own.
    monkeypatch.setattr(tasks, "run_job", lambda *a, **k: (_ for _ in ()).throw(JobBusy("j1", "w:1", 40)))
    task.retried = None
    tasks._run(task, "j1", token=3)
    assert task.retried is None
    # Retries are bounded by time in run_job, never by a count that runs out mid-outage.
    assert tasks.train.max_retries is None and not getattr(tasks.train, "autoretry_for", ())


def test_a_job_refused_for_a_newer_schema_goes_back_to_the_queue_for_the_retry_budget(
    monkeypatch, settings
) -> None:
    import time

    import pytest

    from gantry.jobs.errors import WrongSchema
    from gantry.worker import tasks

    def refused(job_id, **_):
        raise WrongSchema("the database is at schema revision 0099, newer than this gantry's")

    monkeypatch.setattr(tasks, "run_job", refused)
    task = _FakeTask()
    with pytest.raises(_Retry):
        tasks._run(task, "j1")
    first = task.retried["kwargs"]["refused_since"]
    assert task.retried["kwargs"] == {"token": None, "outage_since": None, "refused_since": first}
    # Its retries carry when the refusals began, not the outage budget of the job's own run.
    with pytest.raises(_Retry):
        tasks._run(task, "j1", refused_since=first)
    assert task.retried["kwargs"]["refused_since"] == first
    # Past GANTRY_RETRY_SECONDS the job is left queued for the reaper: no retry, no failure.
    task.retried = None
    tasks._run(task, "j1", refused_since=time.time() - settings.retry_seconds - 1)
    assert task.retried is None
