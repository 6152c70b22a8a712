"""Collects a running job's log records for its log in the SQL store (gantry.jobs.joblogs).

While `run_job` runs a job, a `JobLog` handler on the root logger keeps the records at INFO and
above that belong to the job: those of the thread that runs it (a worker runs one job at a time per
process; embedded mode runs it in a thread of its own) and any other that names it (gantry's log
lines say `job <id>: ...`). They wait in memory and are written with the job's progress, in the
same fenced transaction (`JobContext._flush`), so a database blip never fails the job for them and
a fenced-out attempt never writes them. While the database is out at most MAX_PENDING lines wait:
the oldest are dropped first, and a line says how many.

A process whose gantry loggers log above INFO (the CLI without -v) still collects INFO: the
gantry logger is lowered to INFO while the job runs, and the records below the old level are kept
from the process's own handlers, so what it prints does not change."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from gantry.jobs.joblogs import Line

MAX_PENDING = 1000
# `extra` for a record the job's log already holds (written by the run itself): not collected again.
JOBLOG_WRITTEN = {"joblog_written": True}
_FORMATTER = logging.Formatter()


class JobLog(logging.Handler):
    def __init__(self, job_id: str) -> None:
        super().__init__(logging.INFO)
        self.job_id = job_id
        self.threads = {threading.get_ident()}  # the run's (`adopt` adds its writer's)
        self._tag = f"job {job_id}"
        self._prefix = f"job {job_id}: "
        self._lines: deque[tuple[int, Line]] = deque()
        self._seq = 0
        self._dropped = 0
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if getattr(record, "joblog_written", False):
                return
            message = record.getMessage()
            if record.thread not in self.threads and self._tag not in message:
                return
            message = message.removeprefix(self._prefix)
            if record.exc_info:
                message += "\n" + _FORMATTER.formatException(record.exc_info)
            line = Line(datetime.fromtimestamp(record.created, UTC), record.levelname, message)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._seq += 1
            self._lines.append((self._seq, line))
            if len(self._lines) > MAX_PENDING:
                self._lines.popleft()
                self._dropped += 1

    def adopt(self) -> None:
        """The calling thread's records are the job's too (a thread that works for the run)."""
        self.threads = self.threads | {threading.get_ident()}

    def pending(self) -> tuple[list[Line], int]:
        """The lines not yet written and a mark to pass to `written` once they are."""
        with self._guard:
            lines = [line for _, line in self._lines]
            mark = self._seq
            if self._dropped:
                note = f"{self._dropped} log lines dropped while the database was out"
                first = lines[0].time if lines else datetime.now(UTC)
                lines.insert(0, Line(first, "WARNING", note))
        return lines, mark

    def written(self, mark: int) -> None:
        """The lines up to `mark` are in the store: forget them."""
        with self._guard:
            while self._lines and self._lines[0][0] <= mark:
                self._lines.popleft()
            self._dropped = 0


class _Below(logging.Filter):
    """Keeps gantry's records below `level` from a handler (see the module's docstring)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or not record.name.startswith("gantry")


@contextmanager
def collecting(job_id: str) -> Iterator[JobLog]:
    """A JobLog on the root logger for the duration (see the module's docstring)."""
    handler = JobLog(job_id)
    root, ours = logging.getLogger(), logging.getLogger("gantry")
    previous = ours.level
    effective = ours.getEffectiveLevel()
    quiet: _Below | None = None
    shown = list(root.handlers)
    if effective > logging.INFO:
        quiet = _Below(effective)
        for h in shown:
            h.addFilter(quiet)
        ours.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        if quiet is not None:
            ours.setLevel(previous)
            for h in shown:
                h.removeFilter(quiet)
