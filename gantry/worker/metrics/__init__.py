"""Evaluation metrics by name: what `gantry evaluate` and the end of training compute.

`gantry.jobs.specs.METRICS` says where each metric applies (torch-free, checked at submit time);
`EVALUATORS` here maps the same name to the function that computes it, one module per family:
`modes` (PacGAN's mode counts, with the digit classifier in `digits`), `shapes` (text to image and
latent walks, read by `shapes_classifier`), `sr` (PSNR and SSIM), `classifier` (CAS, GAN-train,
GAN-test and the classifier's Fréchet distance, read by `label_classifier`, trained per data set),
`inception` (FID, KID, IS and precision/recall by torch-fidelity). Families are imported when first
used, so importing this registry imports none of them.

An evaluator takes an `EvalContext` and returns {key: value}; it may return several related values
(e.g. `modes`, `high_quality`, `reverse_kl`) and save files (plots, figures) through `ctx.save`.
One function may compute several metrics in one pass (`psnr` and `ssim` super-resolve the same
images): each metric takes the values its declaration names, and `evaluate` calls the function
once for all of them. Long evaluators call `ctx.report(done, total)` between chunks, which
reports progress (a running job heartbeats) and raises `Stopped` when the job was cancelled.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gantry.jobs.settings import Settings, get_settings
from gantry.jobs.specs import METRICS, EvaluateSpec, TrainSpecBase
from gantry.worker.errors import Stopped

if TYPE_CHECKING:  # a family module: importing the registry imports none
    from gantry.worker.gan.checkpoint import Checkpoint
    from gantry.worker.metrics.cache import Cache

log = logging.getLogger(__name__)


# metric name -> "module:function" in this package that computes it (imported when first used). One
# line per metric; metrics computed in one pass share a function, and each takes the values its
# declaration (`METRICS[name].keys`) names.
EVALUATORS: dict[str, str] = {
    "modes_2d": "modes:modes_2d",
    "modes_stacked": "modes:modes_stacked",
    "psnr": "sr:psnr_ssim",
    "ssim": "sr:psnr_ssim",
    "caption_faithfulness": "shapes:caption_faithfulness",
    "prompt_diversity": "shapes:prompt_diversity",
    "arithmetic_accuracy": "shapes:arithmetic_accuracy",
    "interpolation_validity": "shapes:interpolation_validity",
    "sample_validity": "shapes:sample_validity",
    "cas": "classifier:trained_on_samples",
    "gan_train": "classifier:trained_on_samples",
    "gan_test": "classifier:gan_test",
    "fd_classifier": "classifier:fd_classifier",
    "fid": "inception:fidelity",
    "kid": "inception:fidelity",
    "inception_score": "inception:fidelity",
    "precision_recall": "inception:fidelity",
}


@dataclass
class EvalContext:
    # The train job's checkpoint: its file's bytes, or (its own end-of-training metrics) the dict
    # they were written from.
    checkpoint: Checkpoint
    step: int  # its step
    train_spec: TrainSpecBase
    spec: EvaluateSpec
    device: Any  # torch.device
    save: Callable[[str, bytes], None]  # (file name, bytes) -> an artifact of the job
    should_stop: Callable[[], bool]  # True once the job was asked to stop
    progress: Callable[[int, int], None]  # (done, total) chunks of the evaluator running now
    # The worker's settings: GANTRY_INCEPTION_WEIGHTS for the Inception metrics, where data is fetched from.
    settings: Settings = field(default_factory=get_settings)
    # Where metrics keep what they reuse across jobs (a classifier per data set, a data set's Inception
    # features); None: nothing kept.
    cache: Cache | None = None
    # The train job's data set by split ("train" or "test"); None: `load_dataset` of the spec's data
    # set (a built-in name or a local path). A job passes one that fetches the user's data once.
    data: Callable[[str], Any] | None = None
    # How many samples metrics that take a count draw (eval_every's eval_samples); None: their own
    # (an evaluate job's --samples for the Inception metrics).
    samples: int | None = None

    def report(self, done: int, total: int) -> None:
        """Between two chunks of an evaluation: report progress, and stop if the job was cancelled."""
        self.progress(done, total)
        if self.should_stop():
            raise Stopped

    def load_data(self, split: str) -> Any:
        """The train job's data set, split `split` (user data has one: both give all of it; split
        `labelled` is the user's folder with classes from its sub-folders, None without them)."""
        if self.data is not None:
            return self.data(split)
        if split == "labelled":
            return self.load_data("train")
        from gantry.worker.data import load_dataset

        spec = self.train_spec
        return load_dataset(spec.dataset, image_size=spec.image_size, seed=spec.seed, split=split)

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
            progress=lambda done, total: None,
        )


def labelled_train(load: Callable[[str], Any], dataset: str) -> Any | None:
    """The train split (`load(split)`, a data loader by split) with labels: its own, or for the
    user's folder or zip read by a model trained without labels, its sub-folders as classes (split
    `labelled`); None when it has neither."""
    from gantry.jobs.datasets import DATASETS

    train = load("train")
    if getattr(train, "labels", None) is None and dataset not in DATASETS:
        train = load("labelled")
    return train if getattr(train, "labels", None) is not None else None


def _function(name: str) -> Callable[[EvalContext], dict[str, Any]]:
    module, _, function = EVALUATORS[name].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def evaluate_each(names: list[str], ctx: EvalContext) -> Iterator[tuple[str, dict[str, float]]]:
    """(name, its values) for each of `names` in order, each as soon as it is computed; a function
    that computes several of them runs once, for the first. A metric's values are the keys its
    declaration names; a function that does not give each of them is a bug, and raises."""
    computed: dict[str, dict[str, Any]] = {}  # function -> all its values
    for name in names:
        function = EVALUATORS[name]
        if function not in computed:
            computed[function] = _function(name)(ctx)
        everything, declared = computed[function], METRICS[name].keys
        missing = [key for key in declared if key not in everything]
        if missing:
            raise KeyError(f"{function} did not compute {', '.join(missing)}, which metric {name} declares")
        values = {key: float(everything[key]) for key in declared}
        log.info("%s at step %d: %s", name, ctx.step, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
        yield name, values


def evaluate(names: list[str], ctx: EvalContext) -> dict[str, float]:
    """The values of metrics `names` on `ctx`'s checkpoint, in one dict."""
    return {key: value for _, values in evaluate_each(names, ctx) for key, value in values.items()}
