"""`gantry demo`: the demo recipe (`gantry.jobs.specs.DEMO`, a DCGAN on `shapes`) on this machine's CPU,
then 64 samples.

Runs in embedded mode whatever GANTRY_BROKER_URL says, so it needs no services."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from rich.console import Console

from gantry.jobs.settings import Settings
from gantry.jobs.specs import DEMO


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

    recipe = DEMO.fields
    out.print(
        f"[bold]1/2[/bold] training {DEMO.model} on {recipe['dataset']} at {recipe['image_size']}x"
        f"{recipe['image_size']} for {recipe['steps']} steps (CPU, 1 to 5 minutes)"
    )
    train = _run_embedded(svc, svc.submit_train(DEMO.model, options=DEMO.options, **recipe), show=True)
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
