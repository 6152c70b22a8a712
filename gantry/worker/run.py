"""The job runner behind the Celery tasks: claim a job, run its phase, record how it ended.

`run_job` claims the job's row (a lease), builds the `JobContext` that the phase functions report
through (progress and heartbeats to the SQL store, checkpoints, samples and other objects to object
storage, each recorded as an artifact), dispatches by kind to `train_job`, `sample_job` or
`evaluate_job`, and records the final state. Tests and benchmarks call these without Celery.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gantry.jobs import store as db
from gantry.jobs.errors import GantryError, ServiceUnavailable
from gantry.jobs.keys import Manifest, checkpoint_key, manifest_key, metrics_key, samples_key
from gantry.jobs.settings import Settings, get_settings
from gantry.jobs.specs import EvaluateSpec, SampleSpec, load_train_spec
from gantry.jobs.storage import ObjectNotFound, ObjectStore, open_store
from gantry.worker.errors import Stopped

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    """What a running job needs: its id, the store, object storage, and throttled DB access."""

    job_id: str
    sessions: sessionmaker[Session]
    objects: ObjectStore
    settings: Settings
    poll_seconds: float = 0.5
    _last_poll: float = field(default=0.0, init=False)
    _cancel: bool = field(default=False, init=False)

    # -- object storage, each write recorded as an artifact --------------------------------
    def put(self, key: str, data: bytes, *, kind: str) -> str:
        uri = self.objects.put_bytes(key, data)
        with db.session_scope(self.sessions) as s:
            db.add_artifact(s, self.job_id, key=key, kind=kind, size=len(data))
        return uri

    def write_metrics_jsonl(self) -> None:
        with db.session_scope(self.sessions) as s:
            rows = db.metric_history(s, self.job_id)
            lines = [
                json.dumps({"step": m.step, "name": m.name, "value": m.value, "time": m.time.isoformat()})
                for m in rows
            ]
        self.put(metrics_key(self.job_id), ("\n".join(lines) + "\n").encode(), kind="metrics")

    # -- liveness and cancel ------------------------------------------------------------------
    def heartbeat(self, step: int | None = None) -> None:
        """Record that the job is alive (and its step, when given), and read whether it was cancelled."""
        with db.session_scope(self.sessions) as s:
            self._cancel = db.heartbeat(s, self.job_id, step=step)
        self._last_poll = time.monotonic()

    def should_stop(self) -> bool:
        # Polled every step; the DB is read at most once per poll_seconds, so a cancel lands
        # within about a second of being requested.
        if not self._cancel and time.monotonic() - self._last_poll >= self.poll_seconds:
            self.heartbeat()
        return self._cancel

    # -- callbacks for the training loop ----------------------------------------------------
    def progress(self, step: int, metrics: dict[str, float]) -> None:
        with db.session_scope(self.sessions) as s:
            db.record_metrics(s, self.job_id, step=step, values=metrics)
            self._cancel = db.heartbeat(s, self.job_id, step=step)
        self._last_poll = time.monotonic()

    def checkpoint(self, step: int, data: bytes) -> None:
        key = checkpoint_key(self.job_id, step)
        uri = self.put(key, data, kind="checkpoint")
        # The manifest is written after the checkpoint it names, so it never points at nothing.
        manifest = Manifest(step=step, key=key, uri=uri, bytes=len(data), time=db.utcnow())
        self.put(manifest_key(self.job_id), manifest.dump(), kind="manifest")
        self.write_metrics_jsonl()
        log.info("job %s: checkpoint at step %d -> %s", self.job_id, step, uri)

    def samples(self, step: int, png: bytes) -> None:
        self.put(samples_key(self.job_id, step), png, kind="samples")

    # -- another train job's checkpoints (sample, evaluate, a run that starts from one) ------
    def checkpoint_bytes(self, train_job_id: str, ref: str) -> tuple[bytes, int]:
        """The bytes and step of checkpoint `ref` (latest or a step) of train job `train_job_id`."""
        found = resolve_checkpoint(self.objects, train_job_id, ref)
        if found is None:
            raise GantryError(f"job {train_job_id} has no checkpoint {ref!r}")
        key, step = found
        return self.objects.get_bytes(key), step


def read_manifest(objects: ObjectStore, job_id: str) -> Manifest | None:
    try:
        return Manifest.parse(objects.get_bytes(manifest_key(job_id)))
    except ObjectNotFound:
        return None


def resolve_checkpoint(objects: ObjectStore, job_id: str, ref: str) -> tuple[str, int] | None:
    """(object key, step) of checkpoint `ref` (latest or a step) of train job `job_id`, or None."""
    if ref == "latest":
        manifest = read_manifest(objects, job_id)
        return (manifest.key, manifest.step) if manifest else None
    step = int(ref)
    key = checkpoint_key(job_id, step)
    return (key, step) if objects.exists(key) else None


def device() -> Any:
    """The torch device a job runs on: the GPU when there is one."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_job(job_id: str, *, settings: Settings | None = None) -> str | None:
    """Claim and run one job; returns its final state (None when it was not ours to run).

    Transient infrastructure errors (ServiceUnavailable) propagate for the task to retry, the row
    left `running`: the retried or redelivered task takes it over and resumes. Any other error
    fails the job with its reason and traceback, and is not retried.
    """
    # Imported here, not at the top: each phase module imports this one.
    from gantry.worker.evaluate import evaluate_job
    from gantry.worker.sample import sample_job
    from gantry.worker.train import train_job

    settings = settings or get_settings()
    sessions = db.connect(settings.database)
    objects = open_store(settings.storage, endpoint_url=settings.s3_endpoint_url)
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker=db.worker_name(), lease_seconds=settings.lease_seconds)
        if job is None:
            log.info("job %s: not claimed (finished, cancelled or running elsewhere)", job_id)
            return None
        kind, spec_data, parent, attempt = job.kind, dict(job.spec), job.parent_job_id, job.attempt
    log.info("job %s: %s attempt %d started", job_id, kind, attempt)
    ctx = JobContext(job_id=job_id, sessions=sessions, objects=objects, settings=settings)
    try:
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
        error = None
    except Stopped:
        state, error = "cancelled", None
    except ServiceUnavailable:
        raise
    except Exception as exc:
        log.exception("job %s failed", job_id)
        state, error = "failed", f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
    with db.session_scope(sessions) as s:
        db.finish_job(s, job_id, state=state, error=error)
    log.info("job %s: %s", job_id, state)
    return state
