"""Time gantry's DCGAN training loop against the canonical DCGAN step, in the same run.

The reference (../shared/bench/dcgan_reference.py, or --reference PATH) times one D and one G
update on a fixed synthetic batch already on the device. gantry's number is the whole loop as a
job runs it: minibatch drawing, both phases, metric accumulation, with the job callbacks replaced
by no-ops (checkpoints and grids off). Same architecture: 64x64x3, nz=100, ngf=ndf=64, Adam 2e-4.

    python bench/dcgan_speed.py                 # batch 64, a few steps (CPU) or more (GPU)
    python bench/dcgan_speed.py --batch 64 --batch 128 --steps 200
    python bench/dcgan_speed.py --precision bf16    # gantry's bfloat16 autocast (the reference stays fp32)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import ImageData
from gantry.worker.gan.loop import Callbacks, train

HERE = Path(__file__).resolve().parent
DEFAULT_REFERENCE = HERE.parent.parent / "shared" / "bench" / "dcgan_reference.py"


def load_reference(path: Path):
    spec = importlib.util.spec_from_file_location("dcgan_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    ap.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="gantry's `precision` option"
    )
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    steps = args.steps or (300 if gpu else 15)
    ref = load_reference(args.reference)
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
        for batch in args.batch or [64]:
            torch.manual_seed(0)
            step = ref.make_step("canonical", batch, device)
            t = ref.time_step(step, device, iters=steps // 3 or 1, warmup=2)
            ref_rate = batch / t
            ours = time_gantry(batch, steps, device, args.precision)
            print(
                f"{batch:>5} {benchmark!s:>15} {ref_rate:>16.1f} {ours:>13.1f} {ours / ref_rate:>10.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
