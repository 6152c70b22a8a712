"""The train phase: load the data, resume from the job's manifest (or start from another job's
checkpoint), run the shared training loop with the job's callbacks, then its automatic metrics.

A resume takes the newest checkpoint that loads: the manifest's, else the older ones it keeps
(its history, newest first), else any other checkpoint in the job's folder. One that is missing,
truncated or corrupt is skipped with a warning on the job (its log and `warnings.txt`), the manifest
is moved back to the checkpoint resumed from, and what followed that one (the bad checkpoints, the
metric segments past it) is deleted, so the run goes on as if it had stopped there."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantry.jobs import store as db
from gantry.jobs.datasets import DATASETS
from gantry.jobs.keys import (
    CheckpointEntry,
    Manifest,
    checkpoints_prefix,
    is_checkpoint_key,
    manifest_key,
    metrics_segment_key,
    metrics_segments_prefix,
    spec_key,
    warnings_key,
)
from gantry.jobs.settings import Settings
from gantry.jobs.specs import EvaluateSpec, TrainSpec
from gantry.jobs.storage import ObjectNotFound, fetch_to_local
from gantry.worker.evaluate import run_metrics
from gantry.worker.run import JobContext, device, read_manifest

log = logging.getLogger(__name__)


def load_data(spec: TrainSpec, settings: Settings, scratch: Path) -> Any:
    """The job's data set: a built-in one, or a file or folder fetched from its URI into `scratch`."""
    from gantry.worker.data import load_dataset
    from gantry.worker.data.limits import DataLimits

    limits = DataLimits.from_settings(settings)  # checked before memory or disk is spent
    source = spec.dataset
    if source not in DATASETS:
        source = str(
            fetch_to_local(
                source,
                scratch,
                endpoint_url=settings.s3_endpoint_url,
                max_files=limits.max_files,
                max_bytes=limits.max_bytes,
            )
        )
    # Models that crop whole images (super-resolution) ask for them at their own sizes.
    return load_dataset(
        source, image_size=spec.image_size, seed=spec.seed, full_size=spec.full_size_data, limits=limits
    )


def train_job(ctx: JobContext, spec: TrainSpec) -> bool:
    """Train (or resume) a job; True when it ran to the end, False when it was stopped."""
    from gantry.worker.gan.loop import Callbacks, train

    ctx.put_object(spec_key(ctx.job_id), spec.model_dump_json(indent=2).encode())
    found = find_resume(ctx)
    resume = found.data if found else None
    if found:
        log.info("job %s: resuming from step %d", ctx.job_id, found.step)
    # Points an attempt that died recorded past its last checkpoint are recorded again from it.
    ctx.resume_from(found.step if found else None)

    def fetch_and_load() -> Any:
        with tempfile.TemporaryDirectory(prefix="gantry-data-") as scratch:
            return load_data(spec, ctx.settings, Path(scratch))

    data = ctx.read(fetch_and_load)
    options = spec.options

    def checkpoint(step: int, payload: bytes) -> None:
        ctx.checkpoint(step, payload, keep=options.keep_checkpoints, keep_every=options.keep_every)

    callbacks = Callbacks(
        progress=ctx.progress, should_stop=ctx.should_stop, checkpoint=checkpoint, samples=ctx.samples
    )
    # A run may start from another train job's weights (`init_from`: fine-tuning).
    init_from = spec.starts_from()
    init = None
    if init_from and not resume:
        init, at = ctx.checkpoint_bytes(init_from, "latest")
        log.info("job %s: starting from job %s's weights at step %d", ctx.job_id, init_from, at)
    outcome = train(spec, data, callbacks=callbacks, resume=resume, init=init, device=device())
    if not outcome.stopped and (names := spec.metric_names(auto=True)):
        run_metrics(ctx, names, train_job_id=ctx.job_id, spec=EvaluateSpec(seed=spec.seed))
    ctx.write_metrics_jsonl()
    return not outcome.stopped


@dataclass(frozen=True)
class Resume:
    data: bytes
    step: int


def find_resume(ctx: JobContext) -> Resume | None:
    """The newest checkpoint of the job that loads (None: the run starts from step 0). Without a
    manifest the job never checkpointed: it starts over, as it always has."""
    try:
        manifest = ctx.read(lambda: read_manifest(ctx.objects, ctx.job_id))
    except ValueError as exc:  # not a manifest gantry wrote: whole or nothing, so never expected
        problems = [f"the manifest {manifest_key(ctx.job_id)} does not parse ({_first_line(exc)})"]
        manifest = None
    else:
        if manifest is None:
            return None
        problems = []
    bad: list[str] = []  # keys of the checkpoints that did not load
    named = list(manifest.checkpoints()) if manifest else []
    for rank, entry in enumerate(named):
        data, why = _fetch(ctx, entry.key)
        if data is not None:
            why = _differs(entry, data)
        if why is None and data is not None:
            return _resumed(ctx, entry, data, history=tuple(named[rank + 1 :]), problems=problems, bad=bad)
        problems.append(f"checkpoint {entry.key} (step {entry.step}) {why}")
        bad.append(entry.key)
    # Not one the manifest names loads (or it names none): any other checkpoint from before them,
    # newest first, its step read from the checkpoint itself. One past them is left alone: it was
    # written by an attempt that died before it moved the manifest, and is written again.
    tried = {e.key for e in named}
    before = min((e.step for e in named), default=None)
    listed = ctx.read(lambda: ctx.objects.list(checkpoints_prefix(ctx.job_id)))
    for key in sorted((k for k in listed if is_checkpoint_key(k) and k not in tried), reverse=True):
        data, why = _fetch(ctx, key)
        step = None
        if data is not None:
            step, why = _trial_load(data)
        if step is not None and before is not None and step >= before:
            continue
        if step is not None and data is not None:
            entry = CheckpointEntry(
                step=step, key=key, bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
            )
            return _resumed(ctx, entry, data, history=(), problems=problems, bad=bad)
        problems.append(f"checkpoint {key} {why}")
        bad.append(key)
    _warn(ctx, problems, "no checkpoint loads: the run starts over from step 0")
    segments = ctx.read(lambda: ctx.objects.list(metrics_segments_prefix(ctx.job_id)))
    ctx.delete_objects([manifest_key(ctx.job_id), *bad, *segments])
    return None


def _resumed(
    ctx: JobContext,
    entry: CheckpointEntry,
    data: bytes,
    *,
    history: tuple[CheckpointEntry, ...],
    problems: list[str],
    bad: list[str],
) -> Resume:
    """Resume from `entry`; when checkpoints were skipped to find it, say so on the job, move the
    manifest back to it and delete what came after it."""
    if problems:
        _warn(ctx, problems, f"resumed from step {entry.step} instead")
        manifest = Manifest(
            step=entry.step,
            key=entry.key,
            uri=ctx.objects.uri(entry.key),
            bytes=entry.bytes,
            time=db.utcnow(),
            sha256=entry.sha256,
            history=tuple(e for e in history if e.step < entry.step),
        )
        ctx.write_manifest(manifest)
        # The segments from the step after it on hold points this run will record again. Their
        # keys sort by first step.
        after = metrics_segment_key(ctx.job_id, entry.step + 1)
        segments = ctx.read(lambda: ctx.objects.list(metrics_segments_prefix(ctx.job_id)))
        ctx.delete_objects([*bad, *(k for k in segments if k >= after)])
    return Resume(data=data, step=entry.step)


def _fetch(ctx: JobContext, key: str) -> tuple[bytes | None, str | None]:
    """The object's bytes, or (None, why) when it is not there."""
    try:
        return ctx.read(lambda: ctx.objects.get_bytes(key)), None
    except ObjectNotFound:
        return None, "is missing"


def _differs(entry: CheckpointEntry, data: bytes) -> str | None:
    """Why `data` is not the checkpoint the manifest names (None: it is)."""
    if len(data) != entry.bytes:
        return f"is {len(data):,} bytes, not the {entry.bytes:,} written (truncated or overwritten)"
    if entry.sha256 is not None:
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            return "does not match the SHA-256 recorded when it was written (corrupt)"
        return None
    # A manifest from before gantry recorded checksums: the checkpoint must load.
    step, why = _trial_load(data)
    if step is not None and step != entry.step:
        return f"holds step {step}, not {entry.step}"
    return why


def _trial_load(data: bytes) -> tuple[int | None, str | None]:
    """(the checkpoint's step, None) when `data` loads as a checkpoint, else (None, why)."""
    from gantry.worker.gan.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(data, map_location="cpu")["step"]), None
    except Exception as exc:  # torch's truncated-archive errors, unpickling refusals, missing keys
        return None, f"does not load ({type(exc).__name__}: {_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _warn(ctx: JobContext, problems: list[str], outcome: str) -> None:
    """A warning on the job: in its log and appended to its `warnings.txt`."""
    message = f"{'; '.join(problems)}; {outcome}"
    log.warning("job %s: %s", ctx.job_id, message)
    key = warnings_key(ctx.job_id)
    try:
        before = ctx.read(lambda: ctx.objects.get_bytes(key))
    except ObjectNotFound:
        before = b""
    ctx.put(key, before + f"{db.utcnow().isoformat()} {message}\n".encode(), kind="warnings")
