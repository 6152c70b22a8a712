"""`gantry demo`: DCGAN on `shapes` at 32x32 on this machine's CPU, then 64 samples.

Runs in embedded mode whatever GANTRY_BROKER_URL says, so it needs no services."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from rich.console import Console

from gantry.jobs.settings import Settings

# The most recognisable shapes found within the time bound on 2 CPU cores, measured by
# bench/demo_quality.py (sample_validity; bench/RESULTS.md). Departures from the paper's DCGAN:
# G upsamples by nearest resize + 3x3 conv instead of transposed convs, and z has 16 dimensions
# (five attributes and a little jitter are all there is to vary): together they took validity
# from about 0.14 to 0.25 at the same steps; many small steps (batch 16) at lr 1e-3, far above
# the paper's 2e-4; one-sided label smoothing 0.9, kept from the earlier demo (within noise); and
# G conditioned on the data set's five labels (AC-GAN, `labels`; D's head learns them from the
# real images), which took validity from about 0.41 (unsupervised InfoGAN codes) to about 0.8;
# and samples drawn from an average of G's weights (`ema`), which took it from 0.79 to 0.88
# (the same four runs with and without the average). Latent walks on the demo's job read its label
# codes as `code_walk=switch`: each frame one class, cutting half way, 0.84-0.87 of frames clean
# against 0.45-0.53 crossing blends of two codes (two runs; training is the same either way).
DEMO_TRAIN = {
    "dataset": "shapes",
    "image_size": 32,
    "steps": 4000,
    "batch_size": 16,
    "checkpoint_every": 1000,
    "sample_every": 500,
    "seed": 1,
}
DEMO_OPTIONS = {
    "nz": "16",
    "ngf": "32",
    "ndf": "32",
    "lr": "1e-3",
    "label_smoothing": "0.9",
    "upsample": "nearest",
    "labels": "shape,colour,size,position,background",
    "precision": "auto",  # bf16 on a CPU with native bfloat16: about 20% less time, same quality
    "ema": "0.999",
    "code_walk": "switch",
}


def _local(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def run_demo(settings: Settings, out: Console) -> None:
    from gantry.api.cli import _run_embedded
    from gantry.api.service import Service
    from gantry.jobs.store import describe_url
    from gantry.migrations import upgrade

    settings = settings.model_copy(update={"broker_url": None})
    out.print(f"gantry demo: store {describe_url(settings.database)}, objects {settings.storage}")
    upgrade(settings.database)
    svc = Service(settings)

    out.print(
        f"[bold]1/2[/bold] training dcgan on shapes at 32x32 for {DEMO_TRAIN['steps']} steps (CPU, 1 to 5 minutes)"
    )
    train = _run_embedded(svc, svc.submit_train("dcgan", options=DEMO_OPTIONS, **DEMO_TRAIN), show=True)
    if train.state != "succeeded":
        out.print(f"[red]train job {train.id} {train.state}[/red]: {train.error or ''}")
        sys.exit(1)

    out.print("[bold]2/2[/bold] sampling 64 images from its latest checkpoint")
    sample = _run_embedded(svc, svc.submit_sample(train.id, count=64, seed=0), show=True)
    if sample.state != "succeeded":
        out.print(f"[red]sample job {sample.id} {sample.state}[/red]: {sample.error or ''}")
        sys.exit(1)

    samples = [a for a in train.artifacts if a.kind == "samples"]
    checkpoints = [a for a in train.artifacts if a.kind == "checkpoint"]
    grid = next(a for a in sample.artifacts if a.kind == "grid")
    out.print()
    out.print(f"train job   {train.id}  succeeded")
    out.print("  metrics   " + "  ".join(f"{k}={v:.3f}" for k, v in sorted(train.metrics.items())))
    out.print(f"  checkpoint {_local(checkpoints[-1].uri)}")
    out.print(f"  training grid (fixed noise) {_local(samples[-1].uri)}")
    out.print(f"sample job  {sample.id}  succeeded")
    out.print(f"  grid      {_local(grid.uri)}")
    out.print(f"  images    {Path(_local(grid.uri)).parent}/000000.png ... 000063.png")
    out.print(
        f"next: `gantry status {train.id}`, `gantry metrics {train.id}`, `gantry sample {train.id} --seed 7`"
    )
