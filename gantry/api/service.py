"""The service layer: submit, read, cancel and download jobs. The CLI and the HTTP app call this;
it never imports torch or the worker at import time (embedded mode imports the work function when
it runs a job).

A service that cannot be reached (the database, the broker, object storage) is always reported as
ServiceUnavailable, naming it without its password, never as the driver's own exception."""

from __future__ import annotations

import getpass
import importlib
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from sqlalchemy.orm import Session, raiseload, sessionmaker

from gantry.api import files
from gantry.api.schemas import ArtifactView, JobPage, JobView, LogLine, MetricPoint, Progress, TokenView
from gantry.jobs import accounts, joblogs, reads
from gantry.jobs import store as db
from gantry.jobs.accounts import Caller
from gantry.jobs.datasets import DATASETS
from gantry.jobs.errors import (
    GantryError,
    InvalidInput,
    JobFailed,
    JobNotFound,
    ServiceUnavailable,
    Throttled,
    transient_service,
)
from gantry.jobs.keys import (
    Manifest,
    checkpoint_step_prefix,
    checkpoints_at,
    job_prefix,
    manifest_key,
    upload_prefix,
)
from gantry.jobs.queue import check_broker, check_worker_installed, enqueue, make_celery
from gantry.jobs.requeue import Requeued, requeue_pass
from gantry.jobs.settings import Settings
from gantry.jobs.specs import (
    MODELS,
    TrainSpec,
    first_error,
    load_train_spec,
    parse_evaluate_spec,
    parse_sample_spec,
    parse_train_spec,
)
from gantry.jobs.storage import (
    ObjectNotFound,
    ObjectStore,
    check_storage,
    endpoint_name,
    open_store,
    safe_join,
    safe_relative_key,
    uri_exists,
)

log = logging.getLogger(__name__)

SERVICES_CHECK_SECONDS = 5.0


class _Shared:
    """What a service and all its scoped copies share, made on first use: the engine and its pool,
    the object store, the Celery app (and so its pool of broker connections). One per process: a
    copy made per HTTP request must never build its own."""

    def __init__(self, settings: Settings, engine_options: dict[str, Any]) -> None:
        self.settings, self.engine_options = settings, engine_options
        self._lock = threading.Lock()
        # When the services were last found usable (monotonic time); see Service._check_services.
        self.services_ok_at = float("-inf")
        self.services_lock = threading.Lock()
        self.on_revoke: list[Callable[[], None]] = []  # see Service.on_revoke

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        # A new SQLite store (the embedded default) gets its schema here, on first use.
        with self._lock:  # one engine, whichever request comes first
            return db.connect(self.settings.database, create_sqlite=True, **self.engine_options)

    @cached_property
    def reads(self) -> sessionmaker[Session]:
        return db.autocommit(self.sessions)

    @cached_property
    def objects(self) -> ObjectStore:
        return open_store(self.settings.storage, endpoint_url=self.settings.s3_endpoint_url)

    @cached_property
    def celery(self):  # type: ignore[no-untyped-def]
        with self._lock:
            return make_celery(self.settings)


class Service:
    """What every front end calls. `caller` is who an HTTP request acts for (None: the CLI on the
    operator's machine, which reaches the store directly and sees every job): a non-admin caller
    sees and acts on its own jobs only, and another owner's job is JobNotFound, exactly as a
    missing one; its submissions are held to the API's limits and data rules (docs/api.md).

    `engine_options`: for the database's engine (`gantry.jobs.store.make_engine`); the HTTP app
    sizes the pool to its threads."""

    def __init__(
        self,
        settings: Settings,
        caller: Caller | None = None,
        *,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.caller = caller
        self._shared = _Shared(settings, engine_options or {})

    def scoped(self, caller: Caller | None) -> Service:
        """This service acting for `caller`, sharing its connections (one per HTTP request)."""
        other = Service.__new__(Service)
        other.__dict__.update(self.__dict__)
        other.caller = caller
        return other

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self._shared.sessions

    @property
    def read_sessions(self) -> sessionmaker[Session]:
        """Sessions for reads only, in autocommit (see `_read`)."""
        return self._shared.reads

    @property
    def objects(self) -> ObjectStore:
        return self._shared.objects

    @property
    def celery(self):  # type: ignore[no-untyped-def]
        return self._shared.celery

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A transaction; a database that stops answering raises ServiceUnavailable."""
        with self._unavailable(), db.session_scope(self.sessions) as s:
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A session for reads only: each statement on its own (no BEGIN or COMMIT round trips),
        which under READ COMMITTED sees what a transaction's statements would see each."""
        with self._unavailable(), self.read_sessions() as s:
            yield s

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """A database that stops answering raises ServiceUnavailable."""
        try:
            yield
        except GantryError:
            raise
        except Exception as exc:
            down = unavailable(exc, self.settings)
            if down is None:
                raise
            raise down from None

    def _job(self, s: Session, job_id: str, *, tags: bool = True) -> db.Job:
        """Job `job_id` as the caller may see it: every lookup of a job by its id goes through here.
        Another owner's job does not exist for a non-admin caller (the same JobNotFound, so ids
        cannot be probed). `tags=False`: its tags are not loaded (reading `job.tags` raises), saving a
        query where they are not needed or read otherwise."""
        job = s.get(db.Job, job_id, options=() if tags else [raiseload(db.Job.tag_rows)])
        if job is None or not self._may_see(job.owner):
            raise JobNotFound(job_id)
        return job

    def _may_see(self, owner: str | None) -> bool:
        """Whether the caller may see a job of `owner`."""
        return self.caller is None or self.caller.admin or owner == self.caller.owner

    def require(self, job_id: str) -> None:
        """JobNotFound unless the caller may see job `job_id`: one query, for a check alone."""
        with self._read() as s:
            self._job(s, job_id, tags=False)

    @property
    def _owner_filter(self) -> str | None:
        """The owner whose jobs a listing shows; None: every owner's."""
        return self.caller.owner if self.caller is not None and not self.caller.admin else None

    # -- submitting ------------------------------------------------------------------------
    def submit_train(
        self,
        model: str,
        *,
        options: dict[str, Any] | None = None,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        **fields: Any,
    ) -> JobView:
        """Validate and record a train job, then queue it (or leave it for `run_embedded`).
        `init_from` (a field): a train job whose G and D weights this one starts from."""
        labels = _labels(name, tags)
        spec = parse_train_spec(model, {k: v for k, v in fields.items() if v is not None}, options or {})
        if self.caller is not None:
            self._check_api_data("dataset", spec.dataset)
            if spec.steps * spec.batch_size > self.settings.api_max_train_images:
                raise InvalidInput(
                    "steps",
                    f"steps x batch_size = {spec.steps * spec.batch_size:,} is over this service's "
                    f"bound of {self.settings.api_max_train_images:,} images (GANTRY_API_MAX_TRAIN_IMAGES)",
                )
        if spec.dataset not in DATASETS and not uri_exists(
            spec.dataset, endpoint_url=self.settings.s3_endpoint_url
        ):
            builtin = ", ".join(sorted(DATASETS))
            raise InvalidInput(
                "dataset",
                f"{spec.dataset!r} is not a built-in data set ({builtin}) nor an existing path or URI",
            )
        spec.check_inception_weights(self.settings.inception_weights is not None)
        # Options that name a file or another job (e.g. a run to start from) are checked by the
        # spec itself, with lookups that only the service has.
        spec.check_references(
            train_job=self._train_job_with_checkpoint,
            exists=lambda uri: uri_exists(uri, endpoint_url=self.settings.s3_endpoint_url),
        )
        return self._submit(
            "train",
            model=model,
            spec=spec.model_dump(mode="json"),
            total_steps=spec.steps,
            parent=None,
            **labels,
        )

    def _train_job_with_checkpoint(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        """(model, spec) of train job `job_id` if it exists (for this caller) and has a checkpoint,
        else None."""
        with self._read() as s:
            try:
                job = self._job(s, job_id, tags=False)
            except JobNotFound:
                return None
            if job.kind != "train":
                return None
            model, spec = job.model, dict(job.spec)
        return (model, spec) if self._has_checkpoint(job_id, "latest") else None

    def submit_sample(
        self,
        job_id: str,
        *,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        **fields: Any,
    ) -> JobView:
        """Validate and record a sample job from train job `job_id`'s checkpoint."""
        labels = _labels(name, tags)
        spec = parse_sample_spec({k: v for k, v in fields.items() if v is not None and v != ()})
        train_spec = self._parent(job_id, spec.checkpoint)
        train_spec.check_sample(spec)  # modes, --code-walk and prompts the model takes
        if self.caller is not None:
            if spec.input:
                self._check_api_data("input", spec.input)
            if spec.total_images() > self.settings.api_max_sample_images:
                raise InvalidInput(
                    "count",
                    f"the job would make {spec.total_images():,} images, over this service's bound of "
                    f"{self.settings.api_max_sample_images:,} (GANTRY_API_MAX_SAMPLE_IMAGES)",
                )
        if spec.input and not uri_exists(spec.input, endpoint_url=self.settings.s3_endpoint_url):
            raise InvalidInput("input", f"{spec.input!r} does not exist")
        return self._submit(
            "sample",
            model=train_spec.model,
            spec=spec.model_dump(mode="json"),
            total_steps=spec.total_images(),
            parent=job_id,
            **labels,
        )

    def submit_evaluate(
        self,
        job_id: str,
        *,
        name: str | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        **fields: Any,
    ) -> JobView:
        """Validate and record an evaluation of train job `job_id`'s checkpoint."""
        labels = _labels(name, tags)
        spec = parse_evaluate_spec({k: v for k, v in fields.items() if v is not None and v != ()})
        train_spec = self._parent(job_id, spec.checkpoint)
        names = train_spec.resolve_metrics(
            spec.metrics, inception_weights=self.settings.inception_weights is not None
        )
        if spec.code_walk:
            train_spec.check_code_walk(spec.code_walk)
        return self._submit(
            "evaluate",
            model=train_spec.model,
            spec=spec.model_dump(mode="json"),
            total_steps=len(names),
            parent=job_id,
            **labels,
        )

    def _parent(self, job_id: str, checkpoint: str) -> TrainSpec:
        """The spec of train job `job_id`, after checking it has checkpoint `checkpoint`."""
        with self._read() as s:
            parent = self._job(s, job_id, tags=False)
            if parent.kind != "train":
                raise InvalidInput("job_id", f"job {job_id} is a {parent.kind} job; use a train job")
            stored, state = dict(parent.spec), parent.state
        train_spec = load_train_spec(stored)
        if not self._has_checkpoint(job_id, checkpoint):
            why = f"yet (state: {state})"
            if checkpoint == "best" and not train_spec.options.eval_every:
                why = "(it trained without --set eval_every=N, which keeps the best checkpoint by a metric)"
            raise InvalidInput("checkpoint", f"job {job_id} has no checkpoint {checkpoint!r} {why}")
        return train_spec

    def _has_checkpoint(self, job_id: str, ref: str) -> bool:
        """Whether train job `job_id` has checkpoint `ref`: a manifest for `latest`, one that names a
        best for `best` (`eval_every`); for a step, a
        checkpoint listed at it (its key names the attempt that wrote it, so it is listed, not
        guessed). Whether it loads is the worker's to find out."""
        if ref == "latest":
            return self.objects.exists(manifest_key(job_id))
        if ref == "best":  # named by the manifest once an evaluation during training found one
            try:
                return Manifest.parse(self.objects.get_bytes(manifest_key(job_id))).best is not None
            except (ObjectNotFound, ValueError):
                return False
        step = int(ref)
        return bool(checkpoints_at(self.objects.list(checkpoint_step_prefix(job_id, step)), job_id, step))

    def _check_api_data(self, field: str, uri: str) -> None:
        """Through the API, data is a built-in data set, one of the caller's uploads, or an s3:// URI
        under a prefix the operator allows: never a path on the machine a worker runs on."""
        if field == "dataset" and uri in DATASETS:
            return
        own = self.objects.uri(upload_prefix(self._caller_owner)) + "/"
        allowed = [own, *self.settings.data_prefixes]
        plain = "\\" not in uri and ".." not in uri.split("/") and "%" not in uri
        if plain and any(uri.startswith(p if p.endswith("/") else p + "/") for p in allowed):
            return
        named = ", ".join(self.settings.data_prefixes) or "none (GANTRY_ALLOWED_DATA_PREFIXES is unset)"
        builtin = f"a built-in data set ({', '.join(sorted(DATASETS))}), " if field == "dataset" else ""
        raise InvalidInput(
            field,
            f"{uri!r} is not allowed through the API: use {builtin}one of your uploads (POST /v1/datasets, "
            f"under {own}) or an s3:// URI under an allowed prefix ({named}); paths on the server are "
            "never read",
        )

    @property
    def _caller_owner(self) -> str:
        return self.caller.owner if self.caller is not None else (_owner() or "local")

    def _check_quota(self, s: Session) -> None:
        """An owner holds at most GANTRY_API_MAX_ACTIVE_JOBS queued + running jobs through the API."""
        if self.caller is None:
            return
        active = db.count_active_jobs(s, owner=self.caller.owner)
        if active >= self.settings.api_max_active_jobs:
            raise Throttled(
                f"{self.caller.owner} has {active} queued or running jobs, this service's limit "
                f"(GANTRY_API_MAX_ACTIVE_JOBS); submit again when one ends",
                retry_after=30,
            )

    def _check_services(self) -> None:
        """Refuse, before anything is recorded, what would leave the job with nowhere to run or to
        write: no worker packages (embedded mode) or no broker, and object storage that is missing,
        refused or unreachable. A success holds for a few seconds, so a busy API does not open a
        broker connection and ask S3 for its bucket on every submission (an enqueue that fails
        after all is handled by `_enqueue`)."""
        shared = self._shared
        if time.monotonic() - shared.services_ok_at < SERVICES_CHECK_SECONDS:
            return
        with shared.services_lock:  # one check at a time; those that waited take its success
            if time.monotonic() - shared.services_ok_at < SERVICES_CHECK_SECONDS:
                return
            if self.settings.embedded:
                check_worker_installed()
            else:
                check_broker(self.celery, self.settings.broker_url or "")
            check_storage(self.settings.storage, endpoint_url=self.settings.s3_endpoint_url)
            shared.services_ok_at = time.monotonic()

    def _enqueue(self, kind: str, job_id: str) -> None:
        """Send the job's message. When the broker does not take it, the row would wait for a
        message that never comes: it is ended `failed` with the reason (kept, not deleted, so that a
        message that did reach the broker finds a finished job and runs nothing)."""
        try:
            enqueue(self.celery, kind, job_id)
        except ServiceUnavailable as exc:
            reason = f"not queued: {exc}; nothing ran (`gantry resume {job_id}` queues it again)"
            try:
                with self._session() as s:
                    db.fail_queued_job(s, job_id, error=reason)
            except ServiceUnavailable:
                log.warning("job %s: could not record that it was not queued", job_id)
            raise ServiceUnavailable(
                exc.service, f"{str(exc).partition(': ')[2]}; job {job_id} was not queued and is ended failed"
            ) from None
        log.info("queued %s job %s", kind, job_id)

    def _submit(
        self,
        kind: str,
        *,
        model: str,
        spec: dict[str, Any],
        total_steps: int,
        parent: str | None,
        name: str | None,
        tags: list[str],
    ) -> JobView:
        self._check_services()
        with self._session() as s:
            self._check_quota(s)
            job = db.create_job(
                s,
                kind=kind,
                model=model,
                spec=spec,
                total_steps=total_steps,
                parent_job_id=parent,
                owner=self._caller_owner,
                name=name,
                tags=tags,
            )
        if not self.settings.embedded:
            self._enqueue(kind, job.id)
        # A new job has no artifacts nor metrics: its view needs no second read.
        return self._view(job, reads.JobDetails(tags=sorted(tags)))

    def resume(self, job_id: str, *, steps: int | None = None) -> JobView:
        """Queue a failed or cancelled job again (attempt + 1); a train job continues from its last
        checkpoint. `steps`: a train job's new total, more than its checkpoint's step and within
        its spec's bounds. Embedded mode leaves it for `run_embedded`."""
        if steps is not None:
            self._check_steps(job_id, steps)
        self._check_services()
        with self._session() as s:
            self._job(s, job_id)
            self._check_quota(s)
            kind = db.reopen_job(s, job_id, steps=steps).kind
        if not self.settings.embedded:
            self._enqueue(kind, job_id)
        return self.get(job_id)

    def _check_steps(self, job_id: str, steps: int) -> None:
        with self._read() as s:
            job = self._job(s, job_id, tags=False)
            kind, stored = job.kind, dict(job.spec)
        if kind != "train":
            raise InvalidInput("steps", f"job {job_id} is a {kind} job; --steps changes a train job's total")
        try:
            load_train_spec({**stored, "steps": steps})
        except ValidationError as exc:
            raise first_error(exc) from None
        reached = self._checkpoint_step(job_id)
        if reached is not None and steps <= reached:
            raise InvalidInput(
                "steps",
                f"{steps}: job {job_id}'s last checkpoint is at step {reached}; give more steps than that",
            )

    def _checkpoint_step(self, job_id: str) -> int | None:
        """The step of the checkpoint the job's manifest names; None when it has none."""
        if not self.objects.exists(manifest_key(job_id)):
            return None
        try:
            return Manifest.parse(self.objects.get_bytes(manifest_key(job_id))).step
        except ValueError:
            return None  # the worker's resume finds the newest checkpoint that loads

    # -- embedded mode ---------------------------------------------------------------------
    def run_embedded(self, job: JobView) -> str:
        """Embedded mode: run a submitted job in this process with this service's settings; blocks
        until it ends and returns its final state.

        Every way out ends the job: its own failure is recorded `failed` by the work function; an
        unreachable service ends it `failed` with the reason and raises ServiceUnavailable (nothing
        else would retry it; `gantry resume` continues it from its last checkpoint); an interrupt
        ends it `cancelled`. Should even that write fail (the database is what went away), the row
        names this process, and the next gantry command on this host ends it
        (`end_dead_embedded_jobs`)."""
        # Reached by name, as a Celery worker reaches it: torch and the worker load only when a job
        # runs here, and the API's type checks stop at this boundary.
        run_job: Callable[..., str | None] = importlib.import_module("gantry.worker.run").run_job
        try:
            state = run_job(job.id, settings=self.settings)
        except (KeyboardInterrupt, SystemExit):
            self._end_own_job(job.id, "cancelled", "interrupted while it ran in embedded mode")
            raise
        except Exception as exc:
            down = unavailable(exc, self.settings)
            if down is not None:
                self._end_own_job(
                    job.id,
                    "failed",
                    f"{down}. In embedded mode nothing retries it: `gantry resume {job.id}` continues it "
                    "from its last checkpoint once the service is back",
                )
                raise down from None
            self._end_own_job(job.id, "failed", f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
            raise JobFailed(f"job {job.id} failed: {type(exc).__name__}: {exc}") from exc
        ended = self.get(job.id)
        if ended.state == "failed" and (down := _outage_in(ended.error)) is not None:
            # An outage that outlasted GANTRY_RETRY_SECONDS, recorded by the work function.
            raise ServiceUnavailable(
                down.service,
                f"{str(down).partition(': ')[2]}; job {job.id} ended failed: `gantry resume {job.id}` "
                "continues it from its last checkpoint once the service is back",
            )
        return state or ended.state

    def stop_now(self, job_id: str) -> None:
        """End job `job_id` `cancelled` now, if this process runs it (a second Ctrl-C: it does not
        wait for the job's final checkpoint)."""
        self._end_own_job(
            job_id, "cancelled", "stopped at once (a second interrupt), without a final checkpoint"
        )

    def _end_own_job(self, job_id: str, state: str, error: str) -> None:
        """End job `job_id` as `state` if this process still holds it (best effort: the database
        may be what failed)."""
        try:
            with self._session() as s:
                job = s.get(db.Job, job_id)
                if job is not None and job.state == "running" and job.worker == db.worker_name():
                    db.end_held_job(
                        s, job_id, holder=job.worker, attempt=job.attempt, state=state, error=error
                    )
        except Exception:
            log.warning("job %s: could not record it as %s", job_id, state, exc_info=True)

    def end_dead_embedded_jobs(self) -> list[str]:
        """Embedded mode: end `failed` the running jobs whose gantry process on this host is gone
        (killed, say, with SIGKILL): its pid no longer runs, or runs another program. Their
        checkpoints are kept; `gantry resume` continues them. Queued mode leaves such jobs to the
        workers, which take them over. Returns the ids it ended."""
        if not self.settings.embedded:
            return []
        ended = []
        with self._session() as s:
            for job in db.running_on_host(s, socket.gethostname()):
                if not db.holder_is_gone(job, lease_seconds=self.settings.lease_seconds):
                    continue
                error = (
                    f"the gantry process that ran it ({job.worker}) ended without finishing it "
                    f"(killed?); its checkpoints are kept: `gantry resume {job.id}` continues it"
                )
                if db.end_held_job(
                    s, job.id, holder=job.worker, attempt=job.attempt, state="failed", error=error
                ):
                    log.warning("job %s: %s", job.id, error)
                    ended.append(job.id)
        return ended

    # -- reading ---------------------------------------------------------------------------
    def get(self, job_id: str) -> JobView:
        """The job: one query for its row, artifacts, tags and latest metrics (the `_view` of a
        Core row, which has the columns as `db.Job` has them)."""
        engine = self.read_sessions.kw["bind"]
        with self._unavailable(), engine.connect() as s:
            # A plain connection and Core, not an ORM session (a read needs no identity map; the
            # most frequent request of all, a client polling its job); who may see it is `_job`'s rule.
            row, details = reads.job_and_details(s, job_id)
        if row is None or not self._may_see(row.owner):
            raise JobNotFound(job_id)
        return self._view(row, details)  # type: ignore[arg-type]

    def list_jobs(
        self,
        *,
        state: str | None = None,
        kind: str | None = None,
        model: str | None = None,
        tag: str | None = None,
        parent: str | None = None,
        since: datetime | date | str | None = None,
        until: datetime | date | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Jobs newest first, filtered, a page at a time: pass `next_cursor` back as `cursor`.
        `since` and `until` are ISO dates or times (UTC unless they say): a date `until` takes in
        that whole day."""
        start, end = _moment("since", since), _moment("until", until, end_of_day=True)
        with self._read() as s:
            jobs, next_cursor = db.list_jobs(
                s,
                state=state,
                kind=kind,
                model=model,
                models=sorted(MODELS),
                tag=tag,
                parent=parent,
                since=start,
                until=end,
                owner=self._owner_filter,
                limit=limit,
                cursor=cursor,
            )
            # A page's tags come with its jobs (one query); its metrics in one more; no artifacts.
            metrics = reads.latest_metrics_of(s, [job.id for job in jobs])
            views = [
                self._view(job, reads.JobDetails(metrics=metrics.get(job.id, {}), tags=job.tags))
                for job in jobs
            ]
        return JobPage(jobs=views, next_cursor=next_cursor)

    def logs(self, job_id: str, *, since_id: int | None = None) -> list[LogLine]:
        """The job's log: its own lines and the infrastructure errors it met (gantry.jobs.joblogs),
        in order; `since_id`: only the lines after that one (a follower's next read)."""
        with self._read() as s:
            self._job(s, job_id, tags=False)
            return [
                LogLine(
                    id=row.id,
                    attempt=row.attempt,
                    time=db.aware(row.time),
                    level=row.level,
                    message=row.message,
                )
                for row in joblogs.read(s, job_id, since_id=since_id)
            ]

    def deletion(self, job_id: str, *, recursive: bool = False) -> list[str]:
        """The ids `delete` would remove (children first), after checking that it may: what a
        confirmation shows."""
        with self._session() as s:
            return self._deletable(s, self._job(s, job_id), recursive=recursive)

    def delete(self, job_id: str, *, recursive: bool = False) -> None:
        """Remove a finished job: its objects under jobs/<id>/ first, then its rows (so a storage
        outage leaves it whole, to delete again). A queued or running job is refused (cancel it
        first); so is a train job that sample or evaluate jobs name as their parent, unless
        `recursive`, which deletes them with it (each must be finished)."""
        for doomed in self.deletion(job_id, recursive=recursive):
            prefix = job_prefix(doomed) + "/"
            for key in self.objects.list(prefix):
                self.objects.delete(key)
            with self._session() as s:
                db.delete_job_rows(s, doomed)
            log.info("job %s: deleted", doomed)

    def _deletable(self, s: Session, job: db.Job, *, recursive: bool) -> list[str]:
        """The ids to delete for `job` (its children first), after checking each may go."""
        if job.state not in db.TERMINAL:
            raise InvalidInput(
                "job_id",
                f"job {job.id} is {job.state}: cancel it first (`gantry cancel {job.id}`), then delete",
            )
        order: list[str] = []
        kids = db.children(s, job.id)
        if kids and not recursive:
            named = ", ".join(k.id for k in kids[:5]) + (" ..." if len(kids) > 5 else "")
            raise InvalidInput(
                "recursive",
                f"jobs {named} were made from job {job.id}; delete them first, or all together with --recursive",
            )
        for kid in kids:
            order += self._deletable(s, kid, recursive=recursive)
        return [*order, job.id]

    def metrics(self, job_id: str) -> list[MetricPoint]:
        with self._read() as s:
            self._job(s, job_id, tags=False)
            return [
                MetricPoint(name=m.name, step=m.step, value=m.value, time=db.aware(m.time))
                for m in db.metric_history(s, job_id)
            ]

    def cancel(self, job_id: str) -> JobView:
        """Queued jobs are cancelled at once; a running one stops at its next progress check, or at
        once when its worker is gone (nothing would ever read the request)."""
        with self._session() as s:
            self._job(s, job_id)
            job = db.request_cancel(s, job_id)
            if job.state == "running" and db.holder_is_gone(job, lease_seconds=self.settings.lease_seconds):
                db.end_held_job(
                    s,
                    job_id,
                    holder=job.worker,
                    attempt=job.attempt,
                    state="cancelled",
                    error=f"cancelled after its worker ({job.worker}) was gone",
                )
        return self.get(job_id)

    # -- probes ----------------------------------------------------------------------------
    def readiness(self) -> dict[str, str | None]:
        """Each service this API needs -> None when it answers, else what is wrong (no secret)."""
        checks: dict[str, str | None] = {}
        try:
            found = db.schema_revision(self.sessions.kw["bind"])
            checks["database"] = (
                None
                if found == db.SCHEMA_REVISION
                else f"at schema revision {found}, this gantry needs {db.SCHEMA_REVISION}: gantry db upgrade"
            )
        except GantryError as exc:
            checks["database"] = str(exc)
        except Exception as exc:
            checks["database"] = str(unavailable(exc, self.settings) or type(exc).__name__)
        if not self.settings.embedded:
            try:
                check_broker(self.celery, self.settings.broker_url or "")
                checks["broker"] = None
            except GantryError as exc:
                checks["broker"] = str(exc)
        try:
            check_storage(self.settings.storage, endpoint_url=self.settings.s3_endpoint_url)
            checks["storage"] = None
        except GantryError as exc:
            checks["storage"] = str(exc)
        return checks

    # -- accounts (the operator's CLI; the HTTP app only authenticates) ------------------------
    def authenticate(self, token: str) -> Caller | None:
        """The caller `token` stands for; None when it is unknown, expired or revoked. Read from the
        store each call (the HTTP API keeps what it found for GANTRY_API_AUTH_CACHE_SECONDS)."""
        with self._read() as s:
            return accounts.authenticate(s, token)

    def create_token(self, owner: str, *, admin: bool = False, expires: str | None = None) -> TokenView:
        expires_at = accounts.parse_expiry(expires)
        with self._session() as s:
            row, token = accounts.create_token(s, owner=owner, admin=admin, expires_at=expires_at)
            return _token_view(row, token=token)

    def list_tokens(self) -> list[TokenView]:
        with self._session() as s:
            return [_token_view(row) for row in accounts.list_tokens(s)]

    def revoke_token(self, token_id: str) -> TokenView:
        with self._session() as s:
            revoked = _token_view(accounts.revoke_token(s, token_id))
        for forget in self._shared.on_revoke:
            forget()
        return revoked

    def on_revoke(self, forget: Callable[[], None]) -> None:
        """Call `forget` after this process revokes a token (the API's cache of checked tokens)."""
        self._shared.on_revoke.append(forget)

    def requeue(self, *, stale: bool = False) -> Requeued:
        """Rebuild the queue from the store: send the message of every queued job not on the queue
        and, with `stale`, first queue again the running jobs whose lease ran out (attempt + 1).
        The SQL rows decide; a message sent twice is harmless (see gantry.jobs.requeue)."""
        if self.settings.embedded:
            raise InvalidInput(
                "GANTRY_BROKER_URL",
                "is unset: embedded mode has no queue (jobs run where they are submitted)",
            )
        check_broker(self.celery, self.settings.broker_url or "")
        lease = self.settings.lease_seconds if stale else None
        for _ in range(20):  # a reaper's pass takes a moment: wait for its lock
            try:
                done = requeue_pass(self.sessions, self.celery, lease_seconds=lease, resend_after=0)
            except Exception as exc:
                if (service := transient_service(exc)) is None:
                    raise
                raise ServiceUnavailable(service, f"requeue failed ({type(exc).__name__})") from None
            if not done.skipped:
                return done
            time.sleep(0.5)
        raise ServiceUnavailable("database", "another reaper held the requeue lock for 10 s; try again")

    def download(self, job_id: str, to: Path) -> list[Path]:
        """Copy every object under `jobs/<id>/` to `to`, keeping the layout.

        Every key is checked before anything is written: one that would land outside `to` (`..`,
        absolute, backslash, empty or percent-encoded segments) raises InvalidInput naming it.
        """
        self.get(job_id)
        prefix = job_prefix(job_id) + "/"
        keys = self.objects.list(prefix)
        relative = [safe_relative_key(key, prefix) for key in keys]
        for rel in relative:
            safe_join(to, rel)
        paths = [to / rel for rel in relative]
        for key, target in zip(keys, paths, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.objects.get_bytes(key))
        return paths

    # -- artifacts and uploads (gantry.api.files; docs/api.md, "Artifacts" and "Uploads") ------
    def artifacts(self, job_id: str) -> list[files.ArtifactFile]:
        """Every object of job `job_id`: what `download` copies, each with its kind and size."""
        with self._read() as s:
            self._job(s, job_id, tags=False)
            recorded = {a.key: (a.kind, a.bytes) for a in db.list_artifacts(s, job_id)}
        return files.job_files(self.objects, job_id, recorded)

    def open_artifact(self, job_id: str, key: str) -> files.ArtifactSource:
        """Where to read artifact `key` (exactly as `artifacts` lists it) of job `job_id`: a local
        file, or a presigned S3 URL that lives GANTRY_API_ARTIFACT_URL_SECONDS. Any other key, or an
        artifact of another owner's job, is JobNotFound (404)."""
        listed = {f.key: f for f in self.artifacts(job_id)}
        if key not in listed:
            raise files.ArtifactNotFound(job_id, key)
        return files.open_file(
            self.objects, job_id, listed[key], url_seconds=self.settings.api_artifact_url_seconds
        )

    def check_new_dataset(self, name: str) -> str:
        """The key upload `name` of the caller would have; InvalidInput when the name is not allowed
        or taken (an upload is never replaced: jobs that name it keep their data)."""
        key = files.dataset_key(self._caller_owner, name)
        if self.objects.exists(key):
            raise InvalidInput(
                "name", f"you already have an upload named {name!r}; upload under another name or delete it"
            )
        return key

    def add_dataset(self, name: str, path: Path) -> files.DatasetView:
        """Store local file `path` (a .zip or .npz, checked first) as the caller's upload `name`;
        the answer's `dataset` is the URI a train job takes."""
        key = self.check_new_dataset(name)
        files.check_archive(path, name, self.settings)
        digest = files.sha256_of(path)
        uri = self.objects.put_file(key, path)
        log.info("%s uploaded %s (%d bytes)", self._caller_owner, key, path.stat().st_size)
        return files.DatasetView(
            name=name, owner=self._caller_owner, dataset=uri, bytes=path.stat().st_size, sha256=digest
        )

    def datasets(self) -> list[files.DatasetView]:
        """The caller's uploads (every owner's for an admin), by owner and name."""
        owner = self._owner_filter
        prefix = (upload_prefix(owner) if owner is not None else "uploads") + "/"
        found = []
        for key in self.objects.list(prefix):
            who, _, name = key.removeprefix("uploads/").partition("/")
            try:
                size = self.objects.size(key)
            except ObjectNotFound:
                continue
            found.append(files.DatasetView(name=name, owner=who, dataset=self.objects.uri(key), bytes=size))
        return found

    def delete_dataset(self, name: str) -> None:
        """Remove the caller's upload `name` (jobs queued on it will fail to read it)."""
        key = files.dataset_key(self._caller_owner, name)
        if not self.objects.exists(key):
            raise files.DatasetNotFound(name)
        self.objects.delete(key)

    def _artifact_uri(self, job_id: str, key: str) -> str:
        """Where a caller reads an artifact: through the HTTP API its route (relative to the API's
        URL; the storage behind it is the server's business), else the object's own URI."""
        if self.caller is not None:
            return api_artifact_uri(job_id, key)
        return self.objects.uri(key)

    def _view(self, job: db.Job, details: reads.JobDetails) -> JobView:
        """Job `job` as every front end shows it, with `details` read apart from its row."""
        return JobView(
            id=job.id,
            kind=job.kind,
            model=job.model,
            state=job.state,
            attempt=job.attempt,
            progress=Progress(step=job.step, total_steps=job.total_steps),
            metrics=details.metrics,
            error=job.error,
            artifacts=[
                ArtifactView(key=key, uri=self._artifact_uri(job.id, key), kind=kind, bytes=size)
                for key, kind, size in details.artifacts
            ],
            created_at=db.aware(job.created_at),
            started_at=db.aware(job.started_at),
            finished_at=db.aware(job.finished_at),
            parent_job_id=job.parent_job_id,
            spec=dict(job.spec),
            name=job.name,
            tags=details.tags,
        )


def api_artifact_uri(job_id: str, key: str) -> str:
    """An artifact's route in the HTTP API (GET /v1/jobs/{id}/artifacts/{key}), relative to the API's
    URL: what API callers see as its `uri`, and the dashboard's links (read with its cookie)."""
    return f"/v1/jobs/{quote(job_id, safe='')}/artifacts/{quote(key, safe='/')}"


def as_api_view(job: JobView) -> JobView:
    """`job` as an API caller sees it (read by an unscoped service): artifacts at their routes."""
    artifacts = [a.model_copy(update={"uri": api_artifact_uri(job.id, a.key)}) for a in job.artifacts]
    return job.model_copy(update={"artifacts": artifacts})


def unavailable(exc: BaseException, settings: Settings) -> ServiceUnavailable | None:
    """`exc` as ServiceUnavailable when it says a service cannot be reached (naming the service,
    never its password); None when it is anything else. What counts is the worker's own
    classification of transient errors (`gantry.jobs.errors.transient_service`)."""
    from gantry.jobs.store import describe_url

    if isinstance(exc, ServiceUnavailable):
        # A worker's hand-back after an outage: name what failed rather than the hand-back.
        if exc.transient and exc.__cause__ is not None:
            return unavailable(exc.__cause__, settings) or exc
        return exc
    service = transient_service(exc)
    if service is None:
        return None
    where = {
        "database": describe_url(settings.database),
        "object storage": f"S3 at {endpoint_name(settings.s3_endpoint_url)}",
        "broker": _broker_name(settings.broker_url),
    }.get(service, "a service")
    return ServiceUnavailable(service, f"cannot reach {where} ({type(exc).__name__})", transient=True)


def _outage_in(error: str | None) -> ServiceUnavailable | None:
    """The outage a failed job's recorded error names, if that is why it failed: the work function
    records `<exception type>: <message>`, and an outage that outlasted the retries is a
    ServiceUnavailable whose message starts with the service."""
    first = (error or "").partition("\n")[0]
    kind, _, rest = first.partition(": ")
    service, _, message = rest.partition(": ")
    if kind != ServiceUnavailable.__name__ or not message:
        return None
    return ServiceUnavailable(service, message)


def _broker_name(url: str | None) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url or ""))


def _token_view(row: db.ApiToken, *, token: str | None = None) -> TokenView:
    return TokenView(
        id=row.id,
        owner=row.owner,
        admin=row.admin,
        created_at=db.aware(row.created_at),
        expires_at=db.aware(row.expires_at),
        revoked_at=db.aware(row.revoked_at),
        token=token,
    )


def _labels(name: str | None, tags: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """A job's name and tags, checked before anything is recorded."""
    return {"name": db.check_name(name), "tags": db.check_tags(tags)}


def _moment(field: str, value: datetime | date | str | None, *, end_of_day: bool = False) -> datetime | None:
    """An ISO date or time as an aware UTC datetime (a naive one is UTC). A plain date is its
    midnight, or with `end_of_day` the next midnight, so that `until=DAY` takes in all of DAY."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                field, f"{value!r} is not an ISO date or time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z"
            ) from None
    if not isinstance(value, datetime):
        value = datetime.combine(value + timedelta(days=1 if end_of_day else 0), datetime.min.time())
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _owner() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None
