"""Time gantry's DCGAN training loop against the canonical DCGAN step, in one process (issue 30).

Three rows per batch size, 64x64x3, nz 100, ngf = ndf = 64, Adam 2e-4:
- canonical: bench/canonical_dcgan.py's eager step (pytorch/examples' DCGAN: one D and one G update
  on a fixed synthetic batch already on the device), fp32;
- canonical graph (CUDA only): the same step in bf16 and channels_last, captured once as a CUDA graph
  and replayed: what the GPU allows;
- gantry: the whole loop as a job runs it (minibatch drawing, both phases, metric accumulation; the
  job callbacks no-ops, checkpoints and grids off), with `--compile` (graph on CUDA by default) and
  `--precision` (auto: bf16 on a CPU with native bfloat16, else fp32); `--channels-last` runs the
  loop channels-last on a GPU too (where `compile=auto` does not yet: measured here first).

    python bench/dcgan_speed.py                  # CUDA: batch 64, 128, 512, 2048; CPU: batch 64, 15 steps
    python bench/dcgan_speed.py --quick          # a smoke run: batch 16, 6 steps (well under a minute on CPU)
    python bench/dcgan_speed.py --batch 64 --steps 150 --compile eager
    python bench/dcgan_speed.py --batch 64 --precision bf16 --channels-last   # a layout auto may pick

Prints a JSON line (device, torch, date, gantry's options), one row per batch (images/s of each,
gantry/canonical, and gantry's share of the GPU's peak bf16 FLOP/s at 2.48 GFLOP per image per
step), and last `gantry/canonical at batch 64: X.XXx` (the first batch when 64 is not run).
Goals (issue 30): >= 4x canonical at batch 64 and >= 3x at 128, >= 120,000 img/s at batch >= 1,024 on
an H200; on the CPU >= 1.5x with native bf16, >= 1.2x without.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from canonical_dcgan import FLOP_PER_IMAGE, make_step, time_step  # bench/, on the path as a script

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import ImageData
from gantry.worker.gan import loop
from gantry.worker.gan.loop import Callbacks, train

# Dense bf16 peak, TFLOP/s, by the device name's model (the vendors' data sheets: SXM parts).
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def time_gantry(
    batch: int, steps: int, device: torch.device, precision: str = "auto", compile: str = "auto"
) -> float:
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
        {"precision": precision, "compile": compile},
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
    ap.add_argument(
        "--batch", type=int, action="append", help="repeatable (CUDA: 64, 128, 512, 2048; CPU: 64)"
    )
    ap.add_argument("--steps", type=int, default=None, help="gantry's steps (default 15 on CPU, 300 on CUDA)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: batch 16 and 6 steps unless given")
    ap.add_argument(
        "--precision", choices=["auto", "fp32", "bf16"], default="auto", help="gantry's `precision`"
    )
    ap.add_argument(
        "--compile", choices=["auto", "graph", "eager"], default=None, help="gantry's `compile` (CUDA: graph)"
    )
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    ap.add_argument(
        "--channels-last",
        action="store_true",
        help="gantry's loop channels-last on a GPU too (a layout to measure)",
    )
    args = ap.parse_args()
    if args.channels_last:  # what the loop does on the CPU, on any device
        loop.channels_last_for = lambda model, device: model.make_batch is None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    steps = args.steps or (6 if args.quick else 300 if gpu else 15)
    batches = args.batch or ([16] if args.quick else [64, 128, 512, 2048] if gpu else [64])
    compile = args.compile or ("graph" if gpu else "auto")
    name = torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads"
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if gpu and k in name), None)
    info = {"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    options = {
        "precision": args.precision,
        "compile": compile,
        "channels_last": args.channels_last or not gpu,
    }
    print(json.dumps({**info, **options, "peak_bf16_tflops": peak}))
    print(
        f"{'batch':>5} {'canonical':>10} {'canon. graph':>12} {'gantry':>9} {'gantry/canonical':>16} {'of peak':>7}"
    )
    ratios: dict[int, float] = {}
    for batch in batches:
        torch.manual_seed(0)
        canonical = batch / time_step(
            make_step("canonical", batch, device), device, iters=steps // 3 or 1, warmup=2
        )
        graph = "-"  # no CUDA graph on the CPU
        if gpu:
            torch.manual_seed(0)
            step = make_step("bf16_cuda_graph", batch, device)
            graph = f"{batch / time_step(step, device, iters=steps // 3 or 1, warmup=10):.1f}"
        ours = time_gantry(batch, steps, device, args.precision, compile)
        ratios[batch] = ours / canonical
        share = f"{ours * FLOP_PER_IMAGE / (peak * 1e12):.1%}" if peak else "-"
        print(
            f"{batch:>5} {canonical:>10.1f} {graph:>12} {ours:>9.1f} {ratios[batch]:>16.2f} {share:>7}",
            flush=True,
        )
    first = 64 if 64 in ratios else batches[0]
    print(f"gantry/canonical at batch {first}: {ratios[first]:.2f}x")


if __name__ == "__main__":
    main()
