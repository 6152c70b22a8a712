"""A worker's lifecycle with real services and real worker processes: the reaper requeues the job of
a worker whose main process was SIGKILLed and sends lost messages again, under a plain `celery
worker`; one reaper at a time on PostgreSQL; `gantry requeue` rebuilds the queue from the store;
SIGTERM to a worker checkpoints its job at that step and hands it back, and another worker finishes
it from there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.queue import QUEUE, enqueue, make_celery
from gantry.jobs.requeue import requeue_pass
from gantry.jobs.settings import Settings
from tests.integration.conftest import Worker, each_step_once, gantry, job_rows, s3, status, submit, wait_for

pytestmark = pytest.mark.integration

TINY = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--set", "ngf=8", "--set", "ndf=8"]


class CeleryWorker(Worker):
    """A plain `celery worker` process (not `gantry worker`, which also requeues stale jobs when it
    starts): whatever it does beyond running tasks comes from gantry.worker.app itself."""

    def __init__(self, env: dict[str, str], log_path: Path, name: str) -> None:
        command = [sys.executable, "-m", "celery", "-A", "gantry.worker.app", "worker", "-Q", QUEUE]
        command += [
            "--concurrency",
            "1",
            "--pool",
            "prefork",
            "--loglevel",
            "INFO",
            "--hostname",
            f"{name}@%h",
        ]
        self._start(command, env, log_path)


def _flush(env: dict[str, str]) -> None:
    """Every message gone: Redis restarted without persistence (this session's own Redis DB)."""
    import redis

    redis.Redis.from_url(env["GANTRY_BROKER_URL"]).flushdb()


def _on_queue(env: dict[str, str]) -> int:
    import redis

    return int(redis.Redis.from_url(env["GANTRY_BROKER_URL"]).llen(QUEUE))


def _manifest_step(env, job_id: str) -> int:
    body = s3(env).get_object(Bucket="gantry-it", Key=f"runs/{keys.manifest_key(job_id)}")["Body"].read()
    return keys.Manifest.parse(body).step


def _sessions(env):
    return db.connect(env["GANTRY_DATABASE_URL"])


def test_a_sigkilled_workers_job_is_requeued_by_the_reaper_of_a_plain_celery_worker(
    service_env, tmp_path
) -> None:
    env = {**service_env, "GANTRY_LEASE_SECONDS": "15"}
    _flush(env)
    # Both up before the job starts: whichever takes it dies, and what the other does next its
    # reaper does periodically (starting it after the job had, a fast host finished the job first).
    workers = [CeleryWorker(env, tmp_path / f"{name}.log", name) for name in ("first", "second")]
    try:
        job_id = submit(env, "train", "dcgan", *TINY, "--steps", "600", "--checkpoint-every", "100")
        wait_for(env, job_id, ("running",))
        holder = _holder(env, job_id, workers)
        (survivor,) = [w for w in workers if w is not holder]
        wait_for(env, job_id, ("running",), training=lambda j: j["progress"]["step"] >= 40)
        os.kill(holder.proc.pid, signal.SIGKILL)  # the main process: its pool process dies with it
        holder.exited(30)
        # The job's message stays unacknowledged in Redis for the visibility timeout (an hour): only
        # the reaper brings the job back.
        job = wait_for(env, job_id, ("succeeded",), timeout=180)
    finally:
        for w in workers:
            w.stop()
    assert job["attempt"] == 2 and job["progress"]["step"] == 600
    assert each_step_once(env, job_id) == list(range(10, 601, 10))
    assert f"reaper: job {job_id}: its holder is gone or its lease ran out" in survivor.log_path.read_text()


def _holder(env: dict[str, str], job_id: str, workers: list[CeleryWorker]) -> CeleryWorker:
    """Which of `workers` runs the job: the one whose pool process (`host:pid` on the row) it forked."""
    with job_rows(env["GANTRY_DATABASE_URL"])() as s:
        pid = int(db.get_job(s, job_id).worker.rsplit(":", 1)[1])
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    (holder,) = [w for w in workers if w.proc.pid == parent]
    return holder


def test_a_queued_job_whose_message_was_lost_is_sent_again(service_env, tmp_path) -> None:
    env = {**service_env, "GANTRY_REQUEUE_SECONDS": "2"}
    _flush(env)
    job_id = submit(env, "train", "dcgan", *TINY, "--steps", "20", "--checkpoint-every", "20")
    _flush(env)  # Redis restarted without persistence before any worker took it
    assert _on_queue(env) == 0
    worker = CeleryWorker(env, tmp_path / "worker.log", "lonely")
    try:
        job = wait_for(env, job_id, ("succeeded",), timeout=180)
    finally:
        worker.stop()
    assert job["attempt"] == 1
    assert f"reaper: job {job_id}: queued with no message on the queue; sent again" in (
        worker.log_path.read_text()
    )


TAKE_AND_DIE = """
import os, signal, sys
from gantry.jobs.queue import QUEUE, enqueue, make_celery
from gantry.jobs.settings import Settings
app = make_celery(Settings(broker_url=sys.argv[1]))
with app.connection_for_read() as conn:
    message = conn.SimpleQueue(QUEUE).get(timeout=10)  # taken, not acknowledged
    print(message.delivery_tag, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # dead before it could claim the job
"""


def test_a_message_taken_by_a_worker_that_died_before_claiming_is_sent_again(service_env) -> None:
    env = service_env
    _flush(env)
    import redis

    client = redis.Redis.from_url(env["GANTRY_BROKER_URL"])
    sessions = _sessions(env)
    app = make_celery(Settings(broker_url=env["GANTRY_BROKER_URL"], database_url=env["GANTRY_DATABASE_URL"]))
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={}, total_steps=10).id
    enqueue(app, "train", job_id)
    try:
        taker = subprocess.run(
            [sys.executable, "-c", TAKE_AND_DIE, env["GANTRY_BROKER_URL"]], capture_output=True
        )
        assert taker.returncode == -signal.SIGKILL and taker.stdout.strip(), taker.stderr
        assert _on_queue(env) == 0 and client.hlen("unacked") == 1  # Redis would restore it in an hour
        # Taken moments ago: its taker may still be about to claim it.
        done = requeue_pass(sessions, app, lease_seconds=60, resend_after=300, unclaimed_after=60)
        assert done.sent == [] and _on_queue(env) == 0
        time.sleep(1.5)
        done = requeue_pass(sessions, app, lease_seconds=60, resend_after=300, unclaimed_after=1)
        assert done.unclaimed == [job_id] and done.sent == [job_id]
        assert _on_queue(env) == 1
        # Sent once: the new message waits on the queue, and the dead taker's copy is not sent again.
        time.sleep(1.5)
        done = requeue_pass(sessions, app, lease_seconds=60, resend_after=300, unclaimed_after=1)
        assert done.sent == [] and _on_queue(env) == 1
    finally:
        gantry(env, "cancel", job_id, check=False)
        _flush(env)


def test_a_running_worker_refuses_jobs_once_a_newer_gantry_upgraded_the_schema(service_env, worker) -> None:
    """Between `gantry db upgrade` of a new version and its workers' rollout, a worker of the old
    version (its connections made long before) takes no job: it sends each back to the queue, and
    a worker that fits the schema (here: the same one, the revision put back) runs it."""
    env = service_env
    first = submit(env, "train", "gan", "--dataset", "ring8", "--steps", "5")
    wait_for(env, first, ("succeeded",), timeout=120)  # the pool process has connected
    sessions = _sessions(env)
    with db.session_scope(sessions) as s:
        spec = s.get(db.Job, first).spec
    revision = text("UPDATE alembic_version SET version_num = :v")
    app = make_celery(Settings(broker_url=env["GANTRY_BROKER_URL"], database_url=env["GANTRY_DATABASE_URL"]))
    try:
        with db.session_scope(sessions) as s:
            s.execute(revision, {"v": f"{int(db.SCHEMA_REVISION) + 1:04d}"})  # a newer gantry's upgrade
            job_id = db.create_job(s, kind="train", model="gan", spec=spec, total_steps=5).id
        enqueue(app, "train", job_id)
        deadline = time.monotonic() + 60
        while "refused and sent back to the queue" not in worker.log_path.read_text():
            assert time.monotonic() < deadline, worker.log_path.read_text()[-5000:]
            time.sleep(0.2)
        log = worker.log_path.read_text()
        assert f"newer than this gantry's ({db.SCHEMA_REVISION})" in log
        time.sleep(3)  # its retries meanwhile are refused too
        with db.session_scope(sessions) as s:
            assert s.get(db.Job, job_id).state == "queued"
    finally:
        with db.session_scope(sessions) as s:
            s.execute(revision, {"v": db.SCHEMA_REVISION})
    done = wait_for(env, job_id, ("succeeded",), timeout=120)  # a later retry fits the schema
    assert done["attempt"] == 1


def test_one_reaper_at_a_time_on_postgresql(service_env) -> None:
    env = {**service_env, "GANTRY_BROKER_URL": service_env["GANTRY_BROKER_URL"]}
    _flush(env)
    sessions = _sessions(env)
    app = make_celery(Settings(broker_url=env["GANTRY_BROKER_URL"], database_url=env["GANTRY_DATABASE_URL"]))
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={}, total_steps=10).id
        db.claim_job(s, job_id, worker="gone-host:1", lease_seconds=60)
        s.execute(
            update(db.Job).where(db.Job.id == job_id).values(heartbeat_at=db.utcnow() - timedelta(hours=1))
        )
    try:
        with db.session_scope(sessions) as other:
            assert db.try_reaper_lock(other)  # another worker's reaper, mid-pass
            done = requeue_pass(sessions, app, lease_seconds=60, resend_after=300)
            assert done.skipped and done.stale == [] and done.sent == []
        # Two reapers at once: one requeues the job and sends its message, the other does nothing.
        results = []
        passes = [
            threading.Thread(
                target=lambda: results.append(requeue_pass(sessions, app, lease_seconds=60, resend_after=300))
            )
            for _ in range(2)
        ]
        for t in passes:
            t.start()
        for t in passes:
            t.join(60)
        assert sorted(len(r.stale) for r in results) == [0, 1]
        with db.session_scope(sessions) as s:
            job = db.get_job(s, job_id)
            assert (job.state, job.attempt, job.deaths) == ("queued", 2, 1)
        assert _on_queue(env) == 1
    finally:
        gantry(env, "cancel", job_id)
        _flush(env)


def test_gantry_requeue_rebuilds_the_queue_from_the_store(service_env) -> None:
    env = service_env
    _flush(env)
    first = submit(env, "train", "dcgan", *TINY, "--steps", "20")
    second = submit(env, "train", "dcgan", *TINY, "--steps", "20")
    try:
        _flush(env)  # both messages lost
        result = gantry(env, "requeue")
        assert (
            f"job {first}: message sent" in result.stdout
            and "2 sent; 0 already on the queue" in result.stdout
        )
        assert _on_queue(env) == 2
        assert "0 sent; 2 already on the queue" in gantry(env, "requeue").stdout  # nothing sent twice
        # The second job's worker died long ago, its row left `running`: --stale queues it again.
        with db.session_scope(_sessions(env)) as s:
            s.execute(
                update(db.Job)
                .where(db.Job.id == second)
                .values(state="running", worker="gone-host:1", heartbeat_at=db.utcnow() - timedelta(hours=1))
            )
        _flush(env)
        done = json.loads(gantry(env, "requeue", "--stale", "--json").stdout)
        assert done["stale"] == [second] and sorted(done["sent"]) == sorted([first, second])
        assert (status(env, second)["state"], status(env, second)["attempt"]) == ("queued", 2)
        assert _on_queue(env) == 2
    finally:
        for job_id in (first, second):
            gantry(env, "cancel", job_id, check=False)
        _flush(env)


@pytest.mark.parametrize("to", ["main process", "process group"])
def test_sigterm_checkpoints_the_running_job_and_another_worker_finishes_it(
    service_env, tmp_path, to
) -> None:
    env = {**service_env, "GANTRY_STOP_SECONDS": "30"}
    _flush(env)
    first = Worker(env, tmp_path / "first.log")
    second = None
    try:
        job_id = submit(env, "train", "dcgan", *TINY, "--steps", "600", "--checkpoint-every", "500")
        wait_for(env, job_id, ("running",), training=lambda j: j["progress"]["step"] >= 60)
        if to == "main process":
            os.kill(first.proc.pid, signal.SIGTERM)  # what Kubernetes sends the container's main process
        else:
            os.killpg(first.proc.pid, signal.SIGTERM)  # systemd, `kill -- -PGID`: the pool process too
        first.exited(60)  # within GANTRY_STOP_SECONDS, not after the whole job
        job = status(env, job_id)
        stopped_at = job["progress"]["step"]
        assert (job["state"], job["attempt"]) == ("queued", 1)  # handed back: the same attempt
        assert 60 <= stopped_at < 500 and _manifest_step(env, job_id) == stopped_at  # checkpointed there
        assert _on_queue(env) == 1  # its message sent again
        second = Worker(env, tmp_path / "second.log")
        job = wait_for(env, job_id, ("succeeded",), timeout=240)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert (job["attempt"], job["progress"]["step"]) == (1, 600)
    assert f"job {job_id}: resuming from step {stopped_at}" in second.log_path.read_text()
    assert f"job {job_id}: handed back" in first.log_path.read_text()
    # Every tenth step once, and the stop step, whose partial window was reported at the stop.
    assert each_step_once(env, job_id) == sorted({*range(10, 601, 10), stopped_at})


def test_sigusr2_writes_the_stacks_of_a_workers_processes_to_its_log_and_the_job_goes_on(
    service_env, tmp_path
) -> None:
    _flush(service_env)
    worker = Worker(service_env, tmp_path / "worker.log")
    try:
        job_id = submit(service_env, "train", "dcgan", *TINY, "--steps", "300")
        wait_for(service_env, job_id, ("running",), training=lambda j: j["progress"]["step"] >= 20)
        os.killpg(worker.proc.pid, signal.SIGUSR2)  # `kill -USR2 -- -PGID`: the main and pool processes
        deadline = time.monotonic() + 30
        while True:
            text = worker.log_path.read_text()
            stacks = text.count("(most recent call first):")
            # The pool process's main thread is training; the main process's is in Celery's loop.
            if stacks >= 2 and "gantry/worker/gan/loop.py" in text and "celery/worker/worker.py" in text:
                break
            assert time.monotonic() < deadline, f"no stacks in the log:\n{text[-5000:]}"
            time.sleep(0.5)
        job = wait_for(service_env, job_id, ("succeeded",), timeout=240)
        assert worker.proc.poll() is None  # the stacks cost the worker nothing
    finally:
        worker.stop()
    assert (job["attempt"], job["progress"]["step"]) == (1, 300)
