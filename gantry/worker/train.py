"""The train phase: load the data, resume from the job's manifest (or start from another job's
checkpoint), run the shared training loop with the job's callbacks, then its automatic metrics.

A resume takes the newest checkpoint that loads (gantry.worker.checkpoints, which sample and
evaluate jobs share): the manifest's, else the older ones it keeps (its history, newest first),
else any other checkpoint in the job's folder from before them. One that is missing,
truncated or corrupt is skipped with a warning on the job (its log and `warnings.txt`), the manifest
is moved back to the checkpoint resumed from, and what followed that one (the bad checkpoints, the
metric segments past it) is deleted, so the run goes on as if it had stopped there."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantry.jobs import store as db
from gantry.jobs.datasets import DATASETS
from gantry.jobs.errors import InvalidInput
from gantry.jobs.keys import Manifest, manifest_key, metrics_segment_key, metrics_segments_prefix
from gantry.jobs.settings import Settings
from gantry.jobs.specs import METRICS, EvaluateSpec, TrainSpec
from gantry.jobs.storage import fetch_to_local
from gantry.worker.checkpoints import Loadable, newest_that_loads, read_manifest, stray_checkpoints, warn
from gantry.worker.evaluate import data_loader, measure_during_training, run_metrics
from gantry.worker.run import JobContext, device

log = logging.getLogger(__name__)


def load_data(spec: TrainSpec, settings: Settings, scratch: Path, *, folder_labels: bool = False) -> Any:
    """The job's data set: a built-in one, or a file or folder fetched from its URI into `scratch`.
    `folder_labels`: a folder's or zip's classes from its sub-folders whatever the job's `labels` (for
    the metrics that need labels, on a model trained without them)."""
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
        source,
        image_size=spec.image_size,
        seed=spec.seed,
        full_size=spec.full_size_data,
        limits=limits,
        options=read_options(spec, folder_labels=folder_labels),
    )


def read_options(spec: TrainSpec, *, folder_labels: bool = False) -> Any:
    """How a folder or .zip of pictures is read for this job: its `data` options (`ImageFiles`), its
    labels from sub-folders, and whether every picture needs a caption (a model prompted by captions)."""
    from gantry.jobs.specs.base import FOLDER_LABELS
    from gantry.jobs.specs.options import ImageFiles, parse_colour
    from gantry.worker.data.folders import ReadOptions

    opts = spec.options
    if not isinstance(opts, ImageFiles):
        return ReadOptions()
    return ReadOptions(
        background=parse_colour(opts.background),
        fit=opts.fit,
        bad_files=opts.bad_files,
        labels=folder_labels or FOLDER_LABELS in opts.label_attributes(),
        captions_file=opts.captions_file,
        need_captions=spec.prompted_by == "captions" and not folder_labels,
    )


def _check_labels(spec: TrainSpec, splits: Callable[[str], Any]) -> None:
    """InvalidInput now when the user's data has no labels for the eval metric to use: none of its
    own (an .npz's, `labels=folder`'s) and no classes in sub-folders."""
    from gantry.worker.metrics import labelled_train

    if labelled_train(splits, spec.dataset) is None:
        raise InvalidInput(
            "set.eval_metric",
            f"{spec.options.eval_metric} needs labelled images: {spec.dataset} has none (classes in "
            "sub-folders, or an .npz with `labels`); set eval_metric to one that needs none",
        )


def train_job(ctx: JobContext, spec: TrainSpec) -> bool:
    """Train (or resume) a job; True when it ran to the end, False when it was stopped."""
    from gantry.worker.gan.loop import Callbacks, train

    # The worker's own settings decide (as for an evaluate job): eval_metric=fid without the weights
    # here fails the job now, not at its first evaluation.
    spec.check_inception_weights(ctx.settings.inception_weights is not None)
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
    if getattr(data, "warnings", ()):  # bad files skipped, captions that name no picture
        warn(ctx, list(data.warnings), "training goes on without them")
    options = spec.options

    def checkpoint(step: int, payload: bytes) -> None:
        final = step >= spec.steps
        ctx.checkpoint(
            step,
            payload,
            keep=options.keep_checkpoints,
            keep_every=options.keep_every,
            final=final,
            later=True,  # written while training goes on
        )

    evaluate = None
    if options.eval_every:
        splits = data_loader(ctx, spec, train=data)
        if options.eval_metric and METRICS[options.eval_metric].labelled:
            _check_labels(spec, splits)  # now, not after eval_every steps of training

        def evaluate(step: int, payload: bytes) -> bool:
            return measure_during_training(ctx, spec, step, payload, data=splits)

    callbacks = Callbacks(
        progress=ctx.progress,
        should_stop=ctx.should_stop,
        checkpoint=checkpoint,
        samples=ctx.samples,
        evaluate=evaluate,
    )
    # A run may start from another train job's weights (`init_from`: fine-tuning).
    init_from = spec.starts_from()
    init = None
    if init_from and not resume:
        init, at = ctx.checkpoint_bytes(init_from, "latest")
        log.info("job %s: starting from job %s's weights at step %d", ctx.job_id, init_from, at)
    outcome = train(spec, data, callbacks=callbacks, resume=resume, init=init, device=device())
    # Checkpoints no manifest names (an attempt fenced out, or dead, before it moved the manifest)
    # would outlive retention, which deletes only what a manifest named.
    # (None when this run started the job: no other attempt wrote any.)
    if not ctx.fresh:
        ctx.settle()  # the checkpoints handed over, named by the manifest first
        ctx.delete_objects(stray_checkpoints(ctx))
    if not outcome.stopped and (names := spec.metric_names(auto=True)):
        run_metrics(
            ctx,
            names,
            train_job_id=ctx.job_id,
            spec=EvaluateSpec(seed=spec.seed),
            train_spec=spec,
            state=outcome.final_state,
        )
    ctx.write_metrics_jsonl()
    return not outcome.stopped


@dataclass(frozen=True)
class Resume:
    data: bytes
    step: int


def find_resume(ctx: JobContext) -> Resume | None:
    """The newest checkpoint of the job that loads (None: the run starts from step 0). Without a
    manifest the job never checkpointed: it starts over, as it always has."""
    if ctx.fresh:
        return None  # this run started the job: it has nothing in storage
    search = newest_that_loads(ctx, ctx.job_id)
    if search is None:
        return None
    if search.found is not None:
        return _resumed(ctx, search.found, problems=search.problems, bad=search.bad)
    warn(ctx, search.problems, "no checkpoint loads: the run starts over from step 0")
    segments = ctx.read(lambda: ctx.objects.list(metrics_segments_prefix(ctx.job_id)))
    ctx.delete_objects([manifest_key(ctx.job_id), *search.bad, *segments])
    return None


def _resumed(ctx: JobContext, found: Loadable, *, problems: list[str], bad: list[str]) -> Resume:
    """Resume from `found`; when checkpoints were skipped to find it, say so on the job, move the
    manifest back to it and delete what came after it."""
    entry = found.entry
    if problems:
        warn(ctx, problems, f"resumed from step {entry.step} instead")
        try:
            before = ctx.read(lambda: read_manifest(ctx.objects, ctx.job_id))
        except ValueError:  # a manifest that does not parse names no best
            before = None
        # The best by the eval metric stays when the run goes back to it or past it and it loads.
        best = before.best if before is not None else None
        if best is not None and (best.step > entry.step or best.key in bad):
            best = None
        manifest = Manifest(
            step=entry.step,
            key=entry.key,
            uri=ctx.objects.uri(entry.key),
            bytes=entry.bytes,
            time=db.utcnow(),
            sha256=entry.sha256,
            history=tuple(e for e in found.history if e.step < entry.step),
            best=best,
        )
        ctx.write_manifest(manifest)
        # The segments from the step after it on hold points this run will record again. Their
        # keys sort by first step.
        after = metrics_segment_key(ctx.job_id, entry.step + 1)
        segments = ctx.read(lambda: ctx.objects.list(metrics_segments_prefix(ctx.job_id)))
        ctx.delete_objects([*bad, *(k for k in segments if k >= after)])
    return Resume(data=found.data, step=entry.step)
