"""`psnr` and `ssim` for srresnet/srgan jobs: the model and bicubic on the validation images, in one
pass (both metrics read the same super-resolved images).

Each HR image is cropped to a multiple of the scale, downsampled bicubically to make its LR input,
then upscaled by bicubic and by G (tiled); both are compared with the HR image on Y with a
`scale`-pixel border cropped (`gantry.worker.sr.ops`). The values are means over the images, as the
SR papers report them. For `photos` the validation images are the held-out ones; user data has no
held-out split, so its own images are used (docs/super-resolution.md).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from gantry.jobs.settings import get_settings
from gantry.jobs.specs import BUILTIN_DATASETS, TrainSpecBase
from gantry.jobs.storage import fetch_to_local
from gantry.worker.metrics import EvalContext
from gantry.worker.sr.ops import bicubic_resize, mod_crop, y_psnr_ssim
from gantry.worker.sr.upscale import load_upscaler, super_resolve

log = logging.getLogger(__name__)


def validation_images(spec: TrainSpecBase) -> list[np.ndarray]:
    """The HR images a job is measured on: the validation split of its data set, full size."""
    from gantry.worker.data import load_dataset

    source = spec.dataset
    with tempfile.TemporaryDirectory(prefix="gantry-data-") as scratch:
        if source not in BUILTIN_DATASETS:
            source = str(fetch_to_local(source, Path(scratch), endpoint_url=get_settings().s3_endpoint_url))
        data = load_dataset(source, image_size=spec.image_size, seed=spec.seed, split="test", full_size=True)
    return list(data.images)


def sr_scores(
    G: torch.nn.Module,
    images: list[np.ndarray],
    *,
    scale: int,
    report: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """Per-image psnr, ssim, psnr_bicubic, ssim_bicubic of G against bicubic on HR `images`;
    `report(done, total)` after each image."""
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_bicubic": [], "ssim_bicubic": []}
    for i, image in enumerate(images):
        hr = mod_crop(image, scale)
        h, w = hr.shape[:2]
        lr = bicubic_resize(hr, h // scale, w // scale)
        for name, sr in (("", super_resolve(G, lr)), ("_bicubic", bicubic_resize(lr, h, w))):  # type: ignore[arg-type]
            p, s = y_psnr_ssim(sr, hr, scale=scale)
            scores["psnr" + name].append(p)
            scores["ssim" + name].append(s)
        if report is not None:
            report(i + 1, len(images))
    return scores


def psnr_ssim(ctx: EvalContext) -> dict[str, float]:
    """`psnr` and `ssim`, one pass over the validation images: PSNR (dB) and SSIM on Y of the model
    and of bicubic, means over the images."""
    loaded = load_upscaler(ctx.checkpoint, device=ctx.device)
    G, spec = loaded.G, loaded.spec
    scale = spec.options.scale  # type: ignore[attr-defined]
    scores = sr_scores(G, validation_images(spec), scale=scale, report=ctx.report)
    return {name: float(np.mean(values)) for name, values in scores.items()}
