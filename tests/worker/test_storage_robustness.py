"""Checkpoints and metrics in object storage (gantry.worker.run, gantry.worker.train): a manifest
never names an object that is not there, a write that did not land is retried, a checkpoint that
does not load is skipped for the one before it with a warning on the job, retention keeps the newest
N and the milestones, and metrics are written a segment per checkpoint, never whole again."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from botocore.exceptions import EndpointConnectionError

from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.errors import ServiceUnavailable
from gantry.jobs.keys import CheckpointEntry, Manifest, retain
from gantry.jobs.settings import Settings
from gantry.jobs.storage import FileStore, open_store
from gantry.worker.run import JobContext, read_manifest, run_job


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff delays of 10 ms: the tests count retries, not seconds."""
    monkeypatch.setattr("gantry.jobs.retry.backoff_delay", lambda failures, **_: 0.01)


def _context(settings: Settings, objects=None) -> JobContext:  # type: ignore[no-untyped-def]
    sessions = db.connect(settings.database)
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={}, total_steps=100).id
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker="w1:1", lease_seconds=60)
        assert job is not None
    objects = objects or open_store(settings.storage)
    return JobContext(job_id=job_id, sessions=sessions, objects=objects, settings=settings, token=job.attempt)


def _artifacts(ctx: JobContext, kind: str) -> list[str]:
    with db.session_scope(ctx.sessions) as s:
        return [a.key for a in db.list_artifacts(s, ctx.job_id) if a.kind == kind]


def _checkpoints(objects, job_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [k for k in objects.list(keys.checkpoints_prefix(job_id)) if keys.is_checkpoint_key(k)]


class SilentStore(FileStore):
    """A store that answers success for a write and keeps nothing, `drops` times (None: always),
    for the keys that contain `where`."""

    def __init__(self, root, where: str, drops: int | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(root)
        self.where, self.drops, self.dropped = where, drops, 0

    def put_bytes(self, key: str, data: bytes) -> str:
        if self.where in key and (self.drops is None or self.dropped < self.drops):
            self.dropped += 1
            return self.uri(key)
        return super().put_bytes(key, data)


# --- a manifest never names an object that is not there ------------------------------------------


def test_a_checkpoint_that_never_lands_never_gets_a_manifest(settings, tmp_path, no_waits) -> None:
    objects = SilentStore(tmp_path / "objects", where="checkpoints/step-00000020")
    ctx = _context(settings.model_copy(update={"retry_seconds": 0.3}), objects)
    ctx.checkpoint(10, b"ten")
    with pytest.raises(ServiceUnavailable) as failed:
        ctx.checkpoint(20, b"twenty")
    assert "wrote 6 bytes, found nothing" in str(failed.value) and objects.dropped > 1  # retried
    manifest = read_manifest(objects, ctx.job_id)
    assert manifest is not None and manifest.step == 10  # still the one before, which is there
    assert objects.get_bytes(manifest.key) == b"ten"
    assert keys.checkpoint_key(ctx.job_id, 20, attempt=ctx.token) not in _artifacts(ctx, "checkpoint")


def test_a_checkpoint_written_while_training_goes_on_fails_the_run_at_its_next_hand_over(
    settings, tmp_path, no_waits
) -> None:
    """`later=True` (the training loop's checkpoints): the call returns at once, the write goes on
    a thread; its failure is raised by the next checkpoint (or `settle`), and the manifest still
    names the checkpoint before it."""
    objects = SilentStore(tmp_path / "objects", where="checkpoints/step-00000020")
    ctx = _context(settings.model_copy(update={"retry_seconds": 0.3}), objects)
    ctx.checkpoint(10, b"ten", later=True)
    ctx.checkpoint(20, b"twenty", later=True)  # returns: the write of step 10 has landed
    manifest = read_manifest(objects, ctx.job_id)
    assert manifest is not None and manifest.step == 10
    with pytest.raises(ServiceUnavailable) as failed:
        ctx.checkpoint(30, b"thirty", later=True)
    assert "wrote 6 bytes, found nothing" in str(failed.value)
    ctx.settle()  # raised once, then nothing is left waiting
    manifest = read_manifest(objects, ctx.job_id)
    assert manifest is not None and manifest.step == 10 and objects.get_bytes(manifest.key) == b"ten"
    assert keys.checkpoint_key(ctx.job_id, 30, attempt=ctx.token) not in objects.list(
        keys.checkpoints_prefix(ctx.job_id)
    )


def test_a_job_whose_grid_cannot_be_written_fails_not_succeeds(
    settings, tmp_path, no_waits, monkeypatch
) -> None:
    """A grid is written while the run goes on; the run waits for it before it records its end."""
    settings = settings.model_copy(update={"retry_seconds": 0.3})

    class Unreachable(FileStore):
        def put_bytes(self, key: str, data: bytes) -> str:
            if "/samples/" in key:
                raise EndpointConnectionError(endpoint_url="http://s3")
            return super().put_bytes(key, data)

    from gantry.worker import run as runner

    real_get = runner.CONNECTIONS.get
    monkeypatch.setattr(
        runner.CONNECTIONS, "get", lambda settings: (real_get(settings)[0], Unreachable(tmp_path / "objects"))
    )
    job = Service(settings).submit_train("gan", dataset="ring8", steps=2, checkpoint_every=2, sample_every=1)
    assert run_job(job.id, settings=settings) == "failed"
    view = Service(settings).get(job.id)
    assert view.state == "failed" and "object storage" in (view.error or "")


def test_a_first_checkpoint_that_never_lands_leaves_no_manifest(settings, tmp_path, no_waits) -> None:
    objects = SilentStore(tmp_path / "objects", where="checkpoints/step-")
    ctx = _context(settings.model_copy(update={"retry_seconds": 0.3}), objects)
    with pytest.raises(ServiceUnavailable):
        ctx.checkpoint(10, b"ten")
    assert not objects.exists(keys.manifest_key(ctx.job_id))


@pytest.mark.parametrize("where", ["checkpoints/step-", "checkpoints/latest.json"])
def test_a_write_that_did_not_land_is_written_again(settings, tmp_path, no_waits, where) -> None:
    objects = SilentStore(tmp_path / "objects", where=where, drops=2)
    ctx = _context(settings, objects)
    ctx.checkpoint(10, b"ten")
    assert objects.dropped == 2  # twice answered success and kept nothing, then written
    manifest = read_manifest(objects, ctx.job_id)
    assert manifest is not None and objects.get_bytes(manifest.key) == b"ten" and manifest.bytes == 3


def test_a_failed_checkpoint_upload_is_retried(settings, tmp_path, no_waits) -> None:
    objects = open_store(settings.storage)
    real_put = objects.put_bytes
    failures = []

    def put_while_s3_blips(key: str, data: bytes) -> str:
        if key.endswith(".pt") and len(failures) < 2:
            failures.append(key)
            raise EndpointConnectionError(endpoint_url="http://s3")
        return real_put(key, data)

    objects.put_bytes = put_while_s3_blips  # type: ignore[method-assign]
    ctx = _context(settings, objects)
    ctx.checkpoint(10, b"ten")
    assert len(failures) == 2 and objects.get_bytes(keys.checkpoint_key(ctx.job_id, 10, attempt=1)) == b"ten"


# --- retention ---------------------------------------------------------------------------------------


def _entries(*steps: int) -> list[CheckpointEntry]:
    return [CheckpointEntry(step=s, key=f"step-{s}", bytes=1) for s in steps]


def test_retain_keeps_the_newest_n_and_the_milestones() -> None:
    kept, dropped = retain(_entries(80, 70, 60, 50, 40, 30, 20, 10), keep=3, every=40)
    assert [e.step for e in kept] == [80, 70, 60, 40] and [e.step for e in dropped] == [50, 30, 20, 10]
    assert retain(_entries(30, 20, 10), keep=0)[1] == []  # 0: keep all
    assert [e.step for e in retain(_entries(30, 20, 10), keep=1)[0]] == [30]  # the newest, always


def test_checkpoints_past_the_newest_n_are_deleted_after_the_manifest_moves(settings) -> None:
    ctx = _context(settings)
    for step in range(10, 90, 10):
        ctx.checkpoint(step, f"weights {step}".encode(), keep=3, keep_every=40)
        manifest = read_manifest(ctx.objects, ctx.job_id)
        assert manifest is not None and manifest.step == step
        for entry in manifest.checkpoints():  # every checkpoint the manifest names is there
            assert ctx.objects.get_bytes(entry.key) == f"weights {entry.step}".encode()
    assert [e.step for e in manifest.checkpoints()] == [80, 70, 60, 40]
    expected = sorted(keys.checkpoint_key(ctx.job_id, s, attempt=1) for s in (40, 60, 70, 80))
    assert _checkpoints(ctx.objects, ctx.job_id) == expected
    assert sorted(_artifacts(ctx, "checkpoint")) == expected  # no record of a deleted object


def test_a_training_keeps_keep_checkpoints(settings: Settings) -> None:
    svc = Service(settings)
    options = {"keep_checkpoints": "2", "keep_every": "20"}
    job = svc.submit_train(
        "gan", dataset="ring8", steps=50, checkpoint_every=5, sample_every=50, options=options
    )
    assert run_job(job.id, settings=settings) == "succeeded"
    steps = (20, 40, 45, 50)
    assert _checkpoints(svc.objects, job.id) == [keys.checkpoint_key(job.id, s, attempt=1) for s in steps]
    shown = {a.key for a in svc.get(job.id).artifacts if a.kind == "checkpoint"}
    assert shown == {keys.checkpoint_key(job.id, s, attempt=1) for s in steps}


def test_a_training_keeps_five_checkpoints_by_default(settings: Settings) -> None:
    svc = Service(settings)
    job = svc.submit_train("gan", dataset="ring8", steps=40, checkpoint_every=4, sample_every=40)
    assert run_job(job.id, settings=settings) == "succeeded"
    assert _checkpoints(svc.objects, job.id) == [
        keys.checkpoint_key(job.id, s, attempt=1) for s in (24, 28, 32, 36, 40)
    ]


# --- metrics: a segment per checkpoint, metrics.jsonl once at the end ---------------------------------


def test_metrics_are_written_a_segment_per_checkpoint_never_whole_again(settings) -> None:
    ctx = _context(settings)
    written: dict[str, int] = {}
    real_put = ctx.objects.put_bytes

    def put(key: str, data: bytes) -> str:
        if "metrics" in key:
            written[key] = written.get(key, 0) + len(data)
        return real_put(key, data)

    ctx.objects.put_bytes = put  # type: ignore[method-assign]
    for step in range(1, 101):
        ctx.progress(step, {"loss_D": float(step)})
        if step % 10 == 0:
            ctx.checkpoint(step, b"weights", keep=2)
    assert not ctx.objects.exists(keys.metrics_key(ctx.job_id))  # not rewritten at each checkpoint
    segments = ctx.objects.list(keys.metrics_segments_prefix(ctx.job_id))
    assert segments == [
        keys.metrics_segment_key(ctx.job_id, s) for s in (0, 11, 21, 31, 41, 51, 61, 71, 81, 91)
    ]
    second = [json.loads(line) for line in ctx.objects.get_bytes(segments[1]).decode().splitlines()]
    assert [p["step"] for p in second] == list(range(11, 21))
    ctx.write_metrics_jsonl()
    whole = ctx.objects.get_bytes(keys.metrics_key(ctx.job_id)).decode().splitlines()
    assert [json.loads(line)["step"] for line in whole] == list(range(1, 101))
    # Each point written twice at most (its segment, then the whole file once), where rewriting the
    # whole history at each of 10 checkpoints writes it 5.5 times on average.
    assert sum(written.values()) <= 2 * len("\n".join(whole)) + 200
    assert ctx.objects.list(keys.metrics_segments_prefix(ctx.job_id)) == []  # the segments removed
    assert _artifacts(ctx, "metrics") == [keys.metrics_key(ctx.job_id)]


def test_metrics_jsonl_lists_the_points_the_jobs_end_writes_as_the_store_keeps_them(settings) -> None:
    ctx = _context(settings)
    ctx.progress(1, {"loss_D": 1.0, "loss_G": 2.0})
    ctx.progress(2, {"loss_D": 3.0})
    # The end's metrics, pended for the job's final transaction, replacing what was written of
    # their name and step before them (stored, or pending: the last write wins).
    ctx.pend_metrics(2, {"loss_D": 0.5, "modes": 7.0})
    ctx.pend_metrics(2, {"modes": 8.0})
    ctx.write_metrics_jsonl()
    ctx.finish("succeeded", None)
    lines = ctx.objects.get_bytes(keys.metrics_key(ctx.job_id)).decode().splitlines()
    listed = [
        (p["step"], p["name"], p["value"], datetime.fromisoformat(p["time"])) for p in map(json.loads, lines)
    ]
    assert [point[:3] for point in listed] == [
        (1, "loss_D", 1.0), (1, "loss_G", 2.0), (2, "loss_D", 0.5), (2, "modes", 8.0),
    ]  # fmt: skip
    with db.session_scope(ctx.sessions) as s:  # the same points, at the same times
        stored = [(m.step, m.name, m.value, m.time) for m in db.metric_history(s, ctx.job_id)]
    assert listed == [(*p[:3], db.aware(p[3])) for p in stored]
    assert _artifacts(ctx, "metrics") == [keys.metrics_key(ctx.job_id)]


# --- a checkpoint that does not load is skipped for the one before it ----------------------------------


def _died(svc: Service, job_id: str) -> None:
    """Pretend the job's worker died after its last checkpoint: `running`, a dead holder."""
    with db.session_scope(svc.sessions) as s:
        row = db.get_job(s, job_id)
        row.state, row.worker, row.finished_at = "running", "nohost:1", None
        row.heartbeat_at = db.utcnow().replace(year=2000)


def _spoil(svc: Service, job_id: str, how: str) -> str:
    """Spoil the job's latest checkpoint; its key."""
    manifest = read_manifest(svc.objects, job_id)
    assert manifest is not None and manifest.step == 30
    data = svc.objects.get_bytes(manifest.key)
    if how == "truncated":
        svc.objects.put_bytes(manifest.key, data[: len(data) // 2])
    elif how == "corrupt":  # same size, other bytes
        svc.objects.put_bytes(
            manifest.key, data[:1000] + bytes(b ^ 0xFF for b in data[1000:2000]) + data[2000:]
        )
    elif how == "missing":
        svc.objects.delete(manifest.key)
    else:  # an older manifest (no checksum, no history) naming a truncated checkpoint
        svc.objects.put_bytes(manifest.key, data[: len(data) // 2])
        old = {
            "step": 30,
            "key": manifest.key,
            "uri": manifest.uri,
            "bytes": len(data) // 2,
            "time": "2024-01-01T00:00:00",
        }
        svc.objects.put_bytes(keys.manifest_key(job_id), json.dumps(old).encode())
    return manifest.key


@pytest.mark.parametrize(
    ("how", "where"),
    [
        ("truncated", "settings"),
        ("corrupt", "settings"),
        ("missing", "settings"),
        ("old manifest", "settings"),
        ("truncated", "s3_settings"),
        ("missing", "s3_settings"),
    ],
)
def test_a_checkpoint_that_does_not_load_is_skipped_for_the_one_before(request, caplog, how, where) -> None:
    settings = request.getfixturevalue(where)
    svc = Service(settings)
    job = svc.submit_train("gan", dataset="ring8", steps=30, checkpoint_every=10, sample_every=30)
    assert run_job(job.id, settings=settings) == "succeeded"
    bad = _spoil(svc, job.id, how)
    _died(svc, job.id)
    caplog.set_level("INFO")
    assert run_job(job.id, settings=settings) == "succeeded"
    assert f"job {job.id}: resuming from step 20" in caplog.text
    warnings = svc.objects.get_bytes(keys.warnings_key(job.id)).decode()
    assert bad in warnings and "resumed from step 20 instead" in warnings
    assert any(a.kind == "warnings" for a in svc.get(job.id).artifacts)
    # The run went on from step 20 and wrote step 30 again, whole; each step recorded once.
    manifest = read_manifest(svc.objects, job.id)
    assert manifest is not None and manifest.step == 30 and manifest.sha256 is not None
    assert svc.objects.size(manifest.key) == manifest.bytes
    with db.session_scope(svc.sessions) as s:
        points = [(m.step, m.name) for m in db.metric_history(s, job.id)]
    assert len(points) == len(set(points)) and max(step for step, _ in points) == 30


def test_when_no_checkpoint_loads_the_run_starts_over_with_a_warning(settings: Settings, caplog) -> None:
    svc = Service(settings)
    job = svc.submit_train("gan", dataset="ring8", steps=20, checkpoint_every=10, sample_every=20)
    assert run_job(job.id, settings=settings) == "succeeded"
    for key in _checkpoints(svc.objects, job.id):
        svc.objects.put_bytes(key, b"not a checkpoint")
    _died(svc, job.id)
    assert run_job(job.id, settings=settings) == "succeeded"
    assert (
        "no checkpoint loads: the run starts over from step 0"
        in svc.objects.get_bytes(keys.warnings_key(job.id)).decode()
    )
    manifest = read_manifest(svc.objects, job.id)
    assert (
        manifest is not None and manifest.step == 20 and [e.step for e in manifest.checkpoints()] == [20, 10]
    )


def _trained(settings: Settings) -> tuple[Service, str]:
    svc = Service(settings)
    job = svc.submit_train("gan", dataset="ring8", steps=30, checkpoint_every=10, sample_every=30)
    assert run_job(job.id, settings=settings) == "succeeded"
    return svc, job.id


def _submit(svc: Service, kind: str, job_id: str, checkpoint: str):  # type: ignore[no-untyped-def]
    if kind == "sample":
        return svc.submit_sample(job_id, checkpoint=checkpoint, count=8, seed=1)
    return svc.submit_evaluate(job_id, checkpoint=checkpoint, metrics=["modes_2d"])


@pytest.mark.parametrize("kind", ["sample", "evaluate"])
@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_sample_and_evaluate_of_latest_fall_back_past_a_checkpoint_that_does_not_load(
    settings: Settings, kind, how
) -> None:
    svc, train_id = _trained(settings)
    job = _submit(svc, kind, train_id, "latest")
    bad = _spoil(svc, train_id, how)
    assert run_job(job.id, settings=settings) == "succeeded"
    done = svc.get(job.id)
    warnings = svc.objects.get_bytes(keys.warnings_key(job.id)).decode()
    assert bad in warnings and f"used job {train_id}'s checkpoint at step 20 instead" in warnings
    assert any(a.kind == "warnings" for a in done.artifacts)
    if kind == "sample":
        assert any(a.kind == "image" for a in done.artifacts)
    else:  # the metric is of the checkpoint it read: step 20's
        assert {p.step for p in svc.metrics(job.id)} == {20}
    # The train job's manifest is the train job's: a reader never moves it.
    manifest = read_manifest(svc.objects, train_id)
    assert manifest is not None and manifest.key == bad


@pytest.mark.parametrize("kind", ["sample", "evaluate"])
def test_an_explicit_step_that_does_not_load_fails_the_job_naming_the_step(settings: Settings, kind) -> None:
    svc, train_id = _trained(settings)
    job = _submit(svc, kind, train_id, "30")
    _spoil(svc, train_id, "truncated")
    assert run_job(job.id, settings=settings) == "failed"
    error = svc.get(job.id).error or ""
    assert f"checkpoint at step 30 of job {train_id}" in error.splitlines()[0]
    assert "truncated" in error.splitlines()[0]


def test_checkpoints_written_before_keys_named_the_attempt_still_load(settings: Settings) -> None:
    svc, train_id = _trained(settings)
    # Move the job's checkpoints to the keys gantry wrote before, under a manifest of that time.
    manifest = read_manifest(svc.objects, train_id)
    assert manifest is not None
    for entry in manifest.checkpoints():
        svc.objects.put_bytes(
            keys.legacy_checkpoint_key(train_id, entry.step), svc.objects.get_bytes(entry.key)
        )
        svc.objects.delete(entry.key)
    legacy = keys.legacy_checkpoint_key(train_id, 30)
    old = {
        "step": 30,
        "key": legacy,
        "uri": svc.objects.uri(legacy),
        "bytes": manifest.bytes,
        "time": "2024-01-01T00:00:00",
    }
    svc.objects.put_bytes(keys.manifest_key(train_id), json.dumps(old).encode())
    for checkpoint in ("latest", "20"):  # step 20 is not in that manifest: found by listing
        sample = svc.submit_sample(train_id, checkpoint=checkpoint, count=4, seed=1)
        assert run_job(sample.id, settings=settings) == "succeeded", svc.get(sample.id).error
        assert not svc.objects.exists(keys.warnings_key(sample.id))
    # A resume continues from the old checkpoint; the next is written under the attempt's key.
    with db.session_scope(svc.sessions) as s:
        db.get_job(s, train_id).total_steps = 40
        row = db.get_job(s, train_id)
        row.spec = {**row.spec, "steps": 40}
    _died(svc, train_id)
    assert run_job(train_id, settings=settings) == "succeeded"
    manifest = read_manifest(svc.objects, train_id)
    assert manifest is not None and manifest.step == 40
    assert manifest.key == keys.checkpoint_key(train_id, 40, attempt=2)
    assert manifest.history[0].key == legacy  # the old one, named as it is


def test_a_manifest_without_history_still_parses() -> None:
    old = b'{"step": 3, "key": "jobs/a/checkpoints/step-00000003.pt", "uri": "file:///x", "bytes": 9, "time": "2024-01-01T00:00:00"}'
    manifest = Manifest.parse(old)
    assert (
        manifest.sha256 is None and manifest.history == () and [e.step for e in manifest.checkpoints()] == [3]
    )
