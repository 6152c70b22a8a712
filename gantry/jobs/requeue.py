"""The queue rebuilt from the store: the reaper that runs in every worker, and `gantry requeue`.

The SQL row is the only source of truth; a message on the queue only says "look at this job". A
pass (`requeue_pass`):

1. queues again the running jobs whose holder is dead: its lease ran out (no heartbeat for
   GANTRY_LEASE_SECONDS), or, on the reaper's own host, its process is gone. `attempt + 1` fences
   the old holder out, and it counts as a death (GANTRY_MAX_ATTEMPTS);
2. sends again the message of each queued job that was last sent more than
   GANTRY_REQUEUE_SECONDS ago and is not on the queue: Redis restarted without persistence or was
   flushed, a misconfigured worker consumed it, an enqueue failed after the row was written;
3. sends again, sooner, the message of each queued job that a worker took off the Redis queue
   more than `unclaimed_after` seconds ago (GANTRY_LEASE_SECONDS / 2 in the reaper) and neither
   claimed nor acknowledged: a live worker claims a job within a second of taking its message
   (it takes one only when idle), so its taker died in between, and without this the message would
   wait in Kombu's `unacked` hash for an hour.

One pass at a time: PostgreSQL's advisory lock, and on any database conditional UPDATEs, so two
reapers never requeue or send one job twice. A message sent twice anyway (a worker took it off the
queue while the pass looked) is harmless: a claim runs a queued job once and drops a message for a
job that has ended or that a live holder runs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gantry.jobs import store as db
from gantry.jobs.errors import transient_service
from gantry.jobs.queue import enqueue, taken_job_ids, waiting_job_ids
from gantry.jobs.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Requeued:
    """What one pass did."""

    stale: list[str] = field(default_factory=list)  # running jobs queued again (attempt + 1)
    sent: list[str] = field(default_factory=list)  # jobs whose message was sent (stale ones too)
    unclaimed: list[str] = field(default_factory=list)  # sent: their taker died before claiming
    waiting: int | None = None  # queued jobs whose message was on the queue (None: not known)
    skipped: bool = False  # another reaper held the lock: this one did nothing


def requeue_pass(
    sessions: sessionmaker[Session],
    app: Celery,
    *,
    lease_seconds: float | None,
    resend_after: float,
    unclaimed_after: float | None = None,
    host: str | None = None,
) -> Requeued:
    """One pass: requeue the running jobs whose lease ran out (`lease_seconds`; None: none by
    their heartbeat's age) or, with `host`, whose holder process is gone from this host; then send
    the messages of those, of the queued jobs last sent more than `resend_after` seconds ago that
    are not on the queue, and (with `unclaimed_after`) of the queued jobs whose message a worker
    took that long ago without claiming them. Messages are sent after the transaction commits."""
    waiting = waiting_job_ids(app)  # read first: a job queued later is new, not lost
    taken: set[str] = set()
    if unclaimed_after is not None:
        taken = taken_job_ids(app, older_than=unclaimed_after) - (waiting or set())
    to_send: list[tuple[str, str]] = []
    unclaimed: list[str] = []
    with db.session_scope(sessions) as s:
        if not db.try_reaper_lock(s):
            return Requeued(skipped=True)
        stale = db.requeue_stale(s, lease_seconds=lease_seconds, host=host)
        rows = s.execute(select(db.Job.id, db.Job.kind).where(db.Job.id.in_(stale)))
        kinds = {job_id: kind for job_id, kind in rows}
        to_send += [(job_id, kinds[job_id]) for job_id in stale]
        found = 0
        for job_id, kind in db.unsent_jobs(s, older_than=resend_after):
            if job_id in kinds:
                continue
            if waiting is not None and job_id in waiting:
                found += 1
            elif db.mark_sent(s, job_id, older_than=resend_after):
                to_send.append((job_id, kind))
        if taken:
            sending = {job_id for job_id, _ in to_send}
            for job_id, kind in db.unsent_jobs(s, older_than=unclaimed_after or 0.0):
                if (
                    job_id in taken
                    and job_id not in sending
                    and db.mark_sent(s, job_id, older_than=unclaimed_after or 0.0)
                ):
                    to_send.append((job_id, kind))
                    unclaimed.append(job_id)
    for job_id, kind in to_send:
        enqueue(app, kind, job_id)
    return Requeued(
        stale=stale,
        sent=[job_id for job_id, _ in to_send],
        unclaimed=unclaimed,
        waiting=None if waiting is None else found,
    )


class Reaper:
    """Runs `requeue_pass` every `interval` seconds in a daemon thread (one in every worker).

    After its own database outage it requeues no job by its heartbeat's age for one lease: the
    workers, cut off as long, need that long to heartbeat again (a holder found gone from this host
    is still requeued at once)."""

    def __init__(self, settings: Settings, app: Celery, *, host: str) -> None:
        self.settings, self.app, self.host = settings, app, host
        self.interval = max(1.0, min(settings.lease_seconds, settings.requeue_seconds) / 2)
        self._sessions: sessionmaker[Session] | None = None
        self._outage = False
        self._hold_until = 0.0
        self._stop = threading.Event()

    def run_once(self) -> Requeued | None:
        """One pass; None when a service was out (logged, tried again next time)."""
        try:
            if self._sessions is None:
                self._sessions = db.connect(self.settings.database)
            by_age = not self._outage and time.monotonic() >= self._hold_until
            done = requeue_pass(
                self._sessions,
                self.app,
                lease_seconds=self.settings.lease_seconds if by_age else None,
                resend_after=self.settings.requeue_seconds,
                unclaimed_after=self.settings.lease_seconds / 2,
                host=self.host,
            )
        except Exception as exc:
            service = transient_service(exc)
            if service is None:
                log.exception("reaper: pass failed")
                return None
            if service == "database" and not self._outage:
                self._outage = True
                log.warning("reaper: database unavailable (%s); stale jobs wait", type(exc).__name__)
            elif service != "database":
                log.warning("reaper: %s unavailable (%s)", service, type(exc).__name__)
            return None
        if self._outage:  # back: give the workers one lease to heartbeat before judging them
            self._outage = False
            self._hold_until = time.monotonic() + self.settings.lease_seconds
        for job_id in done.stale:
            log.warning("reaper: job %s: its holder is gone or its lease ran out; queued again", job_id)
        for job_id in done.unclaimed:
            log.warning(
                "reaper: job %s: its message was taken by a worker that never claimed it; sent again", job_id
            )
        for job_id in set(done.sent) - set(done.stale) - set(done.unclaimed):
            log.warning("reaper: job %s: queued with no message on the queue; sent again", job_id)
        return done

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="gantry-reaper", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval)
