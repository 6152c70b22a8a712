"""What a job view needs besides the job's row, in as few queries as the API can make it: one for a
job (its artifacts, tags and latest metrics together), one for a page of jobs (their latest metrics).
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
from sqlalchemy.orm import Session

from gantry.jobs.store import Artifact, JobTag, Metric


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


def _details() -> CompoundSelect[Any]:
    latest = _latest(Metric.job_id == bindparam("job_id")).subquery()
    no_text, no_int, no_float = cast(null(), String), cast(null(), BigInteger), cast(null(), Float)
    return (
        select(
            literal_column("'a'"), Artifact.key, Artifact.kind, Artifact.bytes, no_float,
            cast(null(), Integer), no_int,
        )
        .where(Artifact.job_id == bindparam("job_id"))
        .union_all(
            select(literal_column("'t'"), JobTag.tag, no_text, no_int, no_float, cast(null(), Integer), no_int)
            .where(JobTag.job_id == bindparam("job_id")),
            select(
                literal_column("'m'"), latest.c.name, no_text, no_int, latest.c.value,
                latest.c.first_step, latest.c.first_id,
            ),
        )
    )  # fmt: skip


# Built once: building a statement with subqueries costs about as much CPU as running it.
DETAILS = _details()
LATEST_OF = _latest(Metric.job_id.in_(bindparam("job_ids", expanding=True)))


def job_details(session: Session, job_id: str) -> JobDetails:
    """Job `job_id`'s artifacts, tags and latest metrics: one query (a UNION ALL of the three)."""
    details = JobDetails()
    points = []
    for what, name, kind, size, value, first_step, first_id in session.execute(DETAILS, {"job_id": job_id}):
        if what == "a":
            details.artifacts.append((name, kind, int(size)))
        elif what == "t":
            details.tags.append(name)
        else:
            points.append((first_step, first_id, name, value))
    details.artifacts.sort()
    details.tags.sort()
    details.metrics = {name: value for _, _, name, value in sorted(points)}
    return details


def latest_metrics_of(session: Session, job_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Each job's latest metrics (jobs with none are absent): one query for a page of jobs."""
    if not job_ids:
        return {}
    found: dict[str, list[tuple[int, int, str, float]]] = {}
    for job_id, name, value, first_step, first_id in session.execute(LATEST_OF, {"job_ids": list(job_ids)}):
        found.setdefault(job_id, []).append((first_step, first_id, name, value))
    return {job_id: {name: value for _, _, name, value in sorted(points)} for job_id, points in found.items()}
