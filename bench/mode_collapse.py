"""Mode collapse, measured the way PacGAN does (Lin et al. 2017, arXiv 1712.04086, Tables 1 and 2).

Trains the vanilla MLP GAN and the MLP GAN with minibatch discrimination (Salimans et al. 2016,
arXiv 1606.03498) on ring8 and grid25 over several seeds, and DCGAN with and without minibatch
discrimination on stacked-digits, through the shared training loop; evaluates each run with
gantry's collapse metrics; prints one table with PacGAN's published rows beside ours.

    .venv/bin/python bench/mode_collapse.py                       # the full run (10 + 3 seeds)
    .venv/bin/python bench/mode_collapse.py --seeds 2 --stacked-seeds 1 --stacked-steps 200   # quick

One CPU thread per run (torch.set_num_threads(1)), so runs are comparable on a shared machine;
`--device cuda` trains (and samples for the metrics) on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import load_dataset
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.metrics.modes import points_metrics_from_checkpoint, stacked_metrics_from_checkpoint

# PacGAN Table 1 (2-D, 2,500 samples) and Table 2 (stacked MNIST, 26,000 samples): published rows.
PUBLISHED = [
    ("ring8", "GAN (PacGAN Table 1)", "6.3 ± 0.5", "98.2%", "0.45"),
    ("ring8", "PacGAN2 (PacGAN Table 1)", "7.9 ± 0.1", "95.6%", "0.07"),
    ("grid25", "GAN (PacGAN Table 1)", "17.3 ± 0.8", "94.8%", "0.70"),
    ("grid25", "PacGAN4 (PacGAN Table 1)", "24.8 ± 0.2", "93.6%", "0.04"),
    ("stacked", "DCGAN (PacGAN Table 2)", "99.0", "—", "3.40"),
    ("stacked", "PacDCGAN2 (PacGAN Table 2)", "1000.0", "—", "0.06"),
]


def run(
    model: str,
    fields: dict[str, Any],
    options: dict[str, str],
    *,
    device: str = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[bytes, float]:
    """Train through the shared loop; (final checkpoint, seconds)."""
    spec = parse_train_spec(model, {"checkpoint_every": 10**7, "sample_every": 10**7, **fields}, options)
    data = load_dataset(spec.dataset, image_size=spec.image_size, seed=spec.seed)
    out: list[bytes] = []
    started = time.perf_counter()
    train(
        spec,
        data,
        callbacks=Callbacks(
            progress=lambda step, metrics: None,
            should_stop=should_stop,
            checkpoint=lambda step, payload: out.append(payload),
            samples=lambda step, png: None,
        ),
        device=device,
    )
    return out[-1], time.perf_counter() - started


def mean_std(values: list[float], fmt: str = "{:.1f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def _variants(base: str, kernels: int, args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """Row name -> model options: the vanilla model and the one with minibatch discrimination,
    less the one that --mbd-only or --vanilla-only skips."""
    variants: dict[str, dict[str, str]] = {}
    if not args.mbd_only:
        variants[f"{base} (ours)"] = {}
    if not args.vanilla_only:
        variants[f"{base} + minibatch discr. (ours)"] = {
            "minibatch_discrimination": "true",
            "mbd_kernels": str(kernels),
        }
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per 2-D row")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="2-D rows use seeds first-seed .. first-seed + seeds - 1"
    )
    parser.add_argument("--steps", type=int, default=2000, help="2-D training steps (ring8)")
    parser.add_argument(
        "--grid-steps", type=int, default=None, help="grid25 training steps (default --steps)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a model option for every 2-D run"
    )
    parser.add_argument("--mbd-only", action="store_true", help="skip the vanilla GAN/DCGAN rows")
    parser.add_argument("--vanilla-only", action="store_true", help="skip the minibatch rows")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--kernels", type=int, default=10, help="minibatch discrimination kernels (2-D)")
    parser.add_argument("--stacked-seeds", type=int, default=3)
    parser.add_argument(
        "--stacked-first-seed",
        type=int,
        default=0,
        help="stacked rows use seeds stacked-first-seed .. stacked-first-seed + stacked-seeds - 1",
    )
    parser.add_argument("--stacked-steps", type=int, default=1500)
    parser.add_argument("--stacked-size", type=int, default=16)
    parser.add_argument("--stacked-kernels", type=int, default=100)
    parser.add_argument(
        "--stacked-set", action="append", default=[], metavar="KEY=VALUE", help="a dcgan option, stacked rows"
    )
    parser.add_argument("--only", default="ring8,grid25,stacked", help="comma-separated rows to run")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (one thread) or cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    only = set(args.only.split(","))

    rows: list[tuple[str, str, str, str, str, str]] = []
    variants = _variants("GAN", args.kernels, args)
    common = dict(pair.split("=", 1) for pair in args.set)
    for dataset in ("ring8", "grid25"):
        if dataset not in only:
            continue
        steps = args.grid_steps if dataset == "grid25" and args.grid_steps else args.steps
        for name, variant in variants.items():
            options = {**common, **variant}
            results, seconds = [], []
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                fields = {
                    "dataset": dataset,
                    "steps": steps,
                    "batch_size": args.batch_size,
                    "seed": seed,
                }
                checkpoint, took = run("gan", fields, options, device=args.device)
                results.append(points_metrics_from_checkpoint(checkpoint, seed=0))
                seconds.append(took)
                print(f"  {dataset} {name} seed {seed}: {results[-1]} in {took:.1f}s", flush=True)
            rows.append((
                dataset,
                name,
                mean_std([r["modes"] for r in results]),
                mean_std([100 * r["high_quality"] for r in results]) + "%",
                mean_std([r["reverse_kl"] for r in results], "{:.2f}"),
                f"{statistics.mean(seconds):.0f}s",
            ))  # fmt: skip
    if "stacked" in only:
        stacked_variants = _variants("DCGAN", args.stacked_kernels, args)
        stacked_common = {"nz": "64", "ngf": "32", "ndf": "32"} | dict(
            p.split("=", 1) for p in args.stacked_set
        )
        for name, options in stacked_variants.items():
            results, seconds = [], []
            for seed in range(args.stacked_first_seed, args.stacked_first_seed + args.stacked_seeds):
                fields = {"dataset": "stacked-digits", "steps": args.stacked_steps, "batch_size": 64,
                          "image_size": args.stacked_size, "seed": seed}  # fmt: skip
                checkpoint, took = run("dcgan", fields, {**stacked_common, **options}, device=args.device)
                results.append(stacked_metrics_from_checkpoint(checkpoint, seed=0, device=args.device))
                seconds.append(took)
                print(f"  stacked-digits {name} seed {seed}: {results[-1]} in {took:.1f}s", flush=True)
            rows.append((
                "stacked",
                name,
                mean_std([r["modes"] for r in results]),
                "—",
                mean_std([r["kl_uniform"] for r in results], "{:.2f}"),
                f"{statistics.mean(seconds):.0f}s",
            ))  # fmt: skip
            print(f"  classifier held-out accuracy: {results[-1]['classifier_accuracy']:.4f}")

    print()
    print("| data | model | modes | high quality | reverse KL | train time |")
    print("| --- | --- | --- | --- | --- | --- |")
    for dataset in ("ring8", "grid25", "stacked"):
        for d, model, modes, hq, kl in [p for p in PUBLISHED if p[0] == dataset]:
            print(f"| {d} | {model} | {modes} | {hq} | {kl} | |")
        for d, model, modes, hq, kl, took in [r for r in rows if r[0] == dataset]:
            print(f"| {d} | {model} | {modes} | {hq} | {kl} | {took} |")


if __name__ == "__main__":
    main()
