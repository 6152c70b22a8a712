"""What a job view needs, in as few queries as the API can make it: one for a job (its row with its
artifacts, tags and latest metrics), one for a page of jobs' latest metrics (their rows come apart).
Each query is a round trip to the database, and a request to the API is mostly round trips.

Latest metrics: per name, the value at its highest step (ties: the newest row), the names in the
order of their first point, exactly as `gantry.jobs.store.latest_metrics` reads them, but picked by
the database instead of every point being read into Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Float,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    func,
    literal_column,
    null,
    select,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.orm import Session

from gantry.jobs.store import Artifact, Job, JobTag, Metric


@dataclass
class JobDetails:
    artifacts: list[tuple[str, str, int]] = field(default_factory=list)  # (key, kind, bytes) by key
    metrics: dict[str, float] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


def _latest(where: Any) -> Select[Any]:
    """Each (job, name)'s latest point among the metric rows `where` selects, with the (step, id)
    of the name's first point."""
    part, order = (Metric.job_id, Metric.name), (Metric.step, Metric.id)
    ranked = (
        select(
            Metric.job_id,
            Metric.name,
            Metric.value,
            func.row_number()
            .over(partition_by=part, order_by=(Metric.step.desc(), Metric.id.desc()))
            .label("rank"),
            func.first_value(Metric.step).over(partition_by=part, order_by=order).label("first_step"),
            func.first_value(Metric.id).over(partition_by=part, order_by=order).label("first_id"),
        )
        .where(where)
        .subquery()
    )
    c = ranked.c
    return select(c.job_id, c.name, c.value, c.first_step, c.first_id).where(c.rank == 1)


# The job row's columns a view shows (gantry.api.service's `_view`) and its owner (who may see it).
VIEW_COLUMNS = (
    "id", "kind", "model", "state", "attempt", "step", "total_steps", "error", "owner", "parent_job_id",
    "created_at", "started_at", "finished_at", "spec", "name",
)  # fmt: skip
DETAIL_COLUMNS = ("name", "kind", "bytes", "value", "first_step", "first_id")  # as `d_name`, ...


def _job_and_details() -> CompoundSelect[Any]:
    """Job `job_id`'s row (tagged 'j'), artifacts ('a'), tags ('t') and latest metrics ('m') in one
    UNION ALL: each branch fills its own columns and leaves the others' null (typed, as PostgreSQL's
    UNION wants). Column names come from the first branch: the job's, then `d_*` for the details."""
    jobs = Job.__table__
    columns = [jobs.c[name] for name in VIEW_COLUMNS]
    no_job = [cast(null(), c.type) for c in columns]
    latest = _latest(Metric.job_id == bindparam("job_id")).subquery()
    no_text, no_int, no_float = cast(null(), String), cast(null(), BigInteger), cast(null(), Float)
    no_step = cast(null(), Integer)
    no_details: list[ColumnElement[Any]] = [no_text, no_text, no_int, no_float, no_step, no_int]
    union: CompoundSelect[Any] = (
        select(
            literal_column("'j'").label("what"), *columns,
            *(c.label(f"d_{n}") for c, n in zip(no_details, DETAIL_COLUMNS, strict=True)),
        )
        .where(jobs.c.id == bindparam("job_id"))
        .union_all(
            select(
                literal_column("'a'"), *no_job, Artifact.key, Artifact.kind, Artifact.bytes, no_float,
                no_step, no_int,
            ).where(Artifact.job_id == bindparam("job_id")),
            select(
                literal_column("'t'"), *no_job, JobTag.tag, no_text, no_int, no_float, no_step, no_int,
            ).where(JobTag.job_id == bindparam("job_id")),
            select(
                literal_column("'m'"), *no_job, latest.c.name, no_text, no_int, latest.c.value,
                latest.c.first_step, latest.c.first_id,
            ),
        )
    )  # fmt: skip
    return union


# Built once: building a statement with subqueries costs about as much CPU as running it.
JOB_AND_DETAILS = _job_and_details()
LATEST_OF = _latest(Metric.job_id.in_(bindparam("job_ids", expanding=True)))


def job_and_details(session: Session | Connection, job_id: str) -> tuple[Row[Any] | None, JobDetails]:
    """Job `job_id`'s row (the `VIEW_COLUMNS`, as attributes; None if there is no such job) and its
    artifacts, tags and latest metrics: one query, one round trip (the most frequent read of all, a
    client polling its job)."""
    row, details, points = None, JobDetails(), []
    for found in session.execute(JOB_AND_DETAILS, {"job_id": job_id}):
        what = found.what
        if what == "j":
            row = found
        elif what == "a":
            details.artifacts.append((found.d_name, found.d_kind, int(found.d_bytes)))
        elif what == "t":
            details.tags.append(found.d_name)
        else:
            points.append((found.d_first_step, found.d_first_id, found.d_name, found.d_value))
    details.artifacts.sort()
    details.tags.sort()
    details.metrics = {name: value for _, _, name, value in sorted(points)}
    return row, details


def latest_metrics_of(session: Session, job_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Each job's latest metrics (jobs with none are absent): one query for a page of jobs."""
    if not job_ids:
        return {}
    found: dict[str, list[tuple[int, int, str, float]]] = {}
    for job_id, name, value, first_step, first_id in session.execute(LATEST_OF, {"job_ids": list(job_ids)}):
        found.setdefault(job_id, []).append((first_step, first_id, name, value))
    return {job_id: {name: value for _, _, name, value in sorted(points)} for job_id, points in found.items()}
