from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update

from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput, JobNotFound, LeaseLost, ServiceUnavailable, WrongSchema
from gantry.migrations import head_revision
from tests.postgres import private_database


@pytest.fixture
def sessions(settings):
    return db.connect(settings.database)


def _new(sessions, **kw):
    with db.session_scope(sessions) as s:
        return db.create_job(s, kind="train", model="dcgan", spec={"steps": 5}, total_steps=5, **kw).id


def test_code_expects_the_alembic_head() -> None:
    assert head_revision() == db.SCHEMA_REVISION


def test_missing_schema_names_the_command(tmp_path) -> None:
    with pytest.raises(ServiceUnavailable) as info:
        db.connect(f"sqlite:///{tmp_path}/empty.db")
    assert "gantry db upgrade" in str(info.value)
    assert not (tmp_path / "empty.db").exists()  # nothing created behind Alembic's back


def test_a_store_at_another_revision_is_refused_saying_which_gantry_to_run(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    sessions = db.connect(url, create_sqlite=True)
    for found, hint in [("0001", "Run `gantry db upgrade`"), ("9999", "a newer gantry upgraded it")]:
        with db.session_scope(sessions) as s:
            s.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": found})
        with pytest.raises(WrongSchema, match=f"revision {found}") as info:
            db.connect(url)
        assert hint in str(info.value)
        # A process connected before the upgrade finds it out at its next check (a worker's claim).
        with db.session_scope(sessions) as s, pytest.raises(WrongSchema, match=hint):
            db.check_schema(s)


def test_a_new_sqlite_store_gets_its_schema_when_asked(tmp_path) -> None:
    sessions = db.connect(f"sqlite:///{tmp_path}/new.db", create_sqlite=True)  # what the service asks
    with db.session_scope(sessions) as s:
        assert db.count_jobs(s) == 0
    engine = db.make_engine(f"sqlite:///{tmp_path}/new.db")
    assert db.schema_revision(engine) == db.SCHEMA_REVISION  # through Alembic: stamped at the head


def test_postgresql_is_never_migrated_behind_the_users_back() -> None:
    with pytest.raises(ServiceUnavailable) as info:  # an unreachable server: named, nothing attempted
        db.connect("postgresql+psycopg://gantry:secret@127.0.0.1:1/gantry", create_sqlite=True)
    assert "127.0.0.1:1" in str(info.value) and "secret" not in str(info.value)


def test_job_lifecycle(sessions) -> None:
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker=db.worker_name(), lease_seconds=60)
        assert job is not None and job.state == "running" and job.attempt == 1
    # A second delivery while the first worker is alive is not run twice: it waits.
    with db.session_scope(sessions) as s, pytest.raises(db.JobBusy):
        db.claim_job(s, job_id, worker="elsewhere:1", lease_seconds=60)
    with db.session_scope(sessions) as s:
        db.record_metrics(s, job_id, step=1, values={"loss_D": 1.5, "loss_G": 0.5})
        db.record_metrics(s, job_id, step=2, values={"loss_D": 1.0})
        assert db.heartbeat(s, job_id, step=2) is False
        db.add_artifact(s, job_id, key="jobs/x/a.png", kind="samples", size=10)
        db.add_artifact(s, job_id, key="jobs/x/a.png", kind="samples", size=12)
    with db.session_scope(sessions) as s:
        assert db.latest_metrics(s, job_id) == {"loss_D": 1.0, "loss_G": 0.5}
        assert [a.bytes for a in db.list_artifacts(s, job_id)] == [12]
        db.finish_job(s, job_id, state="succeeded")
    with db.session_scope(sessions) as s:
        job = db.get_job(s, job_id)
        assert job.state == "succeeded" and job.step == 2 and job.finished_at is not None
        assert db.claim_job(s, job_id, worker="w3", lease_seconds=60) is None


def test_dead_worker_job_is_taken_over_with_next_attempt(sessions) -> None:
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="w1", lease_seconds=60)
        s.execute(update(db.Job).values(heartbeat_at=db.utcnow() - timedelta(minutes=5)))
    with db.session_scope(sessions) as s:
        assert db.requeue_stale(s, lease_seconds=60) == [job_id]
        assert db.get_job(s, job_id).state == "queued"
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker="w2", lease_seconds=60)
        assert job is not None and job.attempt == 2 and job.worker == "w2"


def test_job_of_a_dead_process_on_this_host_is_taken_over_at_once(sessions) -> None:
    import subprocess
    import sys

    job_id = _new(sessions)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = db.worker_name().rpartition(":")[0]
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker=f"{host}:{gone.stdout.strip()}", lease_seconds=600)
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker=db.worker_name(), lease_seconds=600)
        assert job is not None and job.attempt == 2


def test_cancel(sessions) -> None:
    queued, running = _new(sessions), _new(sessions)
    with db.session_scope(sessions) as s:
        db.claim_job(s, running, worker="w", lease_seconds=60)
    with db.session_scope(sessions) as s:
        assert db.request_cancel(s, queued).state == "cancelled"
        assert db.request_cancel(s, running).state == "running"
        assert db.heartbeat(s, running) is True
    with db.session_scope(sessions) as s:
        with pytest.raises(InvalidInput):
            db.request_cancel(s, queued)
        with pytest.raises(JobNotFound):
            db.request_cancel(s, "nope")
        assert db.claim_job(s, queued, worker="w", lease_seconds=60) is None


def test_list_filters_by_state(sessions) -> None:
    a, b = _new(sessions), _new(sessions)
    with db.session_scope(sessions) as s:
        db.request_cancel(s, a)
    with db.session_scope(sessions) as s:
        assert [j.id for j in db.list_jobs(s, state="queued")[0]] == [b]
        assert {j.id for j in db.list_jobs(s)[0]} == {a, b}
        with pytest.raises(InvalidInput):
            db.list_jobs(s, state="done")


# --- fencing: the lease token, deaths and the attempt limit ----------------------------------


def _stale(sessions, job_id: str) -> None:
    with db.session_scope(sessions) as s:
        s.execute(
            update(db.Job).where(db.Job.id == job_id).values(heartbeat_at=db.utcnow() - timedelta(hours=1))
        )


def test_a_stale_attempts_writes_are_refused_after_a_takeover(sessions) -> None:
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        first = db.claim_job(s, job_id, worker="w1:1", lease_seconds=60)
        assert first is not None and first.attempt == 1
    _stale(sessions, job_id)  # w1 paused past its lease (SIGSTOP, a long GC, a partition)
    with db.session_scope(sessions) as s:
        second = db.claim_job(s, job_id, worker="w2:1", lease_seconds=60)
        assert second is not None and second.attempt == 2
    # w1 wakes: every write it makes for the job is refused, and nothing of it lands.
    refused = [
        lambda s: db.heartbeat(s, job_id, step=7, token=1),
        lambda s: db.check_lease(s, job_id, token=1),
        lambda s: db.record_metrics(s, job_id, step=7, values={"loss_D": 9.0}, token=1),
        lambda s: db.add_artifact(s, job_id, key="jobs/x/late.png", kind="samples", size=1, token=1),
        lambda s: db.clear_metrics_after(s, job_id, step=0, token=1),
        lambda s: db.finish_job(s, job_id, state="succeeded", token=1),
    ]
    for write in refused:
        with pytest.raises(LeaseLost), db.session_scope(sessions) as s:
            write(s)
    with db.session_scope(sessions) as s:
        job = db.get_job(s, job_id)
        assert (job.state, job.step, job.worker, job.attempt) == ("running", 0, "w2:1", 2)
        assert db.metric_history(s, job_id) == [] and db.list_artifacts(s, job_id) == []
    # The holder's writes go through.
    with db.session_scope(sessions) as s:
        db.record_metrics(s, job_id, step=3, values={"loss_D": 1.0}, token=2)
        assert db.heartbeat(s, job_id, step=3, token=2) is False
        db.finish_job(s, job_id, state="succeeded", token=2)
    with db.session_scope(sessions) as s:
        assert db.get_job(s, job_id).state == "succeeded"
        # A finished job takes no more writes, not even from its last holder.
        with pytest.raises(LeaseLost):
            db.heartbeat(s, job_id, token=2)


def test_a_fence_stands_for_its_own_transaction_only(sessions) -> None:
    """The writes of one transaction share its first fence (the row stays locked to its end); the
    next transaction, or one after the job ended in it, proves the lease again."""
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="w1:1", lease_seconds=60)
    s = sessions()
    try:
        assert db.fenced(s, job_id, token=1) is None
        assert db.check_lease(s, job_id, token=1) is False
        assert db.fenced(s, job_id, token=1) is False and db.fenced(s, job_id, token=2) is None
        s.commit()
        assert db.fenced(s, job_id, token=1) is None  # a new transaction
        with db.session_scope(sessions) as other:  # taken over meanwhile
            other.execute(update(db.Job).where(db.Job.id == job_id).values(attempt=2))
        with pytest.raises(LeaseLost):
            db.record_metrics(s, job_id, step=1, values={"loss_D": 1.0}, token=1)
        s.rollback()
        db.finish_job(s, job_id, state="succeeded", token=2)
        with pytest.raises(LeaseLost):  # ended by this very transaction: fenced no more
            db.check_lease(s, job_id, token=2)
    finally:
        s.close()


def test_a_retry_of_the_same_attempt_goes_on_at_once(sessions) -> None:
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="w1:1", lease_seconds=600)
    # The task handed the job back (S3 was out) and its retry, carrying token 1, arrives anywhere:
    # the same attempt goes on, without waiting out its own lease and without counting a death.
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker="w2:7", lease_seconds=600, token=1)
        assert job is not None and (job.attempt, job.deaths, job.worker) == (1, 0, "w2:7")
    # A redelivery to the holding process itself: its earlier run has ended (a process runs its
    # jobs one at a time), so it goes on at once; a new token fences anything left of that run.
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker="w2:7", lease_seconds=600)
        assert job is not None and (job.attempt, job.deaths) == (2, 0)
    # A stale token is no pass: another live holder still makes the claim wait.
    with db.session_scope(sessions) as s, pytest.raises(db.JobBusy):
        db.claim_job(s, job_id, worker="w3:1", lease_seconds=600, token=1)


def test_deaths_are_counted_and_end_the_job_at_max_attempts(sessions) -> None:
    job_id = _new(sessions)
    for attempt in range(1, 4):
        with db.session_scope(sessions) as s:
            job = db.claim_job(s, job_id, worker=f"w{attempt}:1", lease_seconds=60, max_attempts=4)
            assert job is not None and (job.attempt, job.deaths) == (attempt, attempt - 1)
        _stale(sessions, job_id)  # its worker was OOM-killed
    with db.session_scope(sessions) as s:
        assert db.requeue_stale(s, lease_seconds=60) == [job_id]  # the requeue counts one too
        assert db.get_job(s, job_id).deaths == 3
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker="w4:1", lease_seconds=60, max_attempts=4)
        assert job is not None and job.attempt == 4
    _stale(sessions, job_id)
    with db.session_scope(sessions) as s:
        assert db.claim_job(s, job_id, worker="w5:1", lease_seconds=60, max_attempts=4) is None
    with db.session_scope(sessions) as s:
        job = db.get_job(s, job_id)
        assert job.state == "failed" and job.finished_at is not None and job.deaths == 4
        assert "its worker died 4 times (out of memory?" in (job.error or "")


def test_a_workers_metric_point_replaces_its_step_and_a_resume_clears_points_past_it(sessions) -> None:
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="w1:1", lease_seconds=60)
    with db.session_scope(sessions) as s:
        for step in (10, 20, 30):
            db.record_metrics(s, job_id, step=step, values={"loss_D": float(step)}, token=1)
        db.record_metrics(s, job_id, step=30, values={"loss_D": 31.0}, token=1)  # a retried write
    _stale(sessions, job_id)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="w2:1", lease_seconds=60)
    with db.session_scope(sessions) as s:
        assert db.clear_metrics_after(s, job_id, step=10, token=2) == 2  # resumed from step 10
    with db.session_scope(sessions) as s:
        assert [(m.step, m.value) for m in db.metric_history(s, job_id)] == [(10, 10.0)]


def test_an_existing_database_upgrades_to_the_deaths_column(tmp_path) -> None:
    from sqlalchemy import text

    from gantry.migrations import upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0001")
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, model, state, spec, attempt, step, total_steps, "
                "cancel_requested, created_at) VALUES ('old', 'train', 'gan', 'running', '{}', 3, 5, 10, 0, "
                "'2025-01-01 00:00:00')"
            )
        )
    upgrade(url)
    sessions = db.connect(url)
    with db.session_scope(sessions) as s:
        job = db.get_job(s, "old")
        assert (job.attempt, job.deaths, job.step) == (3, 0, 5)


def test_an_existing_database_upgrades_to_the_enqueued_at_column(tmp_path) -> None:
    from sqlalchemy import text

    from gantry.migrations import upgrade

    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0002")
    with db.make_engine(url).begin() as conn:
        conn.execute(
            text(
                "INSERT INTO jobs (id, kind, model, state, spec, attempt, deaths, step, total_steps, "
                "cancel_requested, created_at) VALUES ('old', 'train', 'gan', 'queued', '{}', 1, 0, 0, 10, 0, "
                "'2025-01-01 00:00:00')"
            )
        )
    upgrade(url)
    with db.session_scope(db.connect(url)) as s:
        assert db.get_job(s, "old").enqueued_at is None
        # An old row's message counts as sent when it was created: long ago, so it is looked at.
        assert db.unsent_jobs(s, older_than=300) == [("old", "train")]


# --- the reaper's writes ------------------------------------------------------------------------


def _claimed(sessions, worker: str = "w1:1", *, age: float = 0) -> str:
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker=worker, lease_seconds=60)
        s.execute(
            update(db.Job)
            .where(db.Job.id == job_id)
            .values(heartbeat_at=db.utcnow() - timedelta(seconds=age))
        )
    return job_id


def test_a_stale_job_is_requeued_once_and_a_second_pass_finds_nothing(sessions) -> None:
    stale, fresh = _claimed(sessions, age=300), _claimed(sessions, "w2:1")
    with db.session_scope(sessions) as first:
        assert db.requeue_stale(first, lease_seconds=60) == [stale]
    with db.session_scope(sessions) as second:
        assert db.requeue_stale(second, lease_seconds=60) == []
    with db.session_scope(sessions) as s:
        job = db.get_job(s, stale)
        assert (job.state, job.attempt, job.deaths, job.worker) == ("queued", 2, 1, None)
        assert job.enqueued_at is not None  # its message is sent by the reaper right after
        assert db.get_job(s, fresh).state == "running"


def test_a_holder_gone_from_this_host_is_requeued_at_once(sessions) -> None:
    import os
    import socket
    import subprocess
    import sys

    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    gone = _claimed(sessions, f"{host}:{int(dead.stdout)}")  # a fresh heartbeat, but its process is gone
    alive = _claimed(sessions, f"{host}:{os.getpid()}")
    elsewhere = _claimed(sessions, "another-host:1")
    with db.session_scope(sessions) as s:
        assert db.requeue_stale(s, lease_seconds=None, host=host) == [gone]
    with db.session_scope(sessions) as s:
        assert [db.get_job(s, j).state for j in (gone, alive, elsewhere)] == ["queued", "running", "running"]


def test_a_handed_back_job_is_queued_as_the_same_attempt_and_not_a_death(sessions) -> None:
    job_id = _claimed(sessions)
    with db.session_scope(sessions) as s, pytest.raises(LeaseLost):
        db.hand_back(s, job_id, token=2)  # not the holder's token
    with db.session_scope(sessions) as s:
        assert db.hand_back(s, job_id, token=1) == "train"
    with db.session_scope(sessions) as s:
        job = db.get_job(s, job_id)
        assert (job.state, job.attempt, job.deaths, job.worker) == ("queued", 1, 0, None)
    with db.session_scope(sessions) as s:  # the next worker goes on as attempt 1
        job = db.claim_job(s, job_id, worker="w2:1", lease_seconds=60)
        assert job is not None and (job.state, job.attempt) == ("running", 1)


def test_a_late_hand_back_fences_out_the_run_that_is_still_going(sessions) -> None:
    job_id = _claimed(sessions, "w1:7")
    with db.session_scope(sessions) as s, pytest.raises(LeaseLost):
        db.hand_back(s, job_id, holder="w1:8", fence_out=True)  # not this process's job
    with db.session_scope(sessions) as s:
        db.hand_back(s, job_id, holder="w1:7", fence_out=True)
    with db.session_scope(sessions) as s:
        job = db.get_job(s, job_id)
        assert (job.state, job.attempt, job.deaths) == ("queued", 2, 0)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="w2:1", lease_seconds=60)
    with db.session_scope(sessions) as s, pytest.raises(LeaseLost):
        db.heartbeat(s, job_id, step=9, token=1)  # the run that went on past the deadline


def test_a_queued_jobs_message_is_sent_again_once_after_the_requeue_time(sessions) -> None:
    young, old = _new(sessions), _new(sessions)
    with db.session_scope(sessions) as s:
        s.execute(
            update(db.Job).where(db.Job.id == old).values(enqueued_at=db.utcnow() - timedelta(seconds=400))
        )
        assert db.unsent_jobs(s, older_than=300) == [(old, "train")]
        assert db.mark_sent(s, old, older_than=300) is True
    with db.session_scope(sessions) as s:  # another reaper, a moment later: nothing to send
        assert db.mark_sent(s, old, older_than=300) is False
        assert db.unsent_jobs(s, older_than=300) == []
        assert [job_id for job_id, _ in db.unsent_jobs(s, older_than=0)] == [young, old]


def test_the_reaper_lock_is_always_free_on_sqlite(sessions) -> None:
    with db.session_scope(sessions) as s:
        assert db.try_reaper_lock(s) is True


def test_a_transaction_left_idle_is_ended_by_postgresql_and_the_reaper_takes_its_job(monkeypatch) -> None:
    """A worker paused inside a transaction (SIGSTOP, a frozen VM) holds its job's row lock. A
    requeue pass does not wait on it (a reaper's, or a starting worker's, which would sit silent
    for as long): it leaves that job for a later pass. PostgreSQL ends the paused session after
    IDLE_IN_TRANSACTION_SECONDS; the next pass takes the job, and the paused writer's next statement
    fails as a database outage (retried on a new connection, where the fence refuses it)."""
    import time

    from sqlalchemy import text

    from gantry.jobs.errors import transient_service

    monkeypatch.setattr(db, "IDLE_IN_TRANSACTION_SECONDS", 3.0)
    with private_database("gantry_store") as url:
        paused, reaper = db.connect(url), db.connect(url)
        job_id, other = _claimed(paused, "w1:1"), _claimed(paused, "w2:1")
        stuck = paused()
        db.heartbeat(stuck, job_id, step=3, token=1)  # its row locked; then the process stops
        start = time.monotonic()
        with db.session_scope(reaper) as s:
            s.execute(text("SET LOCAL lock_timeout = '20s'"))  # a failure, not a hang, without the fix
            assert db.requeue_stale(s, lease_seconds=0) == [other]  # the free one; the held one waits
        assert time.monotonic() - start < 2
        while time.monotonic() - start < 3.5:  # PostgreSQL ends the paused session
            time.sleep(0.1)
        with db.session_scope(reaper) as s:
            assert db.requeue_stale(s, lease_seconds=0) == [job_id]
        with pytest.raises(Exception) as woke:
            db.heartbeat(stuck, job_id, step=4, token=1)
            stuck.commit()
        assert transient_service(woke.value) == "database"
        stuck.close()
        with db.session_scope(reaper) as s:
            assert (db.get_job(s, job_id).state, db.get_job(s, job_id).attempt) == ("queued", 2)
        for factory in (paused, reaper):
            factory.kw["bind"].dispose()
