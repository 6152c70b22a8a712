"""The job runner behind the Celery tasks: claim a job, run its phase, record how it ended.

`run_job` claims the job's row (a lease whose token is the attempt number), builds the `JobContext`
that the phase functions report through (progress and heartbeats to the SQL store, checkpoints,
samples and other objects to object storage, each recorded as an artifact), dispatches by kind to
`train_job`, `sample_job` or `evaluate_job`, and records the final state. Tests and benchmarks call
these without Celery.

Faults:
- Fencing: every write the context makes for the job is conditional on the attempt's token
  (gantry.jobs.store); an object write checks the lease right before it (or within RECHECK_SECONDS
  of the attempt's last proof of it, less than any takeover needs: `_prove_lease`), so an attempt
  that lost its lease (paused past it, or taken over) is refused its next write. A refused write raises
  LeaseLost and the run stops there, writing nothing more. A write already past its check when the
  lease was lost still lands: checkpoints carry the attempt in their key for that (`put`,
  `write_manifest` say why the rest is harmless).
- Transient infrastructure errors (gantry.jobs.errors.is_transient) are retried with backoff and
  jitter within GANTRY_RETRY_SECONDS (gantry.jobs.retry). Progress and heartbeats do not wait: a
  failed one is kept in memory and written with the next that succeeds, so training goes on
  through a database blip (`should_stop` keeps its last answer). Checkpoints, artifacts and the
  final state wait and retry; while object storage is down the lease is kept by heartbeats.
- Past the budget the job fails with the reason; when even that cannot be written (the database
  is down), `run_job` raises RetryLater and the task is retried later with the same token, which
  goes on with the same attempt at once. Should that retry be lost, the row's heartbeat goes stale
  and the lease expires: the next claim (a redelivery, or the stale-job requeue) takes it over.
- The job's own errors fail it at once, with the reason and traceback, and are not retried.
- A graceful stop (SIGTERM to the worker, gantry.worker.lifecycle) turns `should_stop` True: the
  training loop checkpoints at that step and returns, and the job is handed back (queued, the same
  attempt, not a death; `send` sends its message again) for another worker to resume from that
  step. Past GANTRY_STOP_SECONDS, `hand_back_late` hands it back without that checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from gantry.jobs import joblogs
from gantry.jobs import store as db
from gantry.jobs.errors import GantryError, LeaseLost, ServiceUnavailable, transient_service
from gantry.jobs.keys import (
    BestCheckpoint,
    CheckpointEntry,
    Manifest,
    checkpoint_key,
    manifest_key,
    metrics_key,
    metrics_segment_key,
    metrics_segments_prefix,
    retain,
    samples_key,
    spec_key,
)
from gantry.jobs.retry import Outage
from gantry.jobs.settings import Settings, get_settings
from gantry.jobs.specs import EvaluateSpec, SampleSpec, load_train_spec
from gantry.jobs.storage import ObjectNotFound, ObjectStore, open_store
from gantry.worker import checkpoints
from gantry.worker.checkpoints import read_manifest
from gantry.worker.errors import Stopped
from gantry.worker.joblog import JOBLOG_WRITTEN, JobLog, collecting
from gantry.worker.lifecycle import SHUTDOWN, Shutdown, renewing

log = logging.getLogger(__name__)

T = TypeVar("T")
_UNREAD = object()  # JobContext._manifest before it is read
# An object write within this long of the attempt's last proof of its lease needs no check of its
# own (JobContext._prove_lease): far below the shortest lease (5 s), and a job's writes come in runs
# a few milliseconds apart (a checkpoint, its manifest, a grid).
RECHECK_SECONDS = 0.5


class RetryLater(ServiceUnavailable):
    """A service stayed out: this attempt hands the job back, to be retried later with the same
    lease token (`token`; None before a claim) so that it goes on as the same attempt at once.
    `since`: when the outage began (epoch seconds), carried across retries to bound them."""

    def __init__(
        self, job_id: str, service: str, token: int | None, since: float, cause: BaseException
    ) -> None:
        super().__init__(
            service, f"job {job_id} handed back ({type(cause).__name__}: {cause})", transient=True
        )
        self.job_id, self.token, self.since = job_id, token, since


class _Later:
    """Object writes that nothing in the run waits for (`JobContext.put_later`, a training's
    checkpoints), made on threads of the run while it goes on: a grid or a checkpoint costs the
    run no wait for object storage. Two lanes, each one thread writing in the order given: the
    checkpoints (each with its manifest) and the other files, so a grid need not queue behind a
    checkpoint's upload; a key is always written by the same lane. `settle` waits for them all and
    raises the first failure; a failure is also raised by the next `submit`, so a run learns of it
    early. At most `backlog` wait at once (the next `submit` waits for the oldest): a store slower
    than the run bounds the memory."""

    backlog = 8
    LANES = ("checkpoints", "files")

    def __init__(self, started: Callable[[], None] = lambda: None) -> None:
        self._started = started  # run on each thread first (its log lines are the job's)
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pending: list[Future[None]] = []
        self._threads: set[int] = set()

    def submit(self, fn: Callable[[], None], *, lane: str = "files") -> None:
        assert lane in self.LANES, lane
        self._reap(block=len(self._pending) >= self.backlog)
        if lane not in self._pools:
            self._pools[lane] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"gantry-{lane}", initializer=self._start
            )
        self._pending.append(self._pools[lane].submit(fn))

    def _start(self) -> None:
        self._threads.add(threading.get_ident())
        self._started()

    def _reap(self, *, block: bool = False) -> None:
        """Forget the writes done (the oldest waited for when `block`); raise the first failure."""
        while self._pending and (self._pending[0].done() or block):
            block = False
            self._pending.pop(0).result()

    def settle(self, *, quiet: bool = False) -> None:
        """Wait for every write; raise the first failure (`quiet`: log it instead, for a run that
        has already failed or lost its job). On a thread of its own (a write that settles): none."""
        if threading.get_ident() in self._threads:
            return
        while self._pending:
            write = self._pending.pop(0)
            try:
                write.result()
            except Exception as exc:
                if not quiet:
                    self.settle(quiet=True)
                    raise
                log.warning(
                    "an object write of the run failed after its end: %s: %s", type(exc).__name__, exc
                )

    def close(self) -> None:
        self.settle(quiet=True)
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()


@dataclass
class JobContext:
    """What a running job needs: its id, its lease token, the store, object storage, and throttled,
    fenced, retried DB access."""

    job_id: str
    sessions: sessionmaker[Session]
    objects: ObjectStore
    settings: Settings
    token: int  # this attempt's lease token: the job's attempt number when it was claimed
    outage_since: float | None = None  # when the outage that handed the job back began
    poll_seconds: float = 0.5
    # True once this worker is asked to stop (SIGTERM): the job checkpoints and is handed back.
    stopping: Callable[[], bool] = field(default=lambda: False)
    # The job's log lines waiting to be written with its progress (gantry.worker.joblog).
    joblog: JobLog | None = None
    _last_poll: float = field(default=0.0, init=False)
    _cancel: bool = field(default=False, init=False)
    # Metric points not yet written (pended, or the database was out): (step, metrics, when
    # measured), written in order by the next transaction that flushes (`_flush`, `finish`).
    _pending: list[tuple[int, dict[str, float], datetime]] = field(default_factory=list, init=False)
    _pending_step: int | None = field(default=None, init=False)
    # True when this attempt's claim started the job: nothing of it is in storage yet (no manifest,
    # checkpoint or metrics segment), so a run that starts need not look for them (see `run_job`).
    fresh: bool = False
    # The job's manifest as this attempt last read or wrote it (`manifest`).
    _manifest: Manifest | object | None = field(default=None, init=False)
    _segments: bool = field(default=True, init=False)  # whether metrics segments may exist
    # Objects written and not yet recorded as artifacts, `(key, kind, bytes)`: the attempt's next
    # fenced transaction records them (`_record`), so that an object write costs none of its own.
    # Appended to by `_Later`'s threads too: under `_records_lock` (`_listed`, `_record`).
    _records: list[tuple[str, str, int]] = field(default_factory=list, init=False)
    _records_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _later: _Later = field(init=False)
    # When this attempt last proved its lease (monotonic clock): its claim (the context is made right
    # after it), a lease check or a progress write. See `_prove_lease`.
    _proven_at: float = field(default_factory=time.monotonic, init=False)
    database: Outage = field(init=False)
    storage: Outage = field(init=False)

    def __post_init__(self) -> None:
        # Tried at least twice a lease: a service that is back is found within half a lease.
        cap = min(30.0, self.settings.lease_seconds / 2)
        self.database = Outage(self.settings.retry_seconds, cap=cap)
        self.storage = Outage(self.settings.retry_seconds, cap=cap)
        self._manifest = None if self.fresh else _UNREAD
        self._segments = not self.fresh
        self._later = _Later(started=self._adopt)

    def _adopt(self) -> None:
        if self.joblog is not None:  # the writer's log lines (a retried write) are the job's
            self.joblog.adopt()

    def manifest(self) -> Manifest | None:
        """The job's manifest: read once per attempt, then as this attempt last wrote it (only the
        attempt that holds the lease writes it, so the copy is what storage holds). ValueError when
        it does not parse (then read again next time). After the checkpoints handed over."""
        self.settle()
        if self._manifest is _UNREAD:
            self._manifest = self.read(lambda: read_manifest(self.objects, self.job_id))
        return self._manifest  # type: ignore[return-value]

    # -- the store: fenced writes -----------------------------------------------------------------
    def write(self, fn: Callable[[Session], T]) -> T:
        """`fn(session)` in one transaction, retried while the database is out (within the budget),
        with the artifact records of the objects written since the last one (`_record`)."""

        def both(s: Session) -> T:
            self._record(s)
            return fn(s)

        return self.database.call(lambda: self._in_session(both))

    def check_lease(self) -> None:
        """Prove this attempt still holds the job (LeaseLost if not), waiting out a database blip."""
        proving = time.monotonic()
        self._cancel = self.write(lambda s: db.check_lease(s, self.job_id, token=self.token))
        self._last_poll = self._proven_at = proving

    def _prove_lease(self) -> None:
        """Before an object write: `check_lease`, unless this attempt proved its lease less than
        RECHECK_SECONDS ago. No other attempt can have taken the job since: a takeover needs the
        heartbeat written then to be GANTRY_LEASE_SECONDS old (at least 5 s), or this process gone,
        and a pause of the process (SIGSTOP) counts, the clock being monotonic. Once the worker is
        asked to stop, every write checks: the stop watchdog may hand the job back meanwhile."""
        if self.stopping() or time.monotonic() - self._proven_at >= RECHECK_SECONDS:
            self.check_lease()

    def _record(self, s: Session) -> None:
        """Record the objects written since the last transaction as artifacts, fenced, in the caller's
        transaction; forgotten once it commits. Until then an object is in storage and not yet in
        the job's artifact list. Should the run end before its next transaction (the worker killed,
        the database out past the retries), the object stays unlisted until an attempt writes its key
        again; `gantry delete` removes it with the job all the same (by the job's prefix)."""
        if s.info.get("recorded"):
            return
        with self._records_lock:  # taken: a transaction of the other thread records the rest
            taken = self._records[:]
            del self._records[:]
        if not taken:
            return
        s.info["recorded"] = True

        def untake() -> None:  # rolled back: recorded by a later transaction
            with self._records_lock:
                self._records[:0] = taken

        s.info.setdefault("after_rollback", []).append(untake)
        rows = {key: (key, kind, size) for key, kind, size in taken}  # a key's last write
        db.add_artifacts(s, self.job_id, list(rows.values()), token=self.token)

    def _listed(self, key: str, kind: str, size: int) -> None:
        """An object written, to be recorded as an artifact by the next transaction (`_record`)."""
        with self._records_lock:
            self._records.append((key, kind, size))

    def _keep_lease(self) -> None:
        # While object storage is down: one heartbeat per wait, so the job keeps its lease.
        self._cancel = self._in_session(lambda s: db.check_lease(s, self.job_id, token=self.token))

    def _flush(self, s: Session) -> bool:
        proving = time.monotonic()
        # The heartbeat first: its fence proves the lease for the writes after it (one per transaction).
        cancel = db.heartbeat(s, self.job_id, step=self._pending_step, token=self.token)
        self._record(s)
        self._write_points(s)
        self._write_log(s)

        def proven() -> None:
            self._proven_at = max(self._proven_at, proving)

        s.info.setdefault("after_commit", []).append(proven)
        return cancel

    def _write_points(self, s: Session) -> None:
        """The metric points not yet written (kept through an outage, or pended), in order."""
        for step, metrics, when in self._pending:
            db.record_metrics(s, self.job_id, step=step, values=metrics, token=self.token, time=when)

    def _write_log(self, s: Session, *, last: joblogs.Line | None = None) -> None:
        """The job's pending log lines (and `last`), in the caller's fenced transaction; forgotten
        once it commits."""
        if self.joblog is None:
            return
        lines, mark = self.joblog.pending()
        lines += [last] if last is not None else []
        if lines:
            joblogs.append(s, self.job_id, lines, token=self.token)
            joblog = self.joblog
            s.info.setdefault("after_commit", []).append(lambda: joblog.written(mark))

    def _in_session(self, fn: Callable[[Session], T]) -> T:
        undo: list[Callable[[], None]] = []
        try:
            with db.session_scope(self.sessions) as s:
                undo = s.info.setdefault("after_rollback", [])
                result = fn(s)
                done = s.info.pop("after_commit", [])
        except BaseException:
            for callback in undo:  # the transaction did not commit
                callback()
            raise
        for callback in done:  # the transaction committed
            callback()
        return result

    def _report(self) -> None:
        """Write the pending progress and a heartbeat, or keep them for later while the database
        is out (the budget spent: ServiceUnavailable). LeaseLost goes up at once."""
        self._last_poll = time.monotonic()
        if not self.database.due():
            return
        try:
            self._cancel = self._in_session(self._flush)
        except Exception as exc:  # LeaseLost and the job's own errors go up at once
            service, delay = self.database.absorb(exc)
            log.warning(
                "job %s: %s unavailable (%s); progress kept, next try in %.1f s",
                self.job_id,
                service,
                type(exc).__name__,
                delay,
            )
            return
        self.database.ok()
        self._pending.clear()
        self._pending_step = None

    def flush(self) -> None:
        """Write the pending progress now, waiting out a database blip (before a checkpoint)."""
        self._cancel = self.write(self._flush)
        self._pending.clear()
        self._pending_step = None
        self._last_poll = time.monotonic()

    # -- object storage, each write fenced and recorded as an artifact --------------------------
    def read(self, fn: Callable[[], T]) -> T:
        """A read from object storage, retried while it is out (the lease kept meanwhile, and
        renewed while a long read such as a data set's download runs: see `renewing`)."""
        with renewing(self._renew, every=self.settings.lease_seconds / 4):
            return self.storage.call(fn, between=self._keep_lease)

    def _renew(self) -> None:
        self._in_session(lambda s: db.check_lease(s, self.job_id, token=self.token))

    def put_object(self, key: str, data: bytes) -> str:
        """Write an object while this attempt holds the job (proven right before the write, or less
        than RECHECK_SECONDS before it: `_prove_lease`)."""
        self._prove_lease()
        return self._send(key, data)

    def _send(self, key: str, data: bytes) -> str:
        """The object write itself, retried while object storage is out (the lease kept meanwhile)."""
        return self.storage.call(partial(self.objects.put_bytes, key, data), between=self._keep_lease)

    def put(self, key: str, data: bytes, *, kind: str) -> str:
        """Write object `key` and record it as an artifact of the job (with the attempt's next
        transaction: `_record`), both fenced.

        The lease is checked before the object write (`_prove_lease`), so an attempt fenced out
        between the check and the write (paused, then taken over) still lands that one write; its
        record is refused and the run stops. Checkpoints therefore carry the attempt in their key
        (gantry.jobs.keys). The keys written through here do not, because such a late write is
        harmless there: nothing reads them back to go on from, and none is named by a manifest.
        - spec.json: the same spec, whichever attempt writes it.
        - A training's grid (samples/step-N.png): the same step of the same job from the same fixed
          latents (a resume continues bit for bit); at worst the preview of a path abandoned.
        - A metrics segment: a copy of the SQL store's points for a download mid-run. A resume reads
          the store (the source of truth, fenced), and at the end metrics.jsonl is written whole from
          it and the segments deleted.
        - metrics.jsonl: a copy of the store's points too, written whole again by the attempt that
          holds the job when it ends.
        - A sample job's images and an evaluation's figures: every attempt makes the same files
          from the same checkpoint and seed. (With `--checkpoint latest` of a train job still
          training, a later attempt may use a newer checkpoint; then the one late file shows the
          checkpoint before.)
        - warnings.txt: one warning of the holder's may be lost to the late attempt's rewrite."""
        uri = self.put_object(key, data)
        self._listed(key, kind, len(data))
        return uri

    def put_later(self, key: str, data: bytes, *, kind: str | None) -> str:
        """`put` made on a thread while the run goes on (`_Later`), for an object nothing in the run
        reads back: the job's spec, a training's grid, an evaluation's figure. The lease is proven
        as `put` proves it, when the write is handed over; the write itself may come a few
        milliseconds later (behind those before it in its lane), which for these keys is harmless
        as `put` explains. The run waits for them all before it records its end (`settle`), so a job that
        ended has every object it listed. `kind` None: not an artifact (as `put_object`)."""
        self._prove_lease()

        def write() -> None:
            self._send(key, data)
            if kind is not None:
                self._listed(key, kind, len(data))

        self._later.submit(write)
        return self.objects.uri(key)

    def settle(self, *, quiet: bool = False) -> None:
        """Wait for the run's `put_later` writes; raise the first that failed (`quiet`: log it)."""
        self._later.settle(quiet=quiet)

    def put_many(self, objects: list[tuple[str, bytes, str]], pool: Executor) -> None:
        """Write many objects, `(key, data, kind)` each, at once on `pool`'s threads, recorded as
        artifacts by the next transaction: fenced as `put` is (one lease check before the batch),
        for a bulk sample job's images."""
        self._prove_lease()
        writes = [pool.submit(self._send, key, data) for key, data, _ in objects]
        for write in writes:
            write.result()
        for key, data, kind in objects:
            self._listed(key, kind, len(data))

    def write_metrics_jsonl(self) -> None:
        """Write metrics.jsonl whole, once, at the job's end, then remove the segments that
        checkpoints wrote meanwhile (`write_metrics_segment`). Its points: the store's (every
        attempt's, and those an evaluation recorded on a train job) with this run's not yet written
        (the end's metrics, progress kept through an outage), which the job's final transaction
        writes (`finish`). A read of the store, not a transaction of its own: the object's write is
        fenced as every object write is (`put`)."""

        def history() -> list[db.Metric]:
            with self.sessions() as s:  # one statement: no transaction around it
                s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                return db.metric_history(s, self.job_id)

        stored = self.database.call(history)
        # As their writes will (`db.record_metrics`): a pending point replaces the point of its name
        # and step written before it, stored or pending, and comes after the others of its step.
        pending: dict[tuple[int, str], tuple[int, str, float, datetime]] = {}
        for step, values, when in self._pending:
            for name, value in values.items():
                pending.pop((step, name), None)
                pending[(step, name)] = (step, name, float(value), when)
        points = [(m.step, m.name, m.value, m.time) for m in stored if (m.step, m.name) not in pending]
        points += pending.values()
        points.sort(key=lambda point: point[0])  # stable: within a step, in the order written
        body = "".join(_metric_line(*point) + "\n" for point in points)
        self.put(metrics_key(self.job_id), body.encode(), kind="metrics")
        self.settle()  # a checkpoint on its way may write a segment
        if self._segments:  # none when this run started the job and wrote none
            segments = self.read(lambda: self.objects.list(metrics_segments_prefix(self.job_id)))
            self.delete_objects(segments)

    def write_metrics_segment(self, first: int, last: int) -> None:
        """The metric points of steps `first` to `last` (the last checkpoint's step + 1 to this
        one's) as one segment object: each checkpoint writes only the points since the one before,
        never the whole history again."""

        def lines(s: Session) -> list[str]:
            found = s.scalars(
                select(db.Metric)
                .where(db.Metric.job_id == self.job_id, db.Metric.step >= first, db.Metric.step <= last)
                .order_by(db.Metric.step, db.Metric.id)
            )
            return [_metric_line(m.step, m.name, m.value, m.time) for m in found]

        rows = self.write(lines)
        body = "".join(row + "\n" for row in rows).encode()
        self._segments = True
        self.put(metrics_segment_key(self.job_id, first), body, kind="metrics")

    def pend_metrics(self, step: int, values: dict[str, float]) -> None:
        """Metric points of this job at `step`, written with its next progress write or transaction
        that flushes (`_flush`: a heartbeat, a checkpoint) or with its end (`finish`), as progress
        points are; metrics.jsonl lists them either way."""
        self._pending.append((step, dict(values), db.utcnow()))

    def record_metrics(self, step: int, values: dict[str, float], *, job_ids: list[str]) -> None:
        """Metric points on `job_ids` (an evaluation's land on its train job too), fenced by this
        job's lease and retried."""

        def record(s: Session) -> None:
            for job_id in dict.fromkeys(job_ids):
                db.record_metrics(s, job_id, step=step, values=values, token=self.token, holder=self.job_id)

        self.write(record)

    def resume_from(self, step: int | None) -> None:
        """A resumed attempt drops the metric points a dead attempt recorded past its checkpoint
        (`step`; None: no checkpoint, it starts over), so no step shows twice."""
        if self.fresh:
            return  # no attempt before this one: no points
        dropped = self.write(
            lambda s: db.clear_metrics_after(
                s, self.job_id, step=-1 if step is None else step, token=self.token
            )
        )
        if dropped:
            log.info("job %s: dropped %d metric points past step %s", self.job_id, dropped, step)

    def finish(self, state: str, error: str | None) -> None:
        """Record the final state, with the progress, metric points and log lines not yet written,
        and a last line naming the state (the process logs it once this commits, not collected
        again)."""

        def record(s: Session) -> None:
            self._write_points(s)
            self._write_log(s, last=joblogs.Line(db.utcnow(), "INFO", state))
            db.finish_job(s, self.job_id, state=state, error=error, token=self.token, step=self._pending_step)

        self.write(record)
        self._pending.clear()
        self._pending_step = None

    def close_log(self) -> None:
        """Best effort, once the run is over: the lines logged after its last write (its end), only
        while this attempt is still the job's current one."""
        if self.joblog is None:
            return
        try:
            self._in_session(self._write_log)
        except Exception as exc:  # the database is out, or a newer attempt holds the job
            logging.getLogger(__name__).debug("job %s: last log lines not written (%s)", self.job_id, exc)

    # -- liveness and cancel ------------------------------------------------------------------
    def heartbeat(self, step: int | None = None) -> None:
        """Record that the job is alive (and its step, when given), and read whether it was cancelled.
        While the database is out, the step is kept and written later."""
        if step is not None:
            self._pending_step = step
        self._report()

    def should_stop(self) -> bool:
        # Polled every step; the DB is read at most once per poll_seconds, so a cancel lands
        # within about a second of being requested. While the database is out: the last answer.
        if self.stopping():
            return True
        if not self._cancel and time.monotonic() - self._last_poll >= self.poll_seconds:
            self._report()
        return self._cancel

    # -- callbacks for the training loop ----------------------------------------------------
    def progress(self, step: int, metrics: dict[str, float]) -> None:
        self._pending.append((step, dict(metrics), db.utcnow()))
        self._pending_step = step
        self._report()

    def checkpoint(
        self,
        step: int,
        data: bytes,
        *,
        keep: int = 0,
        keep_every: int = 0,
        best: tuple[str, float] | None = None,
        final: bool = False,
        later: bool = False,
    ) -> None:
        """Write checkpoint `step`, then the manifest that names it, then delete the checkpoints
        retention no longer keeps (`keep` newest, 0: all, and multiples of `keep_every`), never the
        manifest's `best`. `best`: (eval metric, value) when this checkpoint is the new best by it;
        otherwise the manifest keeps the best it had. `final`: the run's last step, whose points
        metrics.jsonl holds next (no segment for them).

        The checkpoint is proven there at its size before the manifest names it, and the manifest
        is read back, so a manifest never names an object that is not there; either write is
        retried (within GANTRY_RETRY_SECONDS) when it fails or does not land. Checkpoints are
        deleted only after the manifest that drops them is written: never the one it names.

        `later`: these writes are made on a thread of the run (`_Later`'s checkpoint lane, in order)
        while training goes on (the bytes are the step's, taken before); a failure is raised by the run's
        next hand-over or `settle`. The checkpoint before it, and every write handed over before,
        have landed first, so one checkpoint's bytes at most wait in memory. What reads the job's
        checkpoints or manifest back settles first (`manifest`, `write_manifest`, `delete_objects`,
        `checkpoint_bytes`, the stray-checkpoint sweep)."""
        if self._pending or self._pending_step is not None:
            self.flush()  # progress kept through an outage lands before the checkpoint that covers it
        self.settle()
        write = partial(
            self._write_checkpoint, step, data, keep=keep, keep_every=keep_every, best=best, final=final
        )
        if later:
            self._later.submit(write, lane="checkpoints")
        else:
            write()

    def _write_checkpoint(
        self,
        step: int,
        data: bytes,
        *,
        keep: int,
        keep_every: int,
        best: tuple[str, float] | None,
        final: bool,
    ) -> None:
        try:
            previous = self.manifest()  # (on a lane's thread `settle` waits for nothing)
        except ValueError as exc:  # not a manifest (a resume rewrites such a one before this)
            log.warning("job %s: the manifest does not parse (%s); writing a new one", self.job_id, exc)
            previous = None
        named = previous.checkpoints() if previous else ()
        older = [e for e in named if e.step < step]  # a step checkpointed again replaces its entry
        # Named but past this step: left by a run this one resumed from before them (none after a
        # resume that skipped a checkpoint: it moves the manifest back first).
        abandoned = [e.key for e in named if e.step > step]
        # Its own key: a write of an attempt fenced out meanwhile lands beside it, never on it.
        key = checkpoint_key(self.job_id, step, attempt=self.token)
        # Named at this step under another attempt's key (one before this, fenced out or dead):
        # this checkpoint replaces it.
        replaced = [e.key for e in named if e.step == step and e.key != key]
        uri = self.put_checked(key, data, kind="checkpoint")
        # The points since the checkpoint before, written before the manifest moves past them: a run
        # that resumes from that checkpoint rewrites this segment (same first step) if this one dies.
        if not final:
            self.write_metrics_segment(older[0].step + 1 if older else 0, step)
        entry = CheckpointEntry(step=step, key=key, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        kept, dropped = retain([entry, *older], keep=keep, every=keep_every)
        best_checkpoint = previous.best if previous else None
        if best is not None:
            best_checkpoint = BestCheckpoint(**entry.model_dump(), metric=best[0], value=best[1])
        elif best_checkpoint is not None and best_checkpoint.step == step and best_checkpoint.key == key:
            # This attempt wrote its step again (the same weights): the best names the new bytes.
            best_checkpoint = BestCheckpoint(
                **entry.model_dump(), metric=best_checkpoint.metric, value=best_checkpoint.value
            )
        elif best_checkpoint is not None and best_checkpoint.step >= step:
            best_checkpoint = None  # past this step (abandoned) or replaced by this one: not the best
        if best_checkpoint is not None:
            dropped = [e for e in dropped if e.key != best_checkpoint.key]
            abandoned = [k for k in abandoned if k != best_checkpoint.key]
        manifest = Manifest(
            step=step,
            key=key,
            uri=uri,
            bytes=len(data),
            time=db.utcnow(),
            sha256=entry.sha256,
            history=tuple(kept[1:]),
            best=best_checkpoint,
        )
        # Checked against the lease right before it is written: a fenced-out attempt never moves it.
        self.write_manifest(manifest, proven=True)
        self.delete_objects([e.key for e in dropped] + abandoned + replaced)
        log.info("job %s: checkpoint at step %d -> %s", self.job_id, step, uri)

    def write_manifest(self, manifest: Manifest, *, proven: bool = False) -> None:
        """Write the manifest, once the checkpoint it names is proven there at its size (`proven`:
        the caller just wrote it with `put_checked`), and read it back (`put_checked`).

        The manifest is one key per job: an attempt fenced out right after its lease check can
        still land one manifest write. Its checkpoint is its own attempt's, which no other attempt
        writes over (the key carries the attempt), so it is whole; an older one it names that the
        holder's retention deleted meanwhile is skipped by a reader as missing; and the holder's
        next checkpoint replaces that manifest."""
        self.settle()
        size = manifest.bytes if proven else self.read(partial(_size, self.objects, manifest.key))
        if size != manifest.bytes:
            raise GantryError(
                f"checkpoint {manifest.key} holds {'nothing' if size is None else f'{size} bytes'}, "
                f"not {manifest.bytes} bytes: the manifest is left naming the one before"
            )
        self.put_checked(manifest_key(self.job_id), manifest.dump(), kind="manifest", read_back=True)
        self._manifest = manifest

    def put_checked(self, key: str, data: bytes, *, kind: str, read_back: bool = False) -> str:
        """`put`, then prove the object is there: at its size, or (`read_back`) read back equal. An
        object that did not land (a store that answered success and kept nothing, a truncated
        upload) counts as a failed write and is written again, within GANTRY_RETRY_SECONDS."""

        def write_and_check() -> str:
            uri = self.objects.put_bytes(key, data)
            try:
                if read_back:
                    landed = self.objects.get_bytes(key) == data
                    found = "other bytes"
                else:
                    size = self.objects.size(key)
                    landed, found = size == len(data), f"{size} bytes"
            except ObjectNotFound:
                landed, found = False, "nothing"
            if not landed:
                raise ServiceUnavailable(
                    "object storage", f"{key}: wrote {len(data)} bytes, found {found}", transient=True
                )
            return uri

        self._prove_lease()
        uri = self.storage.call(write_and_check, between=self._keep_lease)
        self._listed(key, kind, len(data))
        return uri

    def delete_objects(self, keys: list[str]) -> None:
        """Delete objects this job wrote (retention, metric segments), fenced and retried: their
        artifact records go first, so no record names a deleted object. After the writes handed
        over (one of them may be a checkpoint's, which moves the manifest)."""
        self.settle()
        if not keys:
            return
        if manifest_key(self.job_id) in keys:
            self._manifest = None

        def forget(s: Session) -> None:
            db.check_lease(s, self.job_id, token=self.token)
            s.execute(delete(db.Artifact).where(db.Artifact.job_id == self.job_id, db.Artifact.key.in_(keys)))

        self.write(forget)
        for key in keys:
            self.storage.call(partial(self.objects.delete, key), between=self._keep_lease)
        log.info("job %s: deleted %d objects (%s)", self.job_id, len(keys), ", ".join(keys))

    def samples(self, step: int, png: bytes) -> None:
        self.put_later(samples_key(self.job_id, step), png, kind="samples")

    # -- another train job's checkpoints (sample, evaluate, a run that starts from one) ------
    def checkpoint_bytes(self, train_job_id: str, ref: str) -> tuple[bytes, int]:
        """The bytes and step of checkpoint `ref` (latest, best or a step) of train job `train_job_id`:
        `latest` falls back past one that does not load, with a warning on this job; a step that
        does not load fails it (gantry.worker.checkpoints). This job's own: after the checkpoints
        handed over (a train job's end-of-training metrics read its final weights from the loop,
        `TrainOutcome.final_state`, not from here)."""
        if train_job_id == self.job_id:
            self.settle()
        return checkpoints.checkpoint_bytes(self, train_job_id, ref)


def _metric_line(step: int, name: str, value: float, when: datetime) -> str:
    return json.dumps({"step": step, "name": name, "value": value, "time": db.aware(when).isoformat()})


def _size(objects: ObjectStore, key: str) -> int | None:
    try:
        return objects.size(key)
    except ObjectNotFound:
        return None


class _Connections:
    """This process's engine (its pool of connections) and object store, made at its first job and
    kept for the next ones: a new engine per job cost a connection, a schema check and an S3 client
    (about 20 ms before the claim). Keyed by the settings that name them; the few most recent are
    kept (a test process runs jobs of many stores). A child forked from a process that made them
    makes its own: a connection is never shared across a fork."""

    keep = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._made: dict[tuple[str, str, str | None], tuple[sessionmaker[Session], ObjectStore]] = {}

    def get(self, settings: Settings) -> tuple[sessionmaker[Session], ObjectStore]:
        key = (settings.database, settings.storage, settings.s3_endpoint_url)
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections stay the parent's
                self._drop(list(self._made), close=False)
                self._pid = os.getpid()
            made = self._made.pop(key, None)
            if made is None:
                sessions = db.connect(settings.database)
                made = (sessions, open_store(settings.storage, endpoint_url=settings.s3_endpoint_url))
            self._made[key] = made  # the most recent last
            self._drop(list(self._made)[: -self.keep])
            return made

    def clear(self) -> None:
        """Close and forget them all (the next job makes its own)."""
        with self._lock:
            self._drop(list(self._made))

    def _drop(self, keys: list[tuple[str, str, str | None]], *, close: bool = True) -> None:
        for key in keys:
            sessions, _ = self._made.pop(key)
            engine = getattr(sessions, "kw", {}).get("bind")
            if engine is not None:
                engine.dispose(close=close)


CONNECTIONS = _Connections()


def warm_connections() -> None:
    """Make this process's engine and object store now, on a thread, ahead of its first job (which
    otherwise spent about 0.2 s on them before its claim): for a pool process as it starts (Celery's
    `worker_process_init`, which must return within seconds, so not on it). Whatever fails is left
    to that job, which makes its own and retries as any job does."""

    def warm() -> None:
        try:
            CONNECTIONS.get(get_settings())
        except Exception as exc:  # the first job meets it again and says why
            log.debug("connections not made ahead of the first job: %s", exc)

    threading.Thread(target=warm, name="gantry-warm-connections", daemon=True).start()


def device() -> Any:
    """The torch device a job runs on: the GPU when there is one."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_job(
    job_id: str,
    *,
    settings: Settings | None = None,
    token: int | None = None,
    outage_since: float | None = None,
    stop: Shutdown = SHUTDOWN,
    send: Callable[[str, str], None] | None = None,
) -> str | None:
    """Claim and run one job; returns its final state (None when it was not ours to run, or this
    attempt lost its lease and stopped; "queued" when it was handed back).

    `token`: the lease token of the attempt that a retried task goes on with (see RetryLater);
    `outage_since`: when the outage that handed it back began. A transient infrastructure error
    that outlasts the retries raises RetryLater, the row left `running` for the retried task (or,
    if that is lost, the lease's expiry) to take over. Any other error fails the job with its
    reason and traceback, and is not retried. A database at another schema revision than this
    code's raises WrongSchema before the claim, the job left as it was.

    `stop`: this process's stop request (SIGTERM sets the worker's); a job stopped by it is handed
    back and `send(kind, job_id)` sends its message again (None, or a failed send: the reaper sends
    it after GANTRY_REQUEUE_SECONDS).
    """
    settings = settings or get_settings()
    since = outage_since

    def hand_back(exc: BaseException, service: str, token: int | None) -> RetryLater:
        log.warning("job %s: %s unavailable (%s); handed back for a later retry", job_id, service, exc)
        return RetryLater(job_id, service, token, since or time.time(), exc)

    try:
        sessions, objects = CONNECTIONS.get(settings)
        with db.session_scope(sessions) as s:
            db.check_schema(s)  # connected long ago, maybe before a newer gantry's `db upgrade`
            job = db.claim_job(
                s,
                job_id,
                worker=db.worker_name(),
                lease_seconds=settings.lease_seconds,
                token=token,
                max_attempts=settings.max_attempts,
            )
            if job is None:
                log.info("job %s: not claimed (finished, cancelled or failed)", job_id)
                return None
            kind, spec_data, parent, attempt = job.kind, dict(job.spec), job.parent_job_id, job.attempt
            fresh = job.first_start
    except Exception as exc:
        if (service := transient_service(exc)) is not None:
            raise hand_back(exc, service, token) from exc
        raise
    ctx = JobContext(
        job_id=job_id,
        sessions=sessions,
        objects=objects,
        settings=settings,
        token=attempt,
        outage_since=since,
        fresh=fresh,
    )
    ctx.stopping = stop.requested
    with collecting(job_id) as ctx.joblog:
        try:
            return _run_claimed(ctx, kind, spec_data, parent, stop=stop, send=send, hand_back=hand_back)
        finally:
            ctx._later.close()  # none left after a run that recorded its end; else waited for here
            ctx.close_log()


def _run_claimed(
    ctx: JobContext,
    kind: str,
    spec_data: dict[str, Any],
    parent: str | None,
    *,
    stop: Shutdown,
    send: Callable[[str, str], None] | None,
    hand_back: Callable[[BaseException, str, int | None], RetryLater],
) -> str | None:
    """`run_job` once the job is claimed: run its phase and record how it ended."""
    # Imported here, not at the top: each phase module imports this one.
    from gantry.worker.evaluate import evaluate_job
    from gantry.worker.sample import sample_job
    from gantry.worker.train import train_job

    job_id, attempt, settings, since = ctx.job_id, ctx.token, ctx.settings, ctx.outage_since
    log.info("job %s: %s attempt %d started", job_id, kind, attempt)
    try:
        # Every job keeps its validated spec beside its objects (docs/architecture.md, "Object layout").
        ctx.put_later(spec_key(job_id), json.dumps(spec_data, indent=2).encode(), kind=None)
        if kind == "train":
            state = "succeeded" if train_job(ctx, load_train_spec(spec_data)) else "cancelled"
        elif kind == "sample":
            assert parent is not None
            sample_job(ctx, SampleSpec.model_validate(spec_data), parent)
            state = "succeeded"
        elif kind == "evaluate":
            assert parent is not None
            evaluate_job(ctx, EvaluateSpec.model_validate(spec_data), parent)
            state = "succeeded"
        else:
            raise GantryError(f"job kind {kind!r} is not supported by this worker")
        ctx.settle()  # its objects written are part of the run's success
        error = None
    except LeaseLost:
        log.warning("job %s: attempt %d lost its lease to a newer attempt; stopped", job_id, attempt)
        return None
    except Stopped:
        state, error = "cancelled", None
    except Exception as exc:
        service = transient_service(exc)
        if service is not None and time.time() - (since or time.time()) < settings.retry_seconds:
            # An outage met outside the retried writes (a read, a data download): hand it back.
            raise hand_back(exc, service, attempt) from exc
        log.exception("job %s failed", job_id)
        state, error = "failed", f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
    ctx.settle(quiet=True)  # a run that failed or stopped: what it handed over lands before its end
    if state == "cancelled" and not ctx._cancel and stop.requested():
        return _hand_back(ctx, kind, send)
    try:
        ctx.finish(state, error)
    except LeaseLost:
        log.warning("job %s: attempt %d lost its lease before recording %s", job_id, attempt, state)
        return None
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, ServiceUnavailable) and exc.__cause__ else exc
        if (service := transient_service(cause)) is not None:
            raise hand_back(cause, service, attempt) from exc
        raise
    log.info("job %s: %s", job_id, state, extra=JOBLOG_WRITTEN)  # the job's log has it (`finish`)
    return state


def _hand_back(ctx: JobContext, kind: str, send: Callable[[str, str], None] | None) -> str | None:
    """A job stopped by the worker's stop request (its checkpoint written) goes back to the queue
    as the same attempt: this run has ended, and this is its last write."""
    try:
        ctx.write(lambda s: db.hand_back(s, ctx.job_id, token=ctx.token))
    except LeaseLost:
        log.warning("job %s: attempt %d lost its lease before handing back", ctx.job_id, ctx.token)
        return None
    log.info("job %s: handed back, the worker is stopping", ctx.job_id)
    _send(send, kind, ctx.job_id)
    return "queued"


def hand_back_late(job_id: str, *, settings: Settings, send: Callable[[str, str], None] | None) -> bool:
    """The stop watchdog, GANTRY_STOP_SECONDS after the stop request, while the run goes on: the
    job that this process holds goes back to the queue without a new checkpoint, with attempt + 1
    so that the run's later writes are refused. True when it was handed back."""
    try:
        with db.session_scope(db.connect(settings.database)) as s:
            kind = db.hand_back(s, job_id, holder=db.worker_name(), fence_out=True)
    except LeaseLost:
        return False  # the run ended meanwhile, or this process never held it
    except Exception:
        log.exception("job %s: could not be handed back", job_id)
        return False
    log.warning(
        "job %s: no checkpoint within GANTRY_STOP_SECONDS (%.0f s); handed back without it",
        job_id,
        settings.stop_seconds,
    )
    _send(send, kind, job_id)
    return True


def _send(send: Callable[[str, str], None] | None, kind: str, job_id: str) -> None:
    if send is None:
        return
    try:
        send(kind, job_id)
    except Exception as exc:
        log.warning(
            "job %s: its message could not be sent (%s); the reaper sends it after GANTRY_REQUEUE_SECONDS",
            job_id,
            type(exc).__name__,
        )
