"""Time gantry's DCGAN training loop against the canonical DCGAN step, in the same run.

The reference is bench/canonical_dcgan.py's `canonical` step (pytorch/examples' DCGAN: one D and
one G update on a fixed synthetic batch already on the device). gantry's number is the whole loop
as a job runs it: minibatch drawing, both phases, metric accumulation, with the job callbacks
replaced by no-ops (checkpoints and grids off). Same architecture: 64x64x3, nz=100, ngf=ndf=64,
Adam 2e-4. Runs on CUDA when torch sees a GPU, else on the CPU; `make bench` runs the first line.

    python bench/dcgan_speed.py                 # batch 64, 15 steps (CPU) or 300 (CUDA)
    python bench/dcgan_speed.py --quick         # a smoke run: batch 16, 6 steps (well under a minute on CPU)
    python bench/dcgan_speed.py --batch 64 --batch 256 --steps 150
    python bench/dcgan_speed.py --precision bf16    # gantry's bfloat16 autocast (the reference stays fp32)

Prints one JSON line (device, torch, date, gantry's precision), then one row per batch size (and,
on CUDA, per cuDNN autotuner setting): the reference's images/s, gantry's images/s and their ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from canonical_dcgan import make_step, time_step  # bench/, on the path when run as a script

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import ImageData
from gantry.worker.gan.loop import Callbacks, train


def time_gantry(batch: int, steps: int, device: torch.device, precision: str = "fp32") -> float:
    """Median images/s over the progress reports after the first (warm-up) one."""
    spec = parse_train_spec(
        "dcgan",
        {
            "dataset": "shapes",
            "image_size": 64,
            "batch_size": batch,
            "steps": steps,
            "checkpoint_every": 10**7,
            "sample_every": 10**7,
        },
        {"precision": precision},
    )
    rng = np.random.default_rng(0)
    data = ImageData(images=rng.integers(0, 256, size=(max(batch * 4, 256), 64, 64, 3), dtype=np.uint8))
    rates: list[float] = []
    callbacks = Callbacks(
        progress=lambda step, m: rates.append(m["images_per_sec"]),
        should_stop=lambda: False,
        checkpoint=lambda step, data: None,
        samples=lambda step, png: None,
    )
    train(spec, data, callbacks=callbacks, device=device, log_every=max(1, steps // 5))
    timed = rates[1:] or rates
    return float(np.median(timed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, action="append", help="repeatable (default 64; 16 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="gantry's steps (default 15 on CPU, 300 on CUDA)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: batch 16 and 6 steps unless given")
    ap.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="gantry's `precision` option"
    )
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    steps = args.steps or (6 if args.quick else 300 if gpu else 15)
    batches = args.batch or ([16] if args.quick else [64])
    name = torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads"
    print(
        json.dumps(
            {
                "device": name,
                "torch": torch.__version__,
                "date": time.strftime("%Y-%m-%d"),
                "gantry": args.precision,
            }
        )
    )
    print(
        f"{'batch':>5} {'cudnn.benchmark':>15} {'reference img/s':>16} {'gantry img/s':>13} {'gantry/ref':>10}"
    )
    # On a GPU, both with cuDNN's autotuner off (PyTorch's default, and the worker's) and on.
    for benchmark in [False, True] if gpu else [False]:
        torch.backends.cudnn.benchmark = benchmark
        for batch in batches:
            torch.manual_seed(0)
            step = make_step("canonical", batch, device)
            t = time_step(step, device, iters=steps // 3 or 1, warmup=2)
            ref_rate = batch / t
            ours = time_gantry(batch, steps, device, args.precision)
            print(
                f"{batch:>5} {benchmark!s:>15} {ref_rate:>16.1f} {ours:>13.1f} {ours / ref_rate:>10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
