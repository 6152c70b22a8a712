"""Mode-collapse metrics: PacGAN's protocols (Lin et al. 2017, arXiv 1712.04086, §5).

2-D mixtures (`ring8`, `grid25`; the protocol of VEEGAN, arXiv 1705.07761, §5.1):
2,500 samples; a sample is *high quality* when it lies within three standard deviations of its
nearest mode; a mode is *captured* when at least one high-quality sample has it as nearest mode;
`reverse_kl` is KL(p || uniform) of the histogram p of high-quality samples over the modes
("reverse": the generator's distribution comes first, so a missed mode costs nothing by itself,
but the mass it leaves elsewhere does). With no high-quality sample at all it is log K, as for a
generator that collapsed onto a single mode.

`stacked-digits` (PacGAN Table 2, after Metz et al. 2016, arXiv 1611.02163): 26,000 samples, each
channel read by `digit_classifier`; a mode is a (R, G, B) digit triple, captured when at least one
sample is classified as it; `kl_uniform` is KL(p || uniform over 1000) of the triple histogram.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gantry.worker.data.points import Layout, layout
from gantry.worker.gan.checkpoint import Checkpoint, LoadedGenerator, load_generator
from gantry.worker.gan.sampler import GENERATE_BATCH
from gantry.worker.metrics import EvalContext

log = logging.getLogger(__name__)

POINT_SAMPLES = 2_500
STACKED_SAMPLES = 26_000
STACKED_MODES = 1_000
HIGH_QUALITY_STDS = 3.0
# Stacked samples made and classified per chunk, between progress reports: a multiple of the
# sampler's batch, so that G sees the same batches (and gives the same images) as in one call.
CHUNK = 8 * GENERATE_BATCH


def _kl_to_uniform(counts: np.ndarray) -> float:
    """KL(p || uniform) in nats for histogram `counts` over K bins (0 log 0 = 0)."""
    p = counts[counts > 0] / counts.sum()
    return float((p * np.log(p * len(counts))).sum())


def point_metrics(points: np.ndarray, mixture: Layout) -> dict[str, float]:
    """PacGAN's 2-D metrics of samples (N, 2): modes, high_quality (a share, 0..1), reverse_kl."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    distance = np.linalg.norm(points[:, None, :] - mixture.means[None], axis=2)  # (N, K)
    nearest = distance.argmin(1)  # (N,)
    high_quality = distance[np.arange(len(points)), nearest] <= HIGH_QUALITY_STDS * mixture.std
    counts = np.bincount(nearest[high_quality], minlength=mixture.modes)  # (K,)
    return {
        "modes": float((counts > 0).sum()),
        "high_quality": float(high_quality.mean()) if len(points) else 0.0,
        "reverse_kl": _kl_to_uniform(counts) if counts.sum() else math.log(mixture.modes),
    }


def stacked_metrics(digits: np.ndarray) -> dict[str, float]:
    """Metrics of classified samples, int (N, 3) digits of (R, G, B): modes (of 1000), kl_uniform."""
    triples = digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]  # (N,) in 0..999
    counts = np.bincount(triples, minlength=STACKED_MODES)
    return {"modes": float((counts > 0).sum()), "kl_uniform": _kl_to_uniform(counts)}


def _points(loaded: LoadedGenerator, *, count: int, seed: int) -> np.ndarray:
    """`count` 2-D samples (float32 (count, 2)) of a loaded gan G, latents drawn with `seed`."""
    from gantry.worker.gan.sampler import generate_outputs

    z = loaded.sample_latents(count, torch.Generator().manual_seed(seed))
    return generate_outputs(loaded.G, z, device=loaded.device).numpy().reshape(count, 2)


def sample_points(checkpoint: Checkpoint, *, count: int, seed: int, device: Any = "cpu") -> np.ndarray:
    """`count` 2-D samples (float32 (count, 2)) of a gan checkpoint, latents drawn with `seed`."""
    return _points(load_generator(checkpoint, device=device), count=count, seed=seed)


def points_metrics_from_checkpoint(
    checkpoint: Checkpoint, *, seed: int, device: Any = "cpu"
) -> dict[str, float]:
    loaded = load_generator(checkpoint, device=device)
    points = _points(loaded, count=POINT_SAMPLES, seed=seed)
    return point_metrics(points, layout(loaded.spec.dataset))


def stacked_metrics_from_checkpoint(
    checkpoint: Checkpoint,
    *,
    seed: int,
    device: Any = "cpu",
    count: int = STACKED_SAMPLES,
    report: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Classify `count` samples channel by channel; the metrics and the classifier's accuracy.
    Samples are made and read CHUNK at a time, `report(done, count)` after each chunk."""
    from gantry.worker.gan.sampler import generate
    from gantry.worker.metrics.digits import digit_classifier

    model = load_generator(checkpoint, device=device)
    spec = model.spec
    z = model.sample_latents(count, torch.Generator().manual_seed(seed))
    classifier = digit_classifier(spec.image_size)
    digits = []
    for start in range(0, count, CHUNK):
        images = generate(model.G, z[start : start + CHUNK], device=model.device)  # uint8 (n, S, S, 3)
        channels = images.transpose(0, 3, 1, 2).reshape(-1, spec.image_size, spec.image_size)  # (3n, S, S)
        digits.append(classifier.predict(channels).reshape(-1, 3))
        if report is not None:
            report(min(start + CHUNK, count), count)
    return {**stacked_metrics(np.concatenate(digits)), "classifier_accuracy": classifier.accuracy}


# --- Evaluators (`gantry.worker.metrics.EVALUATORS`) ----------------------------------------------


def modes_2d(ctx: EvalContext) -> dict[str, float]:
    """`modes_2d`: modes, high_quality, reverse_kl on 2,500 samples; saves their scatter plot."""
    from gantry.worker.gan.scatter import scatter_png

    points = sample_points(ctx.checkpoint, count=POINT_SAMPLES, seed=ctx.spec.seed, device=ctx.device)
    ctx.report(1, 1)  # 2,500 points of an MLP: one chunk
    mixture = layout(ctx.train_spec.dataset)
    ctx.save(f"scatter-step-{ctx.step:08d}.png", scatter_png(points, mixture))
    return point_metrics(points, mixture)


def modes_stacked(ctx: EvalContext) -> dict[str, float]:
    """`modes_stacked`: modes (of 1000), kl_uniform, classifier_accuracy on 26,000 samples."""
    return stacked_metrics_from_checkpoint(
        ctx.checkpoint, seed=ctx.spec.seed, device=ctx.device, report=ctx.report
    )
