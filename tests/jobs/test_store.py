from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput, JobNotFound, ServiceUnavailable
from gantry.migrations import head_revision


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
        assert [j.id for j in db.list_jobs(s, state="queued")] == [b]
        assert {j.id for j in db.list_jobs(s)} == {a, b}
        with pytest.raises(InvalidInput):
            db.list_jobs(s, state="done")
