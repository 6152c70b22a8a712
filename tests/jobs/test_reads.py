"""A job view's reads (gantry.jobs.reads) in one query each give what the row-by-row reads give:
the same latest metrics in the same order, artifacts and tags (and, for one job, its row). On SQLite
and on the machine's PostgreSQL (whose UNION needs every column's type to agree)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gantry.jobs import reads
from gantry.jobs import store as db
from tests.postgres import private_database


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, settings) -> Iterator[sessionmaker[Session]]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield db.connect(settings.database)
        return
    with private_database("gantry_reads") as url:
        factory = db.connect(url)
        yield factory
        factory.kw["bind"].dispose()


def _job(s: Session, **kw: object) -> str:
    return db.create_job(s, kind="train", model="dcgan", spec={}, total_steps=9, **kw).id  # type: ignore[arg-type]


def test_one_query_reads_what_the_row_by_row_reads_read(sessions: sessionmaker[Session]) -> None:
    with db.session_scope(sessions) as s:
        job, other, bare = _job(s, tags=["b", "a"]), _job(s, tags=["z"]), _job(s)
        # Out of step order, a tie at step 3 (the newer row wins), a name first seen late.
        db.record_metrics(s, job, step=3, values={"loss_G": 1.0, "loss_D": 2.0})
        db.record_metrics(s, job, step=1, values={"loss_D": 9.0, "fid": 50.0})
        db.record_metrics(s, job, step=3, values={"loss_G": 1.5})
        db.record_metrics(s, job, step=7, values={"images_per_sec": 120.0})
        db.record_metrics(s, other, step=2, values={"loss_D": 0.25})
        db.add_artifact(s, job, key="jobs/x/samples/b.png", kind="samples", size=20)
        db.add_artifact(s, job, key="jobs/x/grid.png", kind="grid", size=10)
    with sessions() as s:
        expected = db.latest_metrics(s, job)
        row, details = reads.job_and_details(s, job)  # the row comes in the same query
        assert (
            details.metrics
            == expected
            == {"loss_D": 2.0, "fid": 50.0, "loss_G": 1.5, "images_per_sec": 120.0}
        )
        assert list(details.metrics) == list(expected)  # the same order: each name's first point
        assert details.artifacts == [("jobs/x/grid.png", "grid", 10), ("jobs/x/samples/b.png", "samples", 20)]
        assert details.tags == ["a", "b"]
        assert reads.job_and_details(s, bare)[1] == reads.JobDetails()
        assert row is not None
        assert (row.id, row.kind, row.model, row.state, row.total_steps, row.spec) == (
            job, "train", "dcgan", "queued", 9, {},
        )  # fmt: skip
        assert reads.job_and_details(s, "no-such-job") == (None, reads.JobDetails())
        assert reads.latest_metrics_of(s, [job, other, bare]) == {job: expected, other: {"loss_D": 0.25}}
        assert reads.latest_metrics_of(s, []) == {}


def test_an_object_recorded_again_is_one_artifact_with_its_new_size(sessions: sessionmaker[Session]) -> None:
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={}, total_steps=1).id
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="w1:1", lease_seconds=60)
    with db.session_scope(sessions) as s:
        db.add_artifacts(s, job_id, [("jobs/x/a.png", "samples", 1), ("jobs/x/b.png", "samples", 2)], token=1)
    with db.session_scope(sessions) as s:  # a later write of a.png (a warnings file rewritten, say)
        db.add_artifacts(s, job_id, [("jobs/x/a.png", "warnings", 7)], token=1)
    with db.session_scope(sessions) as s:
        rows = [(a.key, a.kind, a.bytes) for a in db.list_artifacts(s, job_id)]
    assert rows == [("jobs/x/a.png", "warnings", 7), ("jobs/x/b.png", "samples", 2)]
