"""A worker's lifecycle faults (gantry.jobs.requeue, gantry.worker.lifecycle, gantry.worker.run):
the reaper queues again the jobs of dead holders and sends lost messages, periodically and after
one lease past its own database outage; a stop request checkpoints the running job at that step and
hands it back as the same attempt, which another run resumes from that step; a run that does not
stop in time is handed back without it and fenced out."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput, LeaseLost
from gantry.jobs.queue import make_celery
from gantry.jobs.requeue import Reaper
from gantry.jobs.settings import Settings
from gantry.worker.lifecycle import Shutdown
from gantry.worker.run import JobContext, hand_back_late, read_manifest, run_job


@pytest.fixture
def sessions(settings: Settings):
    return db.connect(settings.database)


class Queue:
    """What the reaper sends and finds on the queue, in place of Redis."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[str, str]] = []
        self.waiting: set[str] = set()
        monkeypatch.setattr(
            "gantry.jobs.requeue.enqueue", lambda app, kind, job_id: self.sent.append((kind, job_id))
        )
        monkeypatch.setattr("gantry.jobs.requeue.waiting_job_ids", lambda app: set(self.waiting))


@pytest.fixture
def queue(monkeypatch: pytest.MonkeyPatch) -> Queue:
    return Queue(monkeypatch)


def _job(
    sessions, *, state: str = "queued", worker: str = "w1:1", age: float = 0, sent_ago: float = 0
) -> str:
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={}, total_steps=10).id
        if state == "running":
            db.claim_job(s, job_id, worker=worker, lease_seconds=60)
        past = db.utcnow() - timedelta(seconds=age)
        s.execute(
            update(db.Job)
            .where(db.Job.id == job_id)
            .values(heartbeat_at=past, enqueued_at=db.utcnow() - timedelta(seconds=sent_ago))
        )
    return job_id


def _row(sessions, job_id: str) -> db.Job:
    with db.session_scope(sessions) as s:
        return db.get_job(s, job_id)


def _reaper(settings: Settings, **changes) -> Reaper:
    return Reaper(settings.model_copy(update=changes), make_celery(settings), host="this-host")


# --- the reaper ---------------------------------------------------------------------------------


def test_the_reaper_requeues_a_dead_holders_job_and_sends_lost_messages(settings, sessions, queue) -> None:
    stale = _job(sessions, state="running", age=300)
    alive = _job(sessions, state="running", worker="w2:1", age=10)
    lost = _job(sessions, sent_ago=400)
    on_queue = _job(sessions, sent_ago=400)
    young = _job(sessions, sent_ago=10)  # just sent: left alone, whether or not Redis shows it yet
    queue.waiting = {on_queue}
    done = _reaper(settings, lease_seconds=120, requeue_seconds=300).run_once()
    assert done is not None and done.stale == [stale] and done.waiting == 1
    assert sorted(queue.sent) == sorted([("train", stale), ("train", lost)])
    row = _row(sessions, stale)
    assert (row.state, row.attempt, row.deaths) == ("queued", 2, 1)
    assert _row(sessions, alive).state == "running"
    assert {_row(sessions, j).state for j in (lost, on_queue, young)} == {"queued"}
    # The next pass sends nothing again: the lost message was sent, the stale job's too.
    queue.sent.clear()
    assert _reaper(settings, lease_seconds=120, requeue_seconds=300).run_once() is not None
    assert queue.sent == []


def test_the_reaper_runs_periodically_not_only_when_a_worker_starts(settings, sessions, queue) -> None:
    reaper = _reaper(settings, lease_seconds=5, requeue_seconds=2)
    assert reaper.interval == 1
    reaper.start()
    try:
        time.sleep(1.5)  # a few passes with nothing to do
        job_id = _job(sessions, state="running", age=60)  # its worker died after the reaper started
        deadline = time.monotonic() + 10
        while _row(sessions, job_id).state != "queued":
            assert time.monotonic() < deadline, "the reaper never requeued the job"
            time.sleep(0.2)
    finally:
        reaper.stop()
    assert queue.sent == [("train", job_id)]


def test_after_its_own_database_outage_the_reaper_waits_one_lease_before_judging_heartbeats(
    settings, sessions, queue, monkeypatch
) -> None:
    reaper = _reaper(settings, lease_seconds=60, requeue_seconds=300)
    reaper._sessions = sessions
    real = db.session_scope

    def refused(factory):
        raise OperationalError("connect", {}, Exception("connection refused"))

    monkeypatch.setattr("gantry.jobs.requeue.db.session_scope", refused)
    assert reaper.run_once() is None  # the database is out: nothing done, nothing raised
    monkeypatch.setattr("gantry.jobs.requeue.db.session_scope", real)
    # Back: every worker was cut off as long, so every heartbeat looks old. None is judged yet...
    stale = _job(sessions, state="running", age=300)
    done = reaper.run_once()
    assert done is not None and done.stale == [] and _row(sessions, stale).state == "running"
    # ...except a holder certainly dead (its process gone from this host).
    gone = _job(sessions, state="running", worker="this-host:999999999", age=1)
    assert reaper.run_once().stale == [gone]  # type: ignore[union-attr]
    # One lease later, heartbeats count again.
    reaper._hold_until = time.monotonic()
    assert reaper.run_once().stale == [stale]  # type: ignore[union-attr]


def test_a_long_read_renews_the_lease_so_the_reaper_leaves_a_live_job_alone(settings, sessions) -> None:
    settings = settings.model_copy(update={"lease_seconds": 5})
    job_id = _job(sessions, state="running", age=4)  # its last heartbeat is nearly a lease old
    ctx = JobContext(job_id=job_id, sessions=sessions, objects=None, settings=settings, token=1)  # type: ignore[arg-type]
    ctx.read(lambda: time.sleep(3))  # a data set's download: no progress to report
    with db.session_scope(sessions) as s:
        assert db.requeue_stale(s, lease_seconds=5) == []
    assert _row(sessions, job_id).state == "running"


def test_a_handed_back_jobs_retry_comes_within_half_a_lease(monkeypatch) -> None:
    from types import SimpleNamespace

    from gantry.worker import tasks
    from gantry.worker.run import RetryLater

    class Retry(Exception):
        pass

    retried = {}

    def retry(**options):
        retried.update(options)
        return Retry()

    monkeypatch.setenv("GANTRY_LEASE_SECONDS", "10")
    monkeypatch.setattr(
        tasks,
        "run_job",
        lambda job_id, **_: (_ for _ in ()).throw(RetryLater(job_id, "database", 1, 0.0, OSError())),
    )
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False, retries=6), retry=retry, app=None)
    with pytest.raises(Retry):
        tasks._run(task, "j1")  # type: ignore[arg-type]
    # Its row stays `running` meanwhile: the retry's claim renews it before the reaper would take it.
    assert 0 < retried["countdown"] <= 5


# --- a graceful stop ----------------------------------------------------------------------------


def test_a_stop_request_checkpoints_at_that_step_and_hands_the_job_back(settings, monkeypatch) -> None:
    svc = Service(settings)
    job = svc.submit_train("gan", dataset="ring8", steps=60, checkpoint_every=1000, sample_every=1000)
    stop, sent = Shutdown(), []
    progress = JobContext.progress

    def progress_then_sigterm(ctx, step, metrics):
        progress(ctx, step, metrics)
        if step == 30:
            stop.request()  # what SIGTERM does in a pool process

    monkeypatch.setattr(JobContext, "progress", progress_then_sigterm)
    state = run_job(
        job.id, settings=settings, stop=stop, send=lambda kind, job_id: sent.append((kind, job_id))
    )
    assert state == "queued" and sent == [("train", job.id)]
    row = svc.get(job.id)
    assert (row.state, row.attempt, row.progress.step) == ("queued", 1, 30)  # the same attempt
    assert _row(svc.sessions, job.id).deaths == 0
    manifest = read_manifest(svc.objects, job.id)
    assert manifest is not None and manifest.step == 30  # checkpointed at the stop, not at 1000
    assert svc.objects.exists(keys.checkpoint_key(job.id, 30, attempt=1))
    # Another worker resumes it from that step, as attempt 1.
    monkeypatch.setattr(JobContext, "progress", progress)
    monkeypatch.setattr("gantry.worker.run.db.worker_name", lambda: "elsewhere:9")
    assert run_job(job.id, settings=settings, stop=Shutdown()) == "succeeded"
    row = svc.get(job.id)
    assert (row.state, row.attempt, row.progress.step) == ("succeeded", 1, 60)
    points = [(p.step, p.name) for p in svc.metrics(job.id)]
    assert len(points) == len(set(points)), f"a step recorded twice: {points}"
    assert sorted({step for step, name in points if name == "loss_D"}) == [10, 20, 30, 40, 50, 60]


def test_a_run_that_does_not_stop_in_time_is_handed_back_without_it_and_fenced_out(
    settings, sessions, monkeypatch
) -> None:
    job_id = _job(sessions, state="running", worker=db.worker_name())
    monkeypatch.setattr("gantry.worker.run.db.connect", lambda url: sessions)
    stop, sent = Shutdown(), []
    handed = []

    def on_deadline() -> bool:
        handed.append(hand_back_late(job_id, settings=settings, send=lambda k, j: sent.append(j)))
        return handed[-1]

    with stop.running(stop_seconds=0.3, on_deadline=on_deadline):
        stop.request()
        time.sleep(2)  # a checkpoint upload that hangs
    assert handed == [True] and sent == [job_id]
    row = _row(sessions, job_id)
    assert (row.state, row.attempt, row.deaths) == ("queued", 2, 0)
    with db.session_scope(sessions) as s, pytest.raises(LeaseLost):
        db.heartbeat(s, job_id, step=5, token=1)  # the run's next write is refused
    # A run that ended in time is not touched.
    with stop.running(stop_seconds=0.3, on_deadline=lambda: pytest.fail("called")):
        pass
    time.sleep(0.5)


def test_sigterm_in_a_pool_process_is_a_stop_request_while_a_job_runs_and_death_when_idle() -> None:
    script = (
        "import os, signal, time\n"
        "from gantry.worker.lifecycle import SHUTDOWN, install_pool_handler\n"
        "install_pool_handler()\n"
        "with SHUTDOWN.running(stop_seconds=60, on_deadline=lambda: False):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"  # a second one (the group's and the main's) too
        "    print('stop requested', SHUTDOWN.requested(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"  # idle: the handler it had before (here: death)
        "time.sleep(5)\n"
        "print('still alive', flush=True)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout == "stop requested True\n", result.stderr
    assert result.returncode == -15


def test_a_sigterm_landing_while_the_first_is_handled_leaves_the_pool_process_responsive() -> None:
    """SIGTERM to a worker's process group reaches a pool process twice, the group's and the one its
    main process forwards: the second, landing inside the handling of the first, deadlocked the
    process when the handler took a lock. Here a second SIGTERM lands at each of the first lines
    the handling runs, nested ones included."""
    script = (
        "import os, signal, sys\n"
        "from gantry.worker.lifecycle import SHUTDOWN, install_pool_handler\n"
        "install_pool_handler()\n"
        "sent = []\n"
        "def tracer(frame, event, arg):\n"
        "    if event == 'line' and len(sent) < 20:\n"
        "        sent.append(frame.f_lineno)\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return tracer\n"
        "with SHUTDOWN.running(stop_seconds=60, on_deadline=lambda: False):\n"
        "    sys.settrace(tracer)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    sys.settrace(None)\n"
        "    print('stop requested', SHUTDOWN.requested(), len(sent), flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()  # SIGTERM would be taken by the stuck handler
        out, err = proc.communicate()
        raise AssertionError(f"the pool process hung in its SIGTERM handler:\n{err}") from None
    requested, sent = out.split()[2:]
    assert requested == "True" and int(sent) >= 2, (out, err)  # the second landed inside the first
    assert proc.returncode == 0


# --- gantry requeue -----------------------------------------------------------------------------


def test_requeue_needs_a_queue(settings) -> None:
    with pytest.raises(InvalidInput) as info:
        Service(settings).requeue()
    assert "GANTRY_BROKER_URL" in str(info.value)


def test_requeue_exits_4_when_the_broker_is_unreachable(settings, tmp_path) -> None:
    import os

    env = {**os.environ, "GANTRY_HOME": str(settings.home), "GANTRY_BROKER_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(
        [sys.executable, "-m", "gantry.api.cli", "requeue"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 4, result.stderr
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr
