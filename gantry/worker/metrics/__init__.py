"""Evaluation metrics by name: what `gantry evaluate` and the end of training compute.

`gantry.jobs.specs.METRICS` says where each metric applies (torch-free, checked at submit time);
`EVALUATORS` here maps the same name to the function that computes it. A function takes an
`EvalContext` and returns {metric name: value} (it may return several related values, e.g.
`modes`, `high_quality`, `reverse_kl`), and may save files (plots, images) through `ctx.save`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gantry.jobs.specs import EvaluateSpec, TrainSpecBase

log = logging.getLogger(__name__)

# metric name -> "module:function". One line per metric.
EVALUATORS: dict[str, str] = {
    "modes_2d": "gantry.worker.metrics.modes:evaluate_points",
    "modes_stacked": "gantry.worker.metrics.modes:evaluate_stacked",
    "psnr": "gantry.worker.metrics.sr:psnr",
    "ssim": "gantry.worker.metrics.sr:ssim",
    "caption_faithfulness": "gantry.worker.metrics.shapes:caption_faithfulness",
    "prompt_diversity": "gantry.worker.metrics.shapes:prompt_diversity",
    "arithmetic_accuracy": "gantry.worker.metrics.shapes:arithmetic_accuracy",
    "interpolation_validity": "gantry.worker.metrics.shapes:interpolation_validity",
    "sample_validity": "gantry.worker.metrics.shapes:sample_validity",
}


@dataclass
class EvalContext:
    checkpoint: bytes  # the train job's checkpoint file
    step: int  # its step
    train_spec: TrainSpecBase
    spec: EvaluateSpec
    device: Any  # torch.device
    save: Callable[[str, bytes], None]  # (file name, bytes) -> an artifact of the job
    should_stop: Callable[[], bool]

    @classmethod
    def local(cls, checkpoint: bytes, train_spec: TrainSpecBase, *, step: int, seed: int = 0) -> EvalContext:
        """A context outside any job (benches, tests): the CPU, files not kept, never stopped."""
        import torch

        return cls(
            checkpoint=checkpoint,
            step=step,
            train_spec=train_spec,
            spec=EvaluateSpec(seed=seed),
            device=torch.device("cpu"),
            save=lambda name, data: None,
            should_stop=lambda: False,
        )


def evaluate(name: str, ctx: EvalContext) -> dict[str, float]:
    module_name, _, function = EVALUATORS[name].partition(":")
    fn = getattr(importlib.import_module(module_name), function)
    values = fn(ctx)
    log.info("%s at step %d: %s", name, ctx.step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
    return {k: float(v) for k, v in values.items()}
