"""The job runner under faults (gantry.worker.run): a database blip during progress costs nothing,
object writes wait out an outage while the job keeps its lease, an attempt that lost its lease is
refused every write and stops, a handed-back job goes on as the same attempt at once, and a job
whose worker keeps dying ends `failed`."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from botocore.exceptions import EndpointConnectionError
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.errors import LeaseLost, ServiceUnavailable
from gantry.jobs.settings import Settings
from gantry.jobs.storage import ObjectNotFound, open_store
from gantry.worker.checkpoints import stray_checkpoints
from gantry.worker.run import RECHECK_SECONDS, JobContext, RetryLater, read_manifest, run_job


class FlakySessions:
    """A session factory whose database can be taken away: while `down` (or for the next
    `fail_next` sessions) opening a session raises the OperationalError of a refused connection."""

    def __init__(self, real) -> None:
        self.real, self.down, self.fail_next, self.refused = real, False, 0, 0

    def __call__(self):
        if self.down or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            self.refused += 1
            raise OperationalError("connect", {}, Exception("connection refused"))
        return self.real()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sessions(settings: Settings) -> FlakySessions:
    return FlakySessions(db.connect(settings.database))


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff delays of 10 ms: the tests count retries, not seconds."""
    monkeypatch.setattr("gantry.jobs.retry.backoff_delay", lambda failures, **_: 0.01)


def _job(sessions, worker: str = "w1:1") -> str:
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={}, total_steps=100).id
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker=worker, lease_seconds=60)
    return job_id


def _context(settings: Settings, sessions, job_id: str, token: int) -> JobContext:
    objects = open_store(settings.storage)
    return JobContext(job_id=job_id, sessions=sessions, objects=objects, settings=settings, token=token)


def _take_over(sessions, job_id: str, worker: str = "w2:1") -> int:
    with db.session_scope(sessions) as s:
        s.execute(update(db.Job).values(heartbeat_at=db.utcnow() - timedelta(hours=1)))
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker=worker, lease_seconds=60)
        assert job is not None
        return job.attempt


def _points(sessions, job_id: str) -> list[tuple[int, str]]:
    with db.session_scope(sessions) as s:
        return [(m.step, m.name) for m in db.metric_history(s, job_id)]


def _row(sessions, job_id: str) -> db.Job:
    with db.session_scope(sessions) as s:
        return db.get_job(s, job_id)


# --- a database blip -----------------------------------------------------------------------------


def test_progress_during_a_database_outage_is_kept_and_lands_later(settings, sessions) -> None:
    job_id = _job(sessions)
    ctx = _context(settings, sessions, job_id, token=1)
    ctx.poll_seconds = 0.0
    clock = ctx.database.clock = FakeClock()
    ctx.progress(10, {"loss_D": 1.0})
    sessions.down = True  # PostgreSQL restarts
    ctx.progress(20, {"loss_D": 2.0})  # nothing raised: training goes on
    assert ctx.should_stop() is False  # the last known answer
    clock.now += 5
    ctx.progress(30, {"loss_D": 3.0})
    ctx.heartbeat(step=35)
    assert sessions.refused >= 2
    sessions.down = False
    with db.session_scope(sessions) as s:
        db.request_cancel(s, job_id)
    assert _points(sessions, job_id) == [(10, "loss_D")] and _row(sessions, job_id).step == 10
    clock.now += 60  # the next try is due
    back = db.utcnow()
    ctx.progress(40, {"loss_D": 4.0})
    assert _points(sessions, job_id) == [(step, "loss_D") for step in (10, 20, 30, 40)]
    with db.session_scope(sessions) as s:  # each at the time it was measured, not when written
        times = {m.step: db.aware(m.time) for m in db.metric_history(s, job_id)}
    assert times[20] < times[30] < back < times[40]
    assert _row(sessions, job_id).step == 40
    assert ctx.should_stop() is True  # read again once the database is back
    assert ctx.database.since is None


def test_an_outage_past_the_retry_budget_fails_the_write_naming_the_database(settings, sessions) -> None:
    job_id = _job(sessions)
    ctx = _context(settings.model_copy(update={"retry_seconds": 30}), sessions, job_id, token=1)
    clock = ctx.database.clock = FakeClock()
    sessions.down = True
    ctx.progress(10, {"loss_D": 1.0})
    clock.now += 31
    with pytest.raises(ServiceUnavailable) as spent:
        ctx.progress(20, {"loss_D": 2.0})
    assert spent.value.service == "database" and "unreachable for 31 s" in str(spent.value)


def test_a_checkpoint_waits_out_an_object_storage_outage_and_keeps_its_lease(
    settings, sessions, no_waits
) -> None:
    job_id = _job(sessions)
    ctx = _context(settings, sessions, job_id, token=1)
    real_put = ctx.objects.put_bytes
    attempts: list[str] = []

    def put_while_s3_is_down(key: str, data: bytes) -> str:
        attempts.append(key)
        if len(attempts) <= 3:
            raise EndpointConnectionError(endpoint_url="http://s3")
        return real_put(key, data)

    ctx.objects.put_bytes = put_while_s3_is_down  # type: ignore[method-assign]
    with db.session_scope(sessions) as s:
        s.execute(update(db.Job).values(heartbeat_at=db.utcnow() - timedelta(seconds=50)))
    ctx.checkpoint(20, b"weights")
    assert attempts[:4] == [keys.checkpoint_key(job_id, 20, attempt=1)] * 4
    manifest = read_manifest(ctx.objects, job_id)
    assert manifest is not None and manifest.step == 20
    heartbeat = db.aware(_row(sessions, job_id).heartbeat_at)
    assert heartbeat is not None and db.utcnow() - heartbeat < timedelta(seconds=10)


def test_the_final_state_is_written_through_a_database_blip(
    settings, sessions, monkeypatch, no_waits
) -> None:
    job_id = _new_queued(sessions)

    def train_then_lose_the_database(ctx, spec) -> bool:
        sessions.fail_next = 4  # the next four sessions are refused: the finish waits them out
        return True

    monkeypatch.setattr("gantry.worker.run.db.connect", lambda url: sessions)
    monkeypatch.setattr("gantry.worker.train.train_job", train_then_lose_the_database)
    monkeypatch.setattr("gantry.worker.run.load_train_spec", lambda data: None)
    assert run_job(job_id, settings=settings) == "succeeded"
    assert sessions.refused == 4 and _row(sessions, job_id).state == "succeeded"


def _new_queued(sessions) -> str:
    with db.session_scope(sessions) as s:
        return db.create_job(s, kind="train", model="gan", spec={}, total_steps=100).id


# --- fencing --------------------------------------------------------------------------------------


def test_an_object_write_soon_after_a_proof_of_the_lease_needs_no_check_of_its_own(
    settings, sessions
) -> None:
    """A job's writes come in runs (a checkpoint, its manifest, a grid): one proof of the lease
    covers the writes of the next RECHECK_SECONDS, which no takeover can happen within (it needs the
    heartbeat a lease old). Past them, or once the worker is asked to stop, each write checks."""
    job_id = _job(sessions)
    ctx = _context(settings, sessions, job_id, token=1)
    ctx.progress(1, {"loss_D": 1.0})  # a progress write proves the lease
    with db.session_scope(sessions) as s:  # taken away behind its back (a clock far off, say)
        s.execute(update(db.Job).values(attempt=2))
    ctx.samples(1, b"png")  # within RECHECK_SECONDS of the proof: written, unchecked
    ctx.settle()  # (a grid is written while the run goes on)
    assert ctx.objects.get_bytes(keys.samples_key(job_id, 1)) == b"png"
    ctx._proven_at -= RECHECK_SECONDS  # past them: checked, refused
    with pytest.raises(LeaseLost):
        ctx.samples(2, b"png")
    ctx._proven_at = time.monotonic()
    ctx.stopping = lambda: True  # asked to stop: every write checks
    with pytest.raises(LeaseLost):
        ctx.samples(3, b"png")
    for step in (2, 3):
        with pytest.raises(ObjectNotFound):
            ctx.objects.get_bytes(keys.samples_key(job_id, step))


def test_a_stale_attempt_is_refused_every_write_after_a_takeover(settings, sessions) -> None:
    job_id = _job(sessions)
    stale = _context(settings, sessions, job_id, token=1)
    stale.progress(10, {"loss_D": 1.0})
    stale.checkpoint(10, b"attempt 1 at step 10")
    # Attempt 1 is paused past its lease (SIGSTOP) and attempt 2 takes the job over.
    holder = _context(settings, sessions, job_id, token=_take_over(sessions, job_id))
    holder.resume_from(10)
    holder.progress(20, {"loss_D": 2.0})
    holder.checkpoint(20, b"attempt 2 at step 20")
    # Attempt 1 wakes: its last proof of its lease is a lease old (the pause; a takeover needs it),
    # so every write is refused, and none of it lands.
    stale._proven_at -= settings.lease_seconds
    writes = {
        "heartbeat": lambda: stale.heartbeat(step=30),
        "progress": lambda: stale.progress(30, {"loss_D": 9.0}),
        "checkpoint": lambda: stale.checkpoint(30, b"attempt 1 at step 30"),
        "samples": lambda: stale.samples(30, b"png"),
        "image": lambda: stale.put(keys.image_key(job_id, "x.png"), b"png", kind="image"),
        "metrics": lambda: stale.record_metrics(30, {"fid": 1.0}, job_ids=[job_id]),
        "metrics.jsonl": stale.write_metrics_jsonl,
        "resume": lambda: stale.resume_from(0),
        "final state": lambda: stale.finish("succeeded", None),
    }
    for name, write in writes.items():
        try:
            write()
        except LeaseLost:
            pass
        else:
            pytest.fail(f"the stale attempt's {name} write went through")
        stale._pending.clear()  # (the refused progress stays unwritten; start each check afresh)
    # should_stop reads the lease too: a paused worker that polls learns at once.
    stale._last_poll = 0.0
    with pytest.raises(LeaseLost):
        stale.should_stop()
    manifest = read_manifest(stale.objects, job_id)
    assert manifest is not None and manifest.step == 20  # the manifest never moved back
    for key in (
        keys.checkpoint_key(job_id, 30, attempt=1),
        keys.samples_key(job_id, 30),
        keys.image_key(job_id, "x.png"),
    ):
        with pytest.raises(ObjectNotFound):
            stale.objects.get_bytes(key)
    assert _points(sessions, job_id) == [(10, "loss_D"), (20, "loss_D")]
    row = _row(sessions, job_id)
    assert (row.state, row.step, row.attempt, row.worker) == ("running", 20, 2, "w2:1")


def test_a_late_checkpoint_write_of_a_fenced_out_attempt_never_overwrites_the_holders(
    settings, sessions
) -> None:
    job_id = _job(sessions)
    stale = _context(settings, sessions, job_id, token=1)
    stale.checkpoint(10, b"attempt 1 at step 10")
    holder = _context(settings, sessions, job_id, token=2)
    real_put = stale.objects.put_bytes

    def paused_between_its_lease_check_and_its_write(key: str, data: bytes) -> str:
        # Attempt 1 passed its lease check for step 20 and is paused (SIGSTOP) before the write
        # lands; meanwhile attempt 2 takes the job over, resumes from step 10 and checkpoints 20.
        if keys.is_checkpoint_key(key) and not holder_wrote:
            holder_wrote.append(_take_over(sessions, job_id))
            holder.resume_from(10)
            holder.checkpoint(20, b"attempt 2 at step 20")
        return real_put(key, data)

    holder_wrote: list[int] = []
    stale.objects.put_bytes = paused_between_its_lease_check_and_its_write  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):  # its write landed; the next one (the record) is refused
        stale.checkpoint(20, b"attempt 1 at step 20, late")
    assert holder_wrote == [2]
    # The checkpoint the holder's manifest names is the holder's, whole: what a resume, a sample of
    # `latest` or of `--checkpoint 20` reads.
    manifest = read_manifest(holder.objects, job_id)
    assert manifest is not None and manifest.step == 20
    assert holder.objects.get_bytes(manifest.key) == b"attempt 2 at step 20"
    assert holder.checkpoint_bytes(job_id, "latest") == (b"attempt 2 at step 20", 20)
    assert holder.checkpoint_bytes(job_id, "20") == (b"attempt 2 at step 20", 20)
    # The late write landed on a key of its own, which the job's end deletes.
    late = keys.checkpoint_key(job_id, 20, attempt=1)
    assert holder.objects.get_bytes(late) == b"attempt 1 at step 20, late"
    assert stray_checkpoints(holder) == [late]
    holder.delete_objects(stray_checkpoints(holder))
    listed = [k for k in holder.objects.list(keys.checkpoints_prefix(job_id)) if keys.is_checkpoint_key(k)]
    assert sorted(listed) == sorted(e.key for e in manifest.checkpoints())


def test_progress_kept_through_an_outage_is_refused_if_the_job_was_taken_over_meanwhile(
    settings, sessions
) -> None:
    job_id = _job(sessions)
    stale = _context(settings, sessions, job_id, token=1)
    clock = stale.database.clock = FakeClock()
    sessions.down = True
    stale.progress(10, {"loss_D": 1.0})
    sessions.down = False
    _take_over(sessions, job_id)
    clock.now += 60
    with pytest.raises(LeaseLost):
        stale.progress(20, {"loss_D": 2.0})
    assert _points(sessions, job_id) == []


def test_the_runner_stops_at_once_and_writes_nothing_when_its_lease_is_lost(
    settings, sessions, monkeypatch
) -> None:
    job_id = _new_queued(sessions)
    reached = []

    def train_past_the_lease(ctx, spec) -> bool:
        _take_over(sessions, job_id)  # this worker was paused; another took the job
        ctx.progress(5, {"loss_D": 1.0})
        reached.append("went on after a refused write")
        return True

    monkeypatch.setattr("gantry.worker.run.db.connect", lambda url: sessions)
    monkeypatch.setattr("gantry.worker.train.train_job", train_past_the_lease)
    monkeypatch.setattr("gantry.worker.run.load_train_spec", lambda data: None)
    assert run_job(job_id, settings=settings) is None
    assert reached == []
    row = _row(sessions, job_id)
    assert (row.state, row.attempt, row.worker, row.error, row.finished_at) == (
        "running",
        2,
        "w2:1",
        None,
        None,
    )
    assert _points(sessions, job_id) == []


# --- handing back, and the attempt limit -----------------------------------------------------------


def test_a_handed_back_job_goes_on_as_the_same_attempt_without_waiting_its_lease(
    settings, sessions, monkeypatch
) -> None:
    job_id = _new_queued(sessions)
    outcomes = iter([EndpointConnectionError(endpoint_url="http://s3"), True])

    def train_once_s3_is_back(ctx, spec) -> bool:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome  # met outside the retried writes (a read at the start, say)
        return outcome

    monkeypatch.setattr("gantry.worker.run.db.connect", lambda url: sessions)
    monkeypatch.setattr("gantry.worker.train.train_job", train_once_s3_is_back)
    monkeypatch.setattr("gantry.worker.run.load_train_spec", lambda data: None)
    with pytest.raises(RetryLater) as handed:
        run_job(job_id, settings=settings)
    assert handed.value.token == 1 and handed.value.service == "object storage"
    row = _row(sessions, job_id)
    assert row.state == "running" and row.error is None  # not failed for a transient reason
    # The retry lands on another worker process at once; the lease (60 s) is still fresh.
    monkeypatch.setattr("gantry.worker.run.db.worker_name", lambda: "elsewhere:9")
    started = time.monotonic()
    assert run_job(job_id, settings=settings, token=handed.value.token, outage_since=handed.value.since) == (
        "succeeded"
    )
    assert time.monotonic() - started < 30
    row = _row(sessions, job_id)
    assert (row.attempt, row.deaths, row.worker) == (1, 0, "elsewhere:9")


def test_the_same_process_takes_its_own_job_back_at_once(settings, sessions, monkeypatch) -> None:
    job_id = _new_queued(sessions)
    monkeypatch.setattr("gantry.worker.run.db.connect", lambda url: sessions)
    monkeypatch.setattr("gantry.worker.run.load_train_spec", lambda data: None)
    monkeypatch.setattr(
        "gantry.worker.train.train_job", lambda ctx, spec: (_ for _ in ()).throw(ConnectionError())
    )
    with pytest.raises(RetryLater):
        run_job(job_id, settings=settings)
    # A redelivery of the message (no token) to this same, living process: no wait for its lease.
    monkeypatch.setattr("gantry.worker.train.train_job", lambda ctx, spec: True)
    assert run_job(job_id, settings=settings) == "succeeded"
    row = _row(sessions, job_id)
    assert (row.attempt, row.deaths) == (2, 0)


def test_a_job_handed_back_for_longer_than_the_budget_fails_with_the_reason(
    settings, sessions, monkeypatch
) -> None:
    job_id = _new_queued(sessions)

    def s3_still_down(ctx, spec) -> bool:
        raise EndpointConnectionError(endpoint_url="http://s3")

    monkeypatch.setattr("gantry.worker.run.db.connect", lambda url: sessions)
    monkeypatch.setattr("gantry.worker.train.train_job", s3_still_down)
    monkeypatch.setattr("gantry.worker.run.load_train_spec", lambda data: None)
    assert run_job(job_id, settings=settings, outage_since=time.time() - 601) == "failed"
    assert "EndpointConnectionError" in (_row(sessions, job_id).error or "")


def test_a_job_whose_worker_keeps_dying_ends_failed_at_max_attempts(settings, sessions, monkeypatch) -> None:
    job_id = _job(sessions, worker="nohost:1")
    with db.session_scope(sessions) as s:
        s.execute(update(db.Job).values(deaths=4, attempt=5, heartbeat_at=db.utcnow() - timedelta(hours=1)))
    monkeypatch.setattr("gantry.worker.run.db.connect", lambda url: sessions)
    monkeypatch.setattr("gantry.worker.train.train_job", lambda ctx, spec: pytest.fail("ran again"))
    assert settings.max_attempts == 5
    assert run_job(job_id, settings=settings) is None
    row = _row(sessions, job_id)
    assert row.state == "failed" and row.deaths == 5
    assert "its worker died 5 times (out of memory?" in (row.error or "")


# --- a real training, resumed ----------------------------------------------------------------------


def test_a_resumed_training_records_each_step_once(settings: Settings) -> None:
    svc = Service(settings)
    job = svc.submit_train("gan", dataset="ring8", steps=30, checkpoint_every=10, sample_every=30)
    assert run_job(job.id, settings=settings) == "succeeded"
    # Pretend attempt 1 died at step 30 after its last progress but before its last checkpoint,
    # and a point past step 20 that the resumed run never writes again (it is cancelled early).
    key = keys.checkpoint_key(job.id, 20, attempt=1)
    size = svc.objects.size(key)  # a manifest naming another size reads as a truncated checkpoint
    manifest = keys.Manifest(step=20, key=key, uri=svc.objects.uri(key), bytes=size, time=db.utcnow())
    svc.objects.put_bytes(keys.manifest_key(job.id), manifest.dump())
    with db.session_scope(svc.sessions) as s:
        db.record_metrics(s, job.id, step=25, values={"loss_D": 7.0})
        row = db.get_job(s, job.id)
        row.state, row.worker, row.finished_at = "running", "nohost:1", None
        row.heartbeat_at = db.utcnow().replace(year=2000)
    assert run_job(job.id, settings=settings) == "succeeded"
    points = _points(svc.sessions, job.id)
    assert len(points) == len(set(points)), f"a step recorded twice: {points}"
    assert [step for step, name in points if name == "loss_D"] == [10, 20, 30]
    assert svc.get(job.id).attempt == 2
