"""How recognisable are the demo's shapes? Train `gantry demo`'s DCGAN (or variants) and measure.

Each variant is a real embedded train job (the demo's settings with some replaced), then an
evaluate job computing `sample_validity` (the share of 1,024 random samples the shapes classifier
reads confidently as one shape of one colour, and the share of the training (colour, shape) pairs
they cover), `interpolation_validity` and `arithmetic_accuracy`. Prints one row per variant: wall time, images/s, metrics.

    python bench/demo_quality.py                          # the demo as shipped
    python bench/demo_quality.py --variant 'lr=2e-4' --variant 'label_smoothing=0.9'
    python bench/demo_quality.py --variant 'steps=3000 ngf=48'

A variant is space-separated key=value pairs; keys that are train-spec fields (steps, batch_size,
...) replace those, any other key is a model option (`--set`). Jobs land under --home (default a
temporary folder), so their grids can be looked at afterwards. The jobs run where a worker would
run them: on CUDA when torch sees a GPU, else on the CPU.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from gantry.api.service import Service
from gantry.jobs.settings import Settings
from gantry.jobs.specs import DEMO
from gantry.migrations import upgrade

METRICS = ["sample_validity", "interpolation_validity", "arithmetic_accuracy"]


def parse_variant(text: str) -> tuple[dict[str, object], dict[str, str]]:
    fields: dict[str, object] = dict(DEMO.fields)
    options = dict(DEMO.options)
    for pair in text.split():
        key, _, value = pair.partition("=")
        if key in fields:
            fields[key] = type(fields[key])(float(value)) if isinstance(fields[key], int) else value
        else:
            options[key] = value
    return fields, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="key=value ... (repeatable)")
    parser.add_argument("--home", type=Path, default=None, help="GANTRY_HOME for the jobs")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="gantry-demo-quality-"))
    os.environ["GANTRY_HOME"] = str(home)
    settings = Settings(broker_url=None)
    upgrade(settings.database)
    svc = Service(settings)
    rows = []
    for variant in args.variant or [""]:
        fields, options = parse_variant(variant)
        started = time.perf_counter()
        job = svc.submit_train(DEMO.model, options=options, **fields)
        svc.run_embedded(job)
        wall = time.perf_counter() - started
        train = svc.get(job.id)
        assert train.state == "succeeded", (train.state, train.error)
        evaluation = svc.submit_evaluate(job.id, metrics=METRICS, seed=0)
        svc.run_embedded(evaluation)
        values = svc.get(evaluation.id).metrics
        rows.append((variant or "(demo)", job.id, wall, train.metrics.get("images_per_sec", 0.0), values))
        print(f"{variant or '(demo)'}: {wall:.0f}s {values}", flush=True)
    print(f"\njobs under {home}\n")
    print(
        "| variant | job | train wall s | img/s | sample_validity | pair_coverage | interpolation_validity "
        "| arithmetic_accuracy (trials) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant, job_id, wall, ips, v in rows:
        print(
            f"| {variant} | {job_id} | {wall:.0f} | {ips:.0f} | {v['sample_validity']:.3f} | "
            f"{v['pair_coverage']:.3f} | {v['interpolation_validity']:.3f} | "
            f"{v['arithmetic_accuracy']:.3f} ({v['arithmetic_trials']:.0f}) |"
        )


if __name__ == "__main__":
    main()
