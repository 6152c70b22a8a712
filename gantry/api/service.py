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
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gantry.api import files
from gantry.api.schemas import ArtifactView, JobView, MetricPoint, Progress, TokenView
from gantry.jobs import accounts
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
from gantry.jobs.keys import checkpoint_step_prefix, checkpoints_at, job_prefix, manifest_key, upload_prefix
from gantry.jobs.queue import check_broker, check_worker_installed, enqueue, make_celery
from gantry.jobs.requeue import Requeued, requeue_pass
from gantry.jobs.settings import Settings
from gantry.jobs.specs import (
    TrainSpec,
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


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Service:
    """What every front end calls. `caller` is who an HTTP request acts for (None: the CLI on the
    operator's machine, which reaches the store directly and sees every job): a non-admin caller
    sees and acts on its own jobs only, and another owner's job is JobNotFound, exactly as a
    missing one; its submissions are held to the API's limits and data rules (docs/api.md)."""

    def __init__(self, settings: Settings, caller: Caller | None = None) -> None:
        self.settings = settings
        self.caller = caller
        # When the services were last found usable (monotonic time), shared with scoped copies.
        self._services_ok_at: list[float] = [float("-inf")]

    def scoped(self, caller: Caller | None) -> Service:
        """This service acting for `caller`, sharing its connections (one per HTTP request)."""
        other = Service.__new__(Service)
        other.__dict__.update(self.__dict__)  # the cached engine, object store and Celery app
        other.caller = caller
        return other

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        # A new SQLite store (the embedded default) gets its schema here, on first use.
        return db.connect(self.settings.database, create_sqlite=True)

    @cached_property
    def objects(self) -> ObjectStore:
        return open_store(self.settings.storage, endpoint_url=self.settings.s3_endpoint_url)

    @cached_property
    def celery(self):  # type: ignore[no-untyped-def]
        return make_celery(self.settings)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A transaction; a database that stops answering raises ServiceUnavailable."""
        try:
            with db.session_scope(self.sessions) as s:
                yield s
        except GantryError:
            raise
        except Exception as exc:
            down = unavailable(exc, self.settings)
            if down is None:
                raise
            raise down from None

    def _job(self, s: Session, job_id: str) -> db.Job:
        """Job `job_id` as the caller may see it: another owner's job does not exist for a
        non-admin caller (the same JobNotFound, so ids cannot be probed)."""
        job = db.get_job(s, job_id)
        if self.caller is not None and not self.caller.admin and job.owner != self.caller.owner:
            raise JobNotFound(job_id)
        return job

    @property
    def _owner_filter(self) -> str | None:
        """The owner whose jobs a listing shows; None: every owner's."""
        return self.caller.owner if self.caller is not None and not self.caller.admin else None

    # -- submitting ------------------------------------------------------------------------
    def submit_train(self, model: str, *, options: dict[str, Any] | None = None, **fields: Any) -> JobView:
        """Validate and record a train job, then queue it (or leave it for `run_embedded`)."""
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
        # Options that name a file or another job (e.g. a run to start from) are checked by the
        # spec itself, with lookups that only the service has.
        spec.check_references(
            train_job=self._train_job_with_checkpoint,
            exists=lambda uri: uri_exists(uri, endpoint_url=self.settings.s3_endpoint_url),
        )
        return self._submit(
            "train", model=model, spec=spec.model_dump(mode="json"), total_steps=spec.steps, parent=None
        )

    def _train_job_with_checkpoint(self, job_id: str) -> tuple[str, dict[str, Any]] | None:
        """(model, spec) of train job `job_id` if it exists (for this caller) and has a checkpoint,
        else None."""
        with self._session() as s:
            try:
                job = self._job(s, job_id)
            except JobNotFound:
                return None
            if job.kind != "train":
                return None
            model, spec = job.model, dict(job.spec)
        return (model, spec) if self._has_checkpoint(job_id, "latest") else None

    def submit_sample(self, job_id: str, **fields: Any) -> JobView:
        """Validate and record a sample job from train job `job_id`'s checkpoint."""
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
        )

    def submit_evaluate(self, job_id: str, **fields: Any) -> JobView:
        """Validate and record an evaluation of train job `job_id`'s checkpoint."""
        spec = parse_evaluate_spec({k: v for k, v in fields.items() if v is not None and v != ()})
        train_spec = self._parent(job_id, spec.checkpoint)
        names = train_spec.resolve_metrics(spec.metrics)
        if spec.code_walk:
            train_spec.check_code_walk(spec.code_walk)
        return self._submit(
            "evaluate",
            model=train_spec.model,
            spec=spec.model_dump(mode="json"),
            total_steps=len(names),
            parent=job_id,
        )

    def _parent(self, job_id: str, checkpoint: str) -> TrainSpec:
        """The spec of train job `job_id`, after checking it has checkpoint `checkpoint`."""
        with self._session() as s:
            parent = self._job(s, job_id)
            if parent.kind != "train":
                raise InvalidInput("job_id", f"job {job_id} is a {parent.kind} job; use a train job")
            stored, state = dict(parent.spec), parent.state
        if not self._has_checkpoint(job_id, checkpoint):
            raise InvalidInput(
                "checkpoint", f"job {job_id} has no checkpoint {checkpoint!r} yet (state: {state})"
            )
        return load_train_spec(stored)

    def _has_checkpoint(self, job_id: str, ref: str) -> bool:
        """Whether train job `job_id` has checkpoint `ref`: a manifest for `latest`; for a step, a
        checkpoint listed at it (its key names the attempt that wrote it, so it is listed, not
        guessed). Whether it loads is the worker's to find out."""
        if ref == "latest":
            return self.objects.exists(manifest_key(job_id))
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
        if time.monotonic() - self._services_ok_at[0] < SERVICES_CHECK_SECONDS:
            return
        if self.settings.embedded:
            check_worker_installed()
        else:
            check_broker(self.celery, self.settings.broker_url or "")
        check_storage(self.settings.storage, endpoint_url=self.settings.s3_endpoint_url)
        self._services_ok_at[0] = time.monotonic()

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
        self, kind: str, *, model: str, spec: dict[str, Any], total_steps: int, parent: str | None
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
            )
            job_id = job.id
        if not self.settings.embedded:
            self._enqueue(kind, job_id)
        return self.get(job_id)

    def resume(self, job_id: str) -> JobView:
        """Queue a failed or cancelled job again (attempt + 1); a train job continues from its last
        checkpoint. Embedded mode leaves it for `run_embedded`."""
        self._check_services()
        with self._session() as s:
            self._job(s, job_id)
            self._check_quota(s)
            kind = db.reopen_job(s, job_id).kind
        if not self.settings.embedded:
            self._enqueue(kind, job_id)
        return self.get(job_id)

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
        with self._session() as s:
            return self._view(s, self._job(s, job_id))

    def list_jobs(self, *, state: str | None = None, limit: int = 50) -> list[JobView]:
        with self._session() as s:
            return [
                self._view(s, job, with_artifacts=False)
                for job in db.list_jobs(s, state=state, limit=limit, owner=self._owner_filter)
            ]

    def metrics(self, job_id: str) -> list[MetricPoint]:
        with self._session() as s:
            self._job(s, job_id)
            return [
                MetricPoint(name=m.name, step=m.step, value=m.value, time=_utc(m.time))  # type: ignore[arg-type]
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
        """The caller `token` stands for; None when it is unknown, expired or revoked."""
        with self._session() as s:
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
            return _token_view(accounts.revoke_token(s, token_id))

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
        with self._session() as s:
            self._job(s, job_id)
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

    def _view(self, s: Session, job: db.Job, *, with_artifacts: bool = True) -> JobView:
        artifacts = []
        if with_artifacts:
            artifacts = [
                ArtifactView(key=a.key, uri=self.objects.uri(a.key), kind=a.kind, bytes=a.bytes)
                for a in db.list_artifacts(s, job.id)
            ]
        return JobView(
            id=job.id,
            kind=job.kind,
            model=job.model,
            state=job.state,
            attempt=job.attempt,
            progress=Progress(step=job.step, total_steps=job.total_steps),
            metrics=db.latest_metrics(s, job.id),
            error=job.error,
            artifacts=artifacts,
            created_at=_utc(job.created_at),  # type: ignore[arg-type]
            started_at=_utc(job.started_at),
            finished_at=_utc(job.finished_at),
            parent_job_id=job.parent_job_id,
            spec=dict(job.spec),
        )


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
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        expires_at=_utc(row.expires_at),
        revoked_at=_utc(row.revoked_at),
        token=token,
    )


def _owner() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None
