"""The service layer: submit, read, cancel and download jobs. The CLI and the HTTP app call this;
it never imports torch or the worker (embedded mode reaches the worker through Celery's task
registry, see `gantry.jobs.queue.run_in_process`)."""

from __future__ import annotations

import getpass
import logging
import time
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gantry.api.schemas import ArtifactView, JobView, MetricPoint, Progress
from gantry.jobs import store as db
from gantry.jobs.datasets import DATASETS
from gantry.jobs.errors import InvalidInput, ServiceUnavailable, transient_service
from gantry.jobs.keys import checkpoint_key, job_prefix, manifest_key
from gantry.jobs.queue import check_broker, check_worker_installed, enqueue, make_celery, run_in_process
from gantry.jobs.requeue import Requeued, requeue_pass
from gantry.jobs.settings import Settings
from gantry.jobs.specs import (
    TrainSpec,
    load_train_spec,
    parse_evaluate_spec,
    parse_sample_spec,
    parse_train_spec,
)
from gantry.jobs.storage import ObjectStore, open_store, safe_join, safe_relative_key, uri_exists

log = logging.getLogger(__name__)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Service:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

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

    # -- submitting ------------------------------------------------------------------------
    def submit_train(self, model: str, *, options: dict[str, Any] | None = None, **fields: Any) -> JobView:
        """Validate and record a train job, then queue it (or leave it for `run_embedded`)."""
        spec = parse_train_spec(model, {k: v for k, v in fields.items() if v is not None}, options or {})
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
        """(model, spec) of train job `job_id` if it exists and has a checkpoint, else None."""
        with db.session_scope(self.sessions) as s:
            job = s.get(db.Job, job_id)
            if job is None or job.kind != "train":
                return None
            model, spec = job.model, dict(job.spec)
        return (model, spec) if self._has_checkpoint(job_id, "latest") else None

    def submit_sample(self, job_id: str, **fields: Any) -> JobView:
        """Validate and record a sample job from train job `job_id`'s checkpoint."""
        spec = parse_sample_spec({k: v for k, v in fields.items() if v is not None and v != ()})
        train_spec = self._parent(job_id, spec.checkpoint)
        train_spec.check_sample(spec)  # modes, --code-walk and prompts the model takes
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
        with db.session_scope(self.sessions) as s:
            parent = db.get_job(s, job_id)
            if parent.kind != "train":
                raise InvalidInput("job_id", f"job {job_id} is a {parent.kind} job; use a train job")
            stored, state = dict(parent.spec), parent.state
        if not self._has_checkpoint(job_id, checkpoint):
            raise InvalidInput(
                "checkpoint", f"job {job_id} has no checkpoint {checkpoint!r} yet (state: {state})"
            )
        return load_train_spec(stored)

    def _has_checkpoint(self, job_id: str, ref: str) -> bool:
        if ref == "latest":
            return self.objects.exists(manifest_key(job_id))
        return self.objects.exists(checkpoint_key(job_id, int(ref)))

    def _submit(
        self, kind: str, *, model: str, spec: dict[str, Any], total_steps: int, parent: str | None
    ) -> JobView:
        if self.settings.embedded:
            check_worker_installed()
        else:
            check_broker(self.celery, self.settings.broker_url or "")
        with db.session_scope(self.sessions) as s:
            job = db.create_job(
                s,
                kind=kind,
                model=model,
                spec=spec,
                total_steps=total_steps,
                parent_job_id=parent,
                owner=_owner(),
            )
            job_id = job.id
        if not self.settings.embedded:
            enqueue(self.celery, kind, job_id)
            log.info("queued %s job %s", kind, job_id)
        return self.get(job_id)

    def run_embedded(self, job: JobView) -> None:
        """Embedded mode: run a submitted job in this process (blocks until it ends)."""
        run_in_process(self.celery, job.kind, job.id)

    # -- reading ---------------------------------------------------------------------------
    def get(self, job_id: str) -> JobView:
        with db.session_scope(self.sessions) as s:
            return self._view(s, db.get_job(s, job_id))

    def list_jobs(self, *, state: str | None = None, limit: int = 50) -> list[JobView]:
        with db.session_scope(self.sessions) as s:
            return [
                self._view(s, job, with_artifacts=False) for job in db.list_jobs(s, state=state, limit=limit)
            ]

    def metrics(self, job_id: str) -> list[MetricPoint]:
        with db.session_scope(self.sessions) as s:
            db.get_job(s, job_id)
            return [
                MetricPoint(name=m.name, step=m.step, value=m.value, time=_utc(m.time))  # type: ignore[arg-type]
                for m in db.metric_history(s, job_id)
            ]

    def cancel(self, job_id: str) -> JobView:
        with db.session_scope(self.sessions) as s:
            db.request_cancel(s, job_id)
        return self.get(job_id)

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


def _owner() -> str | None:
    try:
        return getpass.getuser()
    except Exception:
        return None
