"""One poller per API process behind every open event stream (docs/api.md, "Events").

A stream never queries the database while it waits: it subscribes here, and one asyncio task reads
the watched jobs' rows and their new metric rows once per interval (in a thread: the store is sync
SQLAlchemy) and hands each subscriber a `Batch` per job that changed. A thousand streams cost one
round trip per interval, whatever they watch. The task starts with the first subscriber and stops
with the last.

The cursor is the metric rows' integer id. Ids are handed out at insert but become visible at
commit, so across jobs a row may appear after rows with higher ids (two workers, two transactions):
each poll reads again the rows above the cursor as it was `lookback` seconds ago, and each job's own
cursor drops what was already handed out. Within one job ids are in commit order (one attempt at a
time writes it, one transaction after another), which is what a stream's `Last-Event-ID` relies on.
(On SQLite, whose `metrics.id` has no AUTOINCREMENT, a deleted highest id is handed out again: the
points a taken-over attempt records again after its checkpoint may reuse ids a stream has passed.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from anyio import to_thread
from sqlalchemy import func, select
from sqlalchemy.orm import raiseload

from gantry.api.schemas import JobView
from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.errors import JobNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What a job's row says now."""

    state: str
    step: int
    total_steps: int
    error: str | None

    @property
    def ended(self) -> bool:
        return self.state in db.TERMINAL


@dataclass(frozen=True)
class Point:
    id: int
    name: str
    step: int
    value: float
    time: datetime


@dataclass
class Batch:
    """What one read found for one job: new points (in id order), its row, and when it has ended,
    the job as GET /v1/jobs/{id} answers. `gone`: the job no longer exists (deleted). `read`: the
    read's number; reads (polls and replays) are numbered in the order they happened, so a stream
    can tell a row older than the one it sent."""

    read: int = 0
    points: list[Point] = field(default_factory=list)
    snapshot: Snapshot | None = None
    end: JobView | None = None
    gone: bool = False


class Subscription:
    """One stream's inbox. A stream that falls `queue_size` batches behind (a client that stopped
    reading) is marked `lagged` instead of growing without bound: it reads what it missed from the
    store again (`EventHub.replay`), so nothing is skipped."""

    def __init__(self, job_id: str, queue_size: int) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(queue_size)
        self.lagged = False

    def offer(self, batch: Batch) -> None:
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.lagged = True

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
        self.lagged = False


class EventHub:
    """The shared poller. `service` is unscoped: a stream's owner check is done before it subscribes."""

    def __init__(
        self, service: Service, *, interval: float = 0.5, lookback: float = 5.0, queue_size: int = 256
    ) -> None:
        self.service = service
        self.interval, self.lookback, self.queue_size = interval, lookback, queue_size
        self._subs: dict[str, set[Subscription]] = {}
        self._known: dict[str, Snapshot] = {}  # per job: its row as last handed out
        self._last: dict[str, int] = {}  # per job: the highest metric id handed out
        self._marks: deque[tuple[float, int]] = deque()  # (when, global cursor) of recent reads
        # Reads hold this lock and take the next number inside it: their numbers are their order.
        self._read_lock = threading.Lock()
        self._reads = 0
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None

    def watching(self) -> set[str]:
        """The job ids with at least one open stream."""
        return set(self._subs)

    async def subscribe(self, job_id: str) -> Subscription:
        """A subscription to job `job_id`: every batch the poller reads after this returns (the
        poller has its cursor by then, so a replay read after this call overlaps what comes next)."""
        await self._start()
        sub = Subscription(job_id, self.queue_size)
        self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id, set())
        subs.discard(sub)
        if not subs:
            self._subs.pop(sub.job_id, None)
            self._known.pop(sub.job_id, None)
            self._last.pop(sub.job_id, None)
        if not self._subs and self._task is not None:
            self._task.cancel()
            self._task = None

    async def replay(self, job_id: str, *, since: int) -> Batch:
        """Job `job_id` read now: its row, its points with id above `since`, its end if it ended."""
        return await to_thread.run_sync(self._read_one, job_id, since)

    # -- the poller --------------------------------------------------------------------------------
    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lock is None or (self._task is not None and self._task.get_loop() is not loop):
            # A new event loop (a test client's portal): state tied to the old one is dropped.
            self._lock, self._task = asyncio.Lock(), None
        async with self._lock:
            if self._task is not None and not self._task.done():
                return
            top = await to_thread.run_sync(self._top)
            self._marks = deque([(time.monotonic(), top)])
            self._task = loop.create_task(self._run(), name="gantry-events-poller")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database away: streams stay open (keep-alives) and catch up when it is back.
                log.warning("event poller: read failed (%s: %s); trying again", type(exc).__name__, exc)

    def _since(self) -> int:
        """The cursor as it was `lookback` seconds ago (the oldest mark younger reads still need)."""
        cutoff = time.monotonic() - self.lookback
        while len(self._marks) > 1 and self._marks[1][0] <= cutoff:
            self._marks.popleft()
        return self._marks[0][1]

    async def _poll(self) -> None:
        ids = sorted(self._subs)
        if not ids:
            return
        known = {job_id: self._known.get(job_id) for job_id in ids}
        read, rows, points, top, ended = await to_thread.run_sync(self._read, ids, self._since(), known)
        self._marks.append((time.monotonic(), max(top, self._marks[-1][1])))
        by_job: dict[str, list[Point]] = {}
        for job_id, point in points:
            if point.id > self._last.get(job_id, 0):
                by_job.setdefault(job_id, []).append(point)
        for job_id in ids:
            snapshot = rows.get(job_id)
            batch = Batch(read=read, points=by_job.get(job_id, []), gone=snapshot is None)
            if snapshot is not None and snapshot != self._known.get(job_id):
                batch.snapshot = snapshot
                batch.end = ended.get(job_id)
            if not (batch.points or batch.snapshot or batch.gone):
                continue
            if batch.points:
                self._last[job_id] = batch.points[-1].id
            if snapshot is not None:
                self._known[job_id] = snapshot
            for sub in list(self._subs.get(job_id, ())):
                sub.offer(batch)

    # -- reads (in a worker thread) ----------------------------------------------------------------
    # Reads are in autocommit sessions (Service.read_sessions): each statement on its own, as in a
    # READ COMMITTED transaction, without its BEGIN and COMMIT round trips.
    def _top(self) -> int:
        with self.service.read_sessions() as s:
            return int(s.scalar(select(func.max(db.Metric.id))) or 0)

    def _read(
        self, ids: Sequence[str], since: int, known: dict[str, Snapshot | None]
    ) -> tuple[int, dict[str, Snapshot], list[tuple[str, Point]], int, dict[str, JobView]]:
        # The rows first, then the points: a point committed before its job's end is always read
        # by the poll that first sees the end.
        with self._read_lock, self.service.read_sessions() as s:
            read = self._next_read()
            rows = {
                job_id: Snapshot(state, step, total, error)
                for job_id, state, step, total, error in s.execute(
                    select(db.Job.id, db.Job.state, db.Job.step, db.Job.total_steps, db.Job.error).where(
                        db.Job.id.in_(ids)
                    )
                )
            }
            points = [
                (row.job_id, _point(row))
                for row in s.execute(
                    select(db.Metric)
                    .where(db.Metric.id > since, db.Metric.job_id.in_(ids))
                    .order_by(db.Metric.id)
                ).scalars()
            ]
            top = int(s.scalar(select(func.max(db.Metric.id))) or 0)
        ended = {}
        for job_id, snapshot in rows.items():
            old = known.get(job_id)
            if snapshot.ended and snapshot != old:
                with contextlib.suppress(JobNotFound):  # deleted meanwhile: its stream ends without it
                    ended[job_id] = self.service.get(job_id)
        return read, rows, points, top, ended

    def _next_read(self) -> int:
        self._reads += 1
        return self._reads

    def _read_one(self, job_id: str, since: int) -> Batch:
        with self._read_lock, self.service.read_sessions() as s:
            read = self._next_read()
            job = s.get(db.Job, job_id, options=[raiseload(db.Job.tag_rows)])
            if job is None:
                return Batch(read=read, gone=True)
            snapshot = Snapshot(job.state, job.step, job.total_steps, job.error)
            points = [
                _point(m)
                for m in s.scalars(
                    select(db.Metric)
                    .where(db.Metric.job_id == job_id, db.Metric.id > since)
                    .order_by(db.Metric.id)
                )
            ]
        batch = Batch(read=read, points=points, snapshot=snapshot)
        if snapshot.ended:
            try:
                batch.end = self.service.get(job_id)
            except JobNotFound:
                batch.gone = True
        return batch


def _point(m: db.Metric) -> Point:
    return Point(id=m.id, name=m.name, step=m.step, value=m.value, time=db.aware(m.time))
