"""The quality a recipe reaches by a deadline: train one run for as long as the time allows, measure.

Trains one run through the shared loop (on CUDA by default) with a recipe below: `text2img` on
`shapes` (issue 4's recipe) or DCGAN on `stacked-digits` (the best stacked row of issue 3). It
first times a short calibration run, then takes the most steps (whole thousands, at most
--max-steps) that end by --until (Unix seconds), trains, and evaluates both G and the average of G
(`ema`) with evaluation seed 0: for text2img the metrics of bench/text_and_latents.py (caption
faithfulness, prompt diversity, arithmetic, interpolation), for stacked those of
bench/mode_collapse.py (modes, KL to uniform). Several runs can share one GPU, one process each;
each still ends by its deadline.

    U=$(( $(date +%s) + 400 ))       # train for about 400 s
    python bench/recipe_quality.py text2img --seed 0 --image-size 64 --until $U --save out/
    python bench/recipe_quality.py stacked --seed 0 --until $U --set d_norm=spectral
    python bench/recipe_quality.py stacked --device cpu --until $U      # the same on the CPU

Prints two JSON lines: the plan (seconds per step, budget, steps), then the result (steps
reached, training seconds, device, and the metrics under "average" and "G"). --set KEY=VALUE
replaces or adds a model option. With --save, it writes the checkpoint less D and the optimizers
(G, G's average, the spec) to that folder, for evaluating again elsewhere.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mode_collapse
import text_and_latents

from gantry.jobs.specs import load_train_spec
from gantry.worker.gan.checkpoint import load_checkpoint

RECIPES: dict[str, dict[str, str]] = {
    "text2img": {
        "ngf": "32",
        "ndf": "32",
        "lr": "5e-4",
        "lr_decay": "linear",
        "upsample": "nearest",
        "nz": "16",
        "mode_seeking": "0.1",
        "ema": "0.999",
    },
    "stacked": {
        "nz": "64",
        "ngf": "64",
        "ndf": "64",
        "upsample": "nearest",
        "label_smoothing": "0.9",
        "minibatch_discrimination": "true",
        "mbd_kernels": "100",
        "ema": "0.999",
    },
}
CALIBRATION = (50, 250)  # time the steps between these two


def trainer(args: argparse.Namespace, options: dict[str, str]) -> Callable[..., bytes]:
    """train(steps, should_stop) -> checkpoint bytes, for the run the arguments describe."""
    if args.kind == "text2img":

        def train_text(steps: int, should_stop: Callable[[], bool]) -> bytes:
            _, checkpoint, _ = text_and_latents._train(
                "text2img",
                steps,
                args.image_size,
                args.batch_size,
                options,
                args.seed,
                device=args.device,
                should_stop=should_stop,
            )
            return checkpoint

        return train_text

    def train_stacked(steps: int, should_stop: Callable[[], bool]) -> bytes:
        fields = {"dataset": "stacked-digits", "steps": steps, "batch_size": args.batch_size,
                  "image_size": args.image_size, "seed": args.seed}  # fmt: skip
        checkpoint, _ = mode_collapse.run(
            "dcgan", fields, options, device=args.device, should_stop=should_stop
        )
        return checkpoint

    return train_stacked


def seconds_per_step(train: Callable[..., bytes]) -> float:
    """Time CALIBRATION's steps of a throwaway run (the loop asks should_stop once a step)."""
    first, last = CALIBRATION
    stamps: list[float] = []

    def stop() -> bool:
        stamps.append(time.perf_counter())
        return len(stamps) >= last

    train(last + 1, stop)
    return (stamps[last - 1] - stamps[first - 1]) / (last - first)


def stripped(checkpoint: bytes, *, keep_average: bool = True) -> bytes:
    """The checkpoint without D and the optimizers (and without G's average unless kept)."""
    state = load_checkpoint(checkpoint) | {"D": {}, "opt_G": {}, "opt_D": {}}
    if not keep_average:
        state.pop("G_ema", None)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else device


def measure(args: argparse.Namespace, checkpoint: bytes) -> dict[str, Any]:
    if args.kind == "stacked":
        return mode_collapse.stacked_metrics_from_checkpoint(checkpoint, seed=0, device=args.device)
    spec = load_train_spec(load_checkpoint(checkpoint)["spec"])
    names = ["caption_faithfulness", "prompt_diversity", "arithmetic_accuracy", "interpolation_validity"]
    return text_and_latents._metrics(spec, checkpoint, names, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--until", type=float, required=True, help="Unix time by which training ends")
    parser.add_argument("--max-steps", type=int, default=40000)
    parser.add_argument("--image-size", type=int, default=None, help="default 32 (text2img), 16 (stacked)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 16 (text2img), 64 (stacked)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--save", type=Path, default=None, help="folder for the stripped checkpoint")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--name", default=None, help="the run's name in the output (default from args)")
    args = parser.parse_args()
    text = args.kind == "text2img"
    args.image_size = args.image_size or (32 if text else 16)
    args.batch_size = args.batch_size or (16 if text else 64)
    torch.set_num_threads(1)
    options = RECIPES[args.kind] | dict(pair.split("=", 1) for pair in args.set)
    name = args.name or f"{args.kind}-{args.image_size}px-b{args.batch_size}-s{args.seed}"
    train = trainer(args, options)

    per_step = seconds_per_step(train)
    budget = args.until - time.time()
    steps = max(1000, min(args.max_steps, int(0.85 * budget / per_step) // 1000 * 1000))
    print(
        json.dumps({"run": name, "seconds_per_step": per_step, "budget_s": budget, "steps": steps}),
        flush=True,
    )
    started = time.time()
    checkpoint = train(steps, lambda: time.time() > args.until + 30)  # a late run still ends
    trained = time.time() - started
    reached = load_checkpoint(checkpoint)["step"]
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        (args.save / f"{name}.pt").write_bytes(stripped(checkpoint))
    result: dict[str, Any] = {"run": name, "kind": args.kind, "seed": args.seed, "options": options,
                              "image_size": args.image_size, "batch_size": args.batch_size,
                              "steps": steps, "reached": reached, "train_s": trained,
                              "device": device_name(args.device)}  # fmt: skip
    result["average"] = measure(args, checkpoint)
    result["G"] = measure(args, stripped(checkpoint, keep_average=False))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
