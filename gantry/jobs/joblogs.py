"""A job's log, recorded on the job in the SQL store (`job_logs`), not left on a worker's disk.

What lands there: the job's own records at INFO and above, which its worker collects while it runs
(gantry.worker.joblog) and writes with its progress, and the store's notes on what happened to the
job from outside (a takeover after a lost lease, a requeue after a death, a resume, a message that
never reached the queue). `gantry logs JOB` and `GET /v1/jobs/{id}/logs` read it.

Fencing: a worker's lines are written only while its attempt is the job's current one (`append`
takes the attempt's lease token, as every worker write does; see gantry.jobs.store), so an attempt
that lost its lease never adds a line after the one that took over.

Bounded: a job keeps its first HEAD_LINES lines (how it started) and its newest TAIL_LINES (how it
is going or ended); the lines between are replaced by one line saying how many were dropped
(`jobs.logs_dropped`). A line is cut at MESSAGE_MAX characters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from gantry.jobs.errors import LeaseLost
from gantry.jobs.store import Job, JobLog, fenced, utcnow

HEAD_LINES = 200
TAIL_LINES = 800
MESSAGE_MAX = 8000
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Line:
    """A log line before it is written: when, how severe, what."""

    time: datetime
    level: str
    message: str


def _row(job_id: str, attempt: int, line: Line) -> dict[str, object]:
    message = line.message
    if len(message) > MESSAGE_MAX:
        message = message[:MESSAGE_MAX] + f"... [{len(line.message) - MESSAGE_MAX} characters cut]"
    return {
        "job_id": job_id,
        "attempt": attempt,
        "time": line.time,
        "level": line.level[:16],
        "message": message,
    }


def _insert(session: Session, job_id: str, rows: list[dict[str, object]]) -> None:
    """One INSERT of plain rows (no objects for the session to track and flush), then the trim."""
    session.execute(insert(JobLog), rows)
    trim(session, job_id)


def append(session: Session, job_id: str, lines: Sequence[Line], *, token: int) -> None:
    """Add a worker's `lines` to job `job_id`, only while attempt `token` is the job's current one
    and the job is not back on the queue (LeaseLost if not; the row stays locked to the end of the
    transaction). Unlike progress this does not need the job `running`: the lines a run logs after
    recording its end land too. A job handed back (`queued`, the same attempt number) belongs to
    the attempt that takes it next: the run that handed it back writes nothing more."""
    if not lines:
        return
    if fenced(session, job_id, token) is None:  # not yet proven in this transaction (running, the token)
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.attempt == token, Job.state != "queued")
            .values(logs_dropped=Job.logs_dropped)  # a no-op that locks the row and proves the token
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise LeaseLost(job_id, token)
    _insert(session, job_id, [_row(job_id, token, line) for line in lines])


def note(session: Session, job_id: str, *, attempt: int, level: str, message: str) -> None:
    """A line the store itself adds, in the transaction that changes the job (a takeover, a
    requeue, a resume): what happened to the job from outside its run."""
    _insert(session, job_id, [_row(job_id, attempt, Line(utcnow(), level, message))])


def trim(session: Session, job_id: str, *, head: int | None = None, tail: int | None = None) -> int:
    """Keep the job's first `head` lines and newest `tail` (default HEAD_LINES, TAIL_LINES); the
    line after the head becomes (or stays) the one that says how many were dropped. Returns how
    many this call dropped."""
    head = HEAD_LINES if head is None else head
    tail = TAIL_LINES if tail is None else tail
    count = session.scalar(select(func.count()).select_from(JobLog).where(JobLog.job_id == job_id)) or 0
    if count <= head + 1 + tail:
        return 0
    ids = list(session.scalars(select(JobLog.id).where(JobLog.job_id == job_id).order_by(JobLog.id)))
    marker, middle = ids[head], ids[head + 1 : len(ids) - tail]
    already = session.scalar(select(Job.logs_dropped).where(Job.id == job_id)) or 0
    # The first trim turns a real line into the marker: that line is dropped too.
    dropped = len(middle) + (0 if already else 1)
    session.execute(delete(JobLog).where(JobLog.id.in_(middle)).execution_options(synchronize_session=False))
    total = already + dropped
    session.execute(
        update(JobLog)
        .where(JobLog.id == marker)
        .values(
            level="WARNING",
            message=f"[{total} log lines dropped here: a job keeps its first {head} and newest {tail}]",
        )
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(logs_dropped=total)
        .execution_options(synchronize_session=False)
    )
    return dropped


def read(
    session: Session, job_id: str, *, since_id: int | None = None, limit: int | None = None
) -> list[JobLog]:
    """The job's lines in the order they were written; `since_id`: only those after that line."""
    query = select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id)
    if since_id is not None:
        query = query.where(JobLog.id > since_id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))
