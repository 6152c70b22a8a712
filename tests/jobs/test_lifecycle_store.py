"""The store's side of the job lifecycle: names and tags, `list`'s filters and cursor, the job's
log (fenced and bounded), and deleting a job's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from gantry.jobs import joblogs
from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput, LeaseLost


@pytest.fixture
def sessions(settings):
    return db.connect(settings.database)


def _new(sessions, *, kind="train", model="dcgan", created=None, **kw) -> str:
    with db.session_scope(sessions) as s:
        job = db.create_job(s, kind=kind, model=model, spec={"steps": 5}, total_steps=5, **kw)
        if created is not None:
            job.created_at = created
        return job.id


def _ids(sessions, **filters) -> list[str]:
    with db.session_scope(sessions) as s:
        jobs, _ = db.list_jobs(s, **filters)
        return [j.id for j in jobs]


def test_names_and_tags_are_kept_and_checked(sessions) -> None:
    job_id = _new(sessions, name="  digits baseline  ", tags=["exp:7", "lr-2e-4", "exp:7"])
    with db.session_scope(sessions) as s:
        job = db.get_job(s, job_id)
        assert job.name == "digits baseline" and job.tags == ["exp:7", "lr-2e-4"]
    for bad, field in (("a b", "tag"), ("x" * 65, "tag"), ("", "tag")):
        with pytest.raises(InvalidInput) as info:
            db.check_tags([bad])
        assert info.value.field == field and "A-Z" in str(info.value)
    with pytest.raises(InvalidInput, match="at most 20 tags"):
        db.check_tags([f"t{i}" for i in range(21)])
    with pytest.raises(InvalidInput) as info:
        db.check_name("x" * 201)
    assert info.value.field == "name"


def test_list_filters_by_kind_model_tag_parent_owner_and_date(sessions) -> None:
    day = datetime(2026, 3, 10, 12, tzinfo=UTC)
    parent = _new(sessions, created=day - timedelta(days=2), tags=["base"], owner="ann")
    sample = _new(sessions, kind="sample", parent_job_id=parent, created=day - timedelta(days=1), owner="bob")
    gan = _new(sessions, model="gan", created=day, tags=["base", "mlp"], owner="ann")
    assert _ids(sessions) == [gan, sample, parent]  # newest first
    assert _ids(sessions, kind="sample") == [sample]
    assert _ids(sessions, model="gan") == [gan]
    assert _ids(sessions, tag="base") == [gan, parent]
    assert _ids(sessions, parent=parent) == [sample]
    assert _ids(sessions, owner="ann") == [gan, parent]
    assert _ids(sessions, since=day - timedelta(days=1)) == [gan, sample]
    assert _ids(sessions, until=day - timedelta(days=1)) == [parent]
    assert _ids(sessions, tag="base", owner="bob") == []
    for field, value, allowed in (("kind", "fit", "train, sample, evaluate"), ("state", "done", "queued")):
        with pytest.raises(InvalidInput) as info:
            _ids(sessions, **{field: value})
        assert info.value.field == field and allowed in str(info.value)
    with pytest.raises(InvalidInput) as info:
        _ids(sessions, model="stylegan", models=["dcgan", "gan"])
    assert info.value.field == "model" and "dcgan, gan" in str(info.value)


def test_the_cursor_pages_through_every_job_once_while_jobs_are_added(sessions) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    # Five jobs created at the very same moment: the id breaks the tie.
    first = [_new(sessions, created=moment) for _ in range(5)] + [
        _new(sessions, created=moment - timedelta(1))
    ]
    seen: list[str] = []
    cursor = None
    while True:
        with db.session_scope(sessions) as s:
            jobs, cursor = db.list_jobs(s, limit=2, cursor=cursor)
        seen += [j.id for j in jobs]
        _new(sessions)  # a newer job arrives between pages: it belongs before the first page
        if cursor is None:
            break
    assert seen == [*sorted(first[:5], reverse=True), first[5]]
    with pytest.raises(InvalidInput) as info:
        _ids(sessions, cursor="not-a-cursor")
    assert info.value.field == "cursor"


def _claimed(sessions) -> str:
    job_id = _new(sessions)
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="host-a:1", lease_seconds=60)
    return job_id


def _log(sessions, job_id) -> list[tuple[int, str, str]]:
    with db.session_scope(sessions) as s:
        return [(r.attempt, r.level, r.message) for r in joblogs.read(s, job_id)]


def _line(message: str, level: str = "INFO") -> joblogs.Line:
    return joblogs.Line(db.utcnow(), level, message)


def test_a_fenced_out_attempt_writes_no_log_line_and_the_takeover_is_on_the_log(sessions) -> None:
    job_id = _claimed(sessions)
    with db.session_scope(sessions) as s:
        joblogs.append(s, job_id, [_line("attempt 1 runs")], token=1)
    with db.session_scope(sessions) as s:  # its lease ran out: another worker takes the job over
        s.execute(update(db.Job).values(heartbeat_at=db.utcnow() - timedelta(minutes=5)))
    with db.session_scope(sessions) as s:
        assert db.claim_job(s, job_id, worker="host-b:2", lease_seconds=60).attempt == 2
    with db.session_scope(sessions) as s, pytest.raises(LeaseLost):
        joblogs.append(s, job_id, [_line("attempt 1 still writing")], token=1)
    lines = _log(sessions, job_id)
    assert lines[0] == (1, "INFO", "attempt 1 runs")
    assert lines[1][:2] == (2, "WARNING") and "attempt 1 lost its lease" in lines[1][2]
    assert "host-a:1" in lines[1][2] and len(lines) == 2


def test_a_jobs_log_keeps_its_head_and_newest_lines(sessions, monkeypatch) -> None:
    monkeypatch.setattr(joblogs, "HEAD_LINES", 3)
    monkeypatch.setattr(joblogs, "TAIL_LINES", 4)
    job_id = _claimed(sessions)
    for batch in range(5):
        with db.session_scope(sessions) as s:
            joblogs.append(s, job_id, [_line(f"line {batch * 4 + i}") for i in range(4)], token=1)
    messages = [m for _, _, m in _log(sessions, job_id)]
    assert messages[:3] == ["line 0", "line 1", "line 2"]
    assert messages[4:] == ["line 16", "line 17", "line 18", "line 19"]
    assert messages[3] == "[13 log lines dropped here: a job keeps its first 3 and newest 4]"
    with db.session_scope(sessions) as s:
        assert db.get_job(s, job_id).logs_dropped == 13


def test_deleting_a_jobs_rows_leaves_the_others(sessions) -> None:
    keep, gone = _claimed(sessions), _new(sessions, tags=["x"])
    with db.session_scope(sessions) as s:
        db.record_metrics(s, gone, step=1, values={"loss_D": 1.0})
        db.add_artifact(s, gone, key=f"jobs/{gone}/a.png", kind="samples", size=1)
        joblogs.note(s, gone, attempt=1, level="INFO", message="hello")
        db.record_metrics(s, keep, step=1, values={"loss_D": 2.0})
    with db.session_scope(sessions) as s:
        db.delete_job_rows(s, gone)
    with db.session_scope(sessions) as s:
        assert [j for j in s.scalars(select(db.Job.id))] == [keep]
        for table in (db.Metric, db.Artifact, db.JobLog, db.JobTag):
            assert s.scalar(select(table.job_id).where(table.job_id == gone)) is None
        assert db.latest_metrics(s, keep) == {"loss_D": 2.0}
