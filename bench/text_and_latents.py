"""Text to image and latent walks on `shapes`: train (or take trained jobs) and print the metrics
next to the targets of issue 4.

    .venv/bin/python bench/text_and_latents.py                       # train text2img and dcgan here
    .venv/bin/python bench/text_and_latents.py --text2img-job ID --dcgan-job ID   # gantry train jobs

Trains with the shared loop on one CPU thread (the machine is shared; `--device cuda` trains on a
GPU), then computes the metrics `gantry evaluate` computes: caption faithfulness (text2img),
diversity within a prompt (text2img), latent arithmetic (dcgan: colour and shape; text2img at
fixed text: size and position) and interpolation validity (both). Prints one table; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gantry.jobs.settings import get_settings
from gantry.jobs.specs import TrainSpecBase, load_train_spec, parse_train_spec
from gantry.worker.data import load_dataset
from gantry.worker.gan.checkpoint import load_checkpoint
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.metrics import EvalContext, evaluate
from gantry.worker.metrics.shapes_classifier import attribute_classifier

TARGETS = {
    "faithfulness_seen": (">=", 0.95),
    "faithfulness_held_out": (">=", 0.70),
    "arithmetic_accuracy": (">=", 0.80),
    "interpolation_validity": (">=", 0.95),
    "shapes_classifier_accuracy": (">=", 0.98),
}


def _train(
    model: str,
    steps: int,
    image_size: int,
    batch_size: int,
    options: dict[str, str],
    seed: int,
    *,
    device: str = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[TrainSpecBase, bytes, float]:
    spec = parse_train_spec(
        model,
        {
            "seed": seed,
            "steps": steps,
            "image_size": image_size,
            "batch_size": batch_size,
            "checkpoint_every": steps,
            "sample_every": steps,
        },
        options,
    )
    data = load_dataset("shapes", image_size=image_size, seed=spec.seed)
    checkpoints: list[bytes] = []
    started = time.perf_counter()

    def progress(step: int, metrics: dict[str, float]) -> None:
        if step % 500 == 0:
            shown = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
            print(f"  {model} step {step}: {time.perf_counter() - started:.0f}s {shown}", flush=True)

    callbacks = Callbacks(progress, should_stop, lambda step, b: checkpoints.append(b), lambda *a: None)
    train(spec, data, callbacks=callbacks, device=device)
    return spec, checkpoints[-1], time.perf_counter() - started


def _from_job(job_id: str) -> tuple[TrainSpecBase, bytes, float]:
    from gantry.jobs.storage import open_store
    from gantry.worker.checkpoints import resolve_checkpoint

    settings = get_settings()
    objects = open_store(settings.storage, endpoint_url=settings.s3_endpoint_url)
    found = resolve_checkpoint(objects, job_id, "latest")
    if found is None:
        raise SystemExit(f"job {job_id} has no checkpoint under {settings.storage}")
    checkpoint = objects.get_bytes(found[0])
    return load_train_spec(load_checkpoint(checkpoint)["spec"]), checkpoint, float("nan")


def _from_file(path: str) -> tuple[TrainSpecBase, bytes, float]:
    checkpoint = Path(path).read_bytes()
    return load_train_spec(load_checkpoint(checkpoint)["spec"]), checkpoint, float("nan")


def _metrics(spec: TrainSpecBase, checkpoint: bytes, names: list[str], seed: int) -> dict[str, Any]:
    ctx = EvalContext.local(checkpoint, spec, step=load_checkpoint(checkpoint)["step"], seed=seed)
    values: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        values.update(evaluate([name], ctx))
        values[f"{name} seconds"] = time.perf_counter() - started
    return values


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--text2img-job", help="a gantry train job id of text2img on shapes (else: train here)"
    )
    parser.add_argument("--dcgan-job", help="a gantry train job id of dcgan on shapes (else: train here)")
    parser.add_argument("--text2img-checkpoint", help="a text2img checkpoint file (.pt) instead")
    parser.add_argument("--dcgan-checkpoint", help="a dcgan checkpoint file (.pt) instead")
    parser.add_argument("--save", help="folder to write the checkpoints trained here to")
    parser.add_argument("--steps", type=int, default=2500, help="text2img steps when training here")
    parser.add_argument(
        "--dcgan-steps", type=int, default=2500, help="dcgan steps when training here (0: skip)"
    )
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="text2img option"
    )
    parser.add_argument("--dcgan-set", dest="dcgan_sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed")
    parser.add_argument("--train-seed", type=int, default=0, help="training seed (weights, batches, data)")
    parser.add_argument("--device", default="cpu", help="where to train: cpu (one thread) or cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    classifier = attribute_classifier(args.image_size)
    print(
        f"shapes classifier ({classifier.size}px), test accuracy: "
        + ", ".join(f"{k} {v:.4f}" for k, v in classifier.accuracy.items())
        + f"  [{time.perf_counter() - started:.0f}s incl. training if not cached]"
    )

    runs: list[tuple[str, TrainSpecBase, bytes, float, list[str]]] = []
    text_sets = dict(s.split("=", 1) for s in (args.sets or ["ngf=32", "ndf=32"]))
    if args.text2img_job:
        runs.append(("text2img", *_from_job(args.text2img_job), []))
    elif args.text2img_checkpoint:
        runs.append(("text2img", *_from_file(args.text2img_checkpoint), []))
    else:
        runs.append(
            (
                "text2img",
                *_train(
                    "text2img",
                    args.steps,
                    args.image_size,
                    args.batch_size,
                    text_sets,
                    args.train_seed,
                    device=args.device,
                ),
                [],
            )
        )
    if args.dcgan_job:
        runs.append(("dcgan", *_from_job(args.dcgan_job), []))
    elif args.dcgan_checkpoint:
        runs.append(("dcgan", *_from_file(args.dcgan_checkpoint), []))
    elif args.dcgan_steps:
        dcgan_sets = dict(s.split("=", 1) for s in (args.dcgan_sets or ["ngf=32", "ndf=32"]))
        runs.append(
            (
                "dcgan",
                *_train(
                    "dcgan",
                    args.dcgan_steps,
                    args.image_size,
                    args.batch_size,
                    dcgan_sets,
                    args.train_seed,
                    device=args.device,
                ),
                [],
            )
        )

    if args.save:
        Path(args.save).mkdir(parents=True, exist_ok=True)
        for model, _, checkpoint, seconds, _ in runs:
            if seconds == seconds:  # trained here (NaN: taken from a job or file)
                (Path(args.save) / f"{model}.pt").write_bytes(checkpoint)
    print()
    print(f"{'model':9} {'metric':28} {'value':>8}  {'target':>8}  met   (train s, options)")
    for model, spec, checkpoint, train_seconds, _ in runs:
        names = ["caption_faithfulness", "prompt_diversity"] if model == "text2img" else []
        names += ["arithmetic_accuracy", "interpolation_validity"]
        values = _metrics(spec, checkpoint, names, args.seed)
        options = ", ".join(f"{k}={v}" for k, v in spec.options.model_dump().items())  # type: ignore[attr-defined]
        print(
            f"{model:9} steps {spec.steps}, {spec.image_size}px, batch {spec.batch_size}, trained {train_seconds:.0f}s; {options}"
        )
        for name, value in values.items():
            if name.endswith("seconds"):
                continue
            op, target = TARGETS.get(name, ("", None))
            met = "" if target is None else ("yes" if value >= target else "NO")
            shown_target = "" if target is None else f"{op}{target:.2f}"
            print(f"{'':9} {name:28} {value:8.4f}  {shown_target:>8}  {met}")
        print(
            f"{'':9} evaluation seconds: "
            + ", ".join(f"{k.split()[0]} {v:.0f}" for k, v in values.items() if k.endswith("seconds"))
        )


if __name__ == "__main__":
    main()
