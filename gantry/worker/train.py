"""The train phase: load the data, resume from the job's manifest (or start from another job's
checkpoint), run the shared training loop with the job's callbacks, then its automatic metrics."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from gantry.jobs.datasets import DATASETS
from gantry.jobs.keys import spec_key
from gantry.jobs.settings import Settings
from gantry.jobs.specs import EvaluateSpec, TrainSpec
from gantry.jobs.storage import fetch_to_local
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
    manifest = ctx.read(lambda: read_manifest(ctx.objects, ctx.job_id))
    resume = ctx.read(lambda: ctx.objects.get_bytes(manifest.key)) if manifest else None
    if manifest:
        log.info("job %s: resuming from step %d", ctx.job_id, manifest.step)
    # Points an attempt that died recorded past its last checkpoint are recorded again from it.
    ctx.resume_from(manifest.step if manifest else None)

    def fetch_and_load() -> Any:
        with tempfile.TemporaryDirectory(prefix="gantry-data-") as scratch:
            return load_data(spec, ctx.settings, Path(scratch))

    data = ctx.read(fetch_and_load)
    callbacks = Callbacks(
        progress=ctx.progress, should_stop=ctx.should_stop, checkpoint=ctx.checkpoint, samples=ctx.samples
    )
    # A run may start its G from another train job's checkpoint (srgan's init_from).
    init_from = spec.starts_from()
    init = ctx.checkpoint_bytes(init_from, "latest")[0] if init_from and not resume else None
    outcome = train(spec, data, callbacks=callbacks, resume=resume, init=init, device=device())
    if not outcome.stopped and (names := spec.metric_names(auto=True)):
        run_metrics(ctx, names, train_job_id=ctx.job_id, spec=EvaluateSpec(seed=spec.seed))
    ctx.write_metrics_jsonl()
    return not outcome.stopped
