"""KEDA's query (deploy/k8s/worker.yaml) against a real PostgreSQL at gantry's schema: it counts the jobs
that need a worker now, queued and running, so the autoscaler never wants fewer pods than the work in
progress. It runs through psycopg with a plain libpq URL, as KEDA's scaler connects."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from gantry.jobs import store as db
from tests.postgres import private_database
from tests.test_deploy import scaler_query

pytestmark = pytest.mark.integration


@pytest.fixture
def libpq_url() -> Iterator[str]:
    """A fresh database at gantry's schema (`gantry db upgrade`), dropped afterwards: its libpq URL."""
    with private_database("gantry_scaler") as url:
        yield url.replace("postgresql+psycopg://", "postgresql://", 1)


def _scaler_value(url: str) -> int:
    """What KEDA reads: the first column of the first row."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(scaler_query()).fetchone()
    assert row is not None
    return int(row[0])


def _add_jobs(url: str, state: str, count: int) -> list[str]:
    sessions = db.connect(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with db.session_scope(sessions) as s:
        ids = [
            db.create_job(s, kind="train", model="dcgan", spec={}, total_steps=100).id for _ in range(count)
        ]
        _set_state(s, ids, state)
    return ids


def _set_state(session, ids: list[str], state: str) -> None:
    values = {"state": state, "worker": "host:1" if state == "running" else None}
    session.execute(update(db.Job).where(db.Job.id.in_(ids)).values(**values))


def test_scaler_counts_queued_and_running_jobs_only(libpq_url: str) -> None:
    assert _scaler_value(libpq_url) == 0

    # Finished jobs need no worker: an idle fleet scales to zero.
    for state in db.TERMINAL:
        _add_jobs(libpq_url, state, 2)
    assert _scaler_value(libpq_url) == 0

    # Every worker busy (the Redis list is empty then): the running jobs still count.
    running = _add_jobs(libpq_url, "running", 3)
    assert _scaler_value(libpq_url) == 3
    _add_jobs(libpq_url, "queued", 2)
    assert _scaler_value(libpq_url) == 5
    assert set(db.STATES) == {"queued", "running", *db.TERMINAL}

    # A job handed back (a worker stopped, or its lease ran out) still counts; one that ends does not.
    sessions = db.connect(libpq_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with db.session_scope(sessions) as s:
        _set_state(s, running[:1], "queued")
    assert _scaler_value(libpq_url) == 5
    with db.session_scope(sessions) as s:
        _set_state(s, running[1:], "succeeded")
    assert _scaler_value(libpq_url) == 3
