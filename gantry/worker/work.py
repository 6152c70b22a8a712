"""The work functions behind the Celery tasks: plain functions of a job id and the settings.

`run_job` claims the job's row, runs its trainer or sampler with callbacks that report progress
and metrics to the SQL store and write checkpoints and images to object storage, and records how
it ended. Tests and benchmarks call these without Celery.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gantry.jobs import store as db
from gantry.jobs.datasets import DATASETS
from gantry.jobs.errors import GantryError, ServiceUnavailable
from gantry.jobs.keys import (
    Manifest,
    checkpoint_key,
    eval_key,
    image_key,
    manifest_key,
    metrics_key,
    samples_key,
    spec_key,
)
from gantry.jobs.settings import Settings, get_settings
from gantry.jobs.specs import METRICS, EvaluateSpec, SampleSpec, TrainSpec, load_train_spec
from gantry.jobs.storage import ObjectNotFound, ObjectStore, fetch_to_local, open_store
from gantry.worker.errors import Stopped as _Stopped

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

    # -- callbacks for the training loop ----------------------------------------------------
    def progress(self, step: int, metrics: dict[str, float]) -> None:
        with db.session_scope(self.sessions) as s:
            db.record_metrics(s, self.job_id, step=step, values=metrics)
            self._cancel = db.heartbeat(s, self.job_id, step=step)
        self._last_poll = time.monotonic()

    def should_stop(self) -> bool:
        # Polled every step; the DB is read at most once per poll_seconds, so a cancel lands
        # within about a second of being requested.
        if not self._cancel and time.monotonic() - self._last_poll >= self.poll_seconds:
            with db.session_scope(self.sessions) as s:
                self._cancel = db.heartbeat(s, self.job_id)
            self._last_poll = time.monotonic()
        return self._cancel

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


def _device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_data(spec: TrainSpec, settings: Settings, scratch: Path) -> Any:
    from gantry.worker.data import load_dataset

    source = spec.dataset
    if source not in DATASETS:
        source = str(fetch_to_local(source, scratch, endpoint_url=settings.s3_endpoint_url))
    # Models that crop whole images (super-resolution) ask for them at their own sizes.
    return load_dataset(source, image_size=spec.image_size, seed=spec.seed, full_size=spec.full_size_data)


def train_job(ctx: JobContext, spec: TrainSpec) -> bool:
    """Train (or resume) a job; True when it ran to the end, False when it was stopped."""
    from gantry.worker.gan.loop import Callbacks, train

    ctx.objects.put_bytes(spec_key(ctx.job_id), spec.model_dump_json(indent=2).encode())
    manifest = read_manifest(ctx.objects, ctx.job_id)
    resume = ctx.objects.get_bytes(manifest.key) if manifest else None
    if manifest:
        log.info("job %s: resuming from step %d", ctx.job_id, manifest.step)
    with tempfile.TemporaryDirectory(prefix="gantry-data-") as scratch:
        data = _load_data(spec, ctx.settings, Path(scratch))
    callbacks = Callbacks(
        progress=ctx.progress, should_stop=ctx.should_stop, checkpoint=ctx.checkpoint, samples=ctx.samples
    )
    # A run may start its G from another train job's checkpoint (srgan's init_from).
    init_from = spec.starts_from()
    init = _checkpoint_bytes(ctx, init_from, "latest")[0] if init_from and not resume else None
    outcome = train(spec, data, callbacks=callbacks, resume=resume, init=init, device=_device())
    if not outcome.stopped and (names := spec.metric_names(auto=True)):
        run_metrics(ctx, names, train_job_id=ctx.job_id, spec=EvaluateSpec(seed=spec.seed))
    ctx.write_metrics_jsonl()
    return not outcome.stopped


def _checkpoint_bytes(ctx: JobContext, parent_job_id: str, ref: str) -> tuple[bytes, int]:
    found = resolve_checkpoint(ctx.objects, parent_job_id, ref)
    if found is None:
        raise GantryError(f"job {parent_job_id} has no checkpoint {ref!r}")
    key, step = found
    return ctx.objects.get_bytes(key), step


def sample_job(ctx: JobContext, spec: SampleSpec, parent_job_id: str) -> None:
    """Make what a sample job asks for: plain samples, an interpolation, latent arithmetic,
    images for prompts, or super-resolved inputs; written under `jobs/<id>/images/`."""
    checkpoint, _ = _checkpoint_bytes(ctx, parent_job_id, spec.checkpoint)
    device = _device()
    if spec.input:
        from gantry.worker.sr.upscale import super_resolve_input

        result = super_resolve_input(checkpoint, spec.input, settings=ctx.settings, device=device)
    elif spec.interpolate:
        from gantry.worker.gan.latent import interpolate

        a, b = (int(s) for s in spec.interpolate.split(":"))
        result = interpolate(
            checkpoint,
            seed_a=a,
            seed_b=b,
            frames=spec.frames,
            method=spec.interpolation,
            prompts=spec.prompts,
            device=device,
            code_walk=spec.code_walk,
        )
    elif spec.arithmetic:
        from gantry.worker.gan.latent import arithmetic

        result = arithmetic(
            checkpoint,
            spec.arithmetic,
            count=spec.count,
            seed=spec.seed,
            prompts=spec.prompts,
            device=device,
            code_walk=spec.code_walk,
        )
    elif spec.prompts:
        from gantry.worker.gan.text_sampler import sample_prompts

        result = sample_prompts(
            checkpoint, prompts=spec.prompts, count=spec.count, seed=spec.seed, device=device
        )
    else:
        from gantry.worker.gan.sampler import sample

        result = sample(checkpoint, count=spec.count, seed=spec.seed, device=device)
    names = result.names or [f"{i:06d}.png" for i in range(len(result.images))]
    for i, (name, png) in enumerate(zip(names, result.images, strict=True)):
        ctx.put(image_key(ctx.job_id, name), png, kind="image")
        if ctx.should_stop():
            raise _Stopped
        if i % 16 == 0:
            with db.session_scope(ctx.sessions) as s:
                db.heartbeat(s, ctx.job_id, step=i)
    for name, data in result.extra.items():
        ctx.put(image_key(ctx.job_id, name), data, kind="image" if name.endswith(".png") else "data")
    if result.grid is not None:
        ctx.put(image_key(ctx.job_id, "grid.png"), result.grid, kind="grid")
    with db.session_scope(ctx.sessions) as s:
        # A 2-D model's samples are one points.npy, not one image each: all `count` were made.
        db.heartbeat(s, ctx.job_id, step=len(result.images) or spec.count)


def run_metrics(
    ctx: JobContext, names: list[str], *, train_job_id: str, spec: EvaluateSpec
) -> dict[str, float]:
    """Compute `names` on a train job's checkpoint; record them on `ctx`'s job and the train job."""
    from gantry.worker.metrics import EvalContext, evaluate_each

    with db.session_scope(ctx.sessions) as s:
        train_spec = load_train_spec(dict(db.get_job(s, train_job_id).spec))
    checkpoint, step = _checkpoint_bytes(ctx, train_job_id, spec.checkpoint)
    eval_ctx = EvalContext(
        checkpoint=checkpoint,
        step=step,
        train_spec=train_spec,
        spec=spec,
        device=_device(),
        save=lambda name, data: ctx.put(eval_key(ctx.job_id, name), data, kind="evaluation"),
        should_stop=ctx.should_stop,
        progress=lambda done, total: ctx.should_stop(),  # its DB poll is the heartbeat (throttled)
    )
    values: dict[str, float] = {}
    for i, (name, got) in enumerate(evaluate_each(names, eval_ctx)):
        # Read with another --code-walk than the train job's: the values it changes are named apart.
        got = {METRICS[name].reading_key(key, spec.code_walk): value for key, value in got.items()}
        values.update(got)
        if ctx.should_stop():
            raise _Stopped
        with db.session_scope(ctx.sessions) as s:
            # Metrics done is an evaluate job's progress; a train job (auto metrics) keeps its step.
            db.heartbeat(s, ctx.job_id, step=i + 1 if ctx.job_id != train_job_id else None)
    with db.session_scope(ctx.sessions) as s:
        for job_id in dict.fromkeys([ctx.job_id, train_job_id]):
            db.record_metrics(s, job_id, step=step, values=values)
    return values


def evaluate_job(ctx: JobContext, spec: EvaluateSpec, parent_job_id: str) -> None:
    with db.session_scope(ctx.sessions) as s:
        names = load_train_spec(dict(db.get_job(s, parent_job_id).spec)).resolve_metrics(spec.metrics)
    run_metrics(ctx, names, train_job_id=parent_job_id, spec=spec)
    ctx.write_metrics_jsonl()


def run_job(job_id: str, *, settings: Settings | None = None) -> str | None:
    """Claim and run one job; returns its final state (None when it was not ours to run).

    Transient infrastructure errors (ServiceUnavailable) propagate for the task to retry, the row
    left `running`: the retried or redelivered task takes it over and resumes. Any other error
    fails the job with its reason and traceback, and is not retried.
    """
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
    except _Stopped:
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
