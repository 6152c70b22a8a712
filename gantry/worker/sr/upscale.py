"""Super-resolve users' images with a trained SRResNet/SRGAN generator: `gantry sample JOB --input ...`.

Any image size: the LR image is cut into tiles of `tile` x `tile` pixels, each run through G with
`pad` pixels of real context on every side (G's receptive radius by default), and only the tile's
own part of the output is kept. Batch norm in eval mode works per pixel, so with that much context
the tiled result equals the untiled one (to float rounding), while memory stays bounded by the tile
size whatever the image size.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.jobs.storage import check_key, fetch_to_local
from gantry.worker.data.limits import ByteBudget, DataLimits
from gantry.worker.gan import checkpoint as gan_checkpoint
from gantry.worker.gan.checkpoint import LoadedGenerator
from gantry.worker.gan.images import png_bytes, to_uint8
from gantry.worker.gan.loop import images_to_tensor
from gantry.worker.gan.models.srresnet import Generator
from gantry.worker.gan.sampler import SampleResult, default_device

log = logging.getLogger(__name__)

TILE = 128  # LR pixels per tile side: an estimated 0.5 GB of activations at 4x with 64 channels


def load_upscaler(checkpoint: bytes | dict[str, Any], *, device: torch.device | str) -> LoadedGenerator:
    """The checkpoint's G (`checkpoint.load_generator`), refused unless its model super-resolves
    images (a sample job of it takes an `--input`)."""
    loaded = gan_checkpoint.load_generator(checkpoint, device=device)
    if "input" not in loaded.spec.sample_modes:
        raise InvalidInput("input", f"{loaded.spec.model} jobs do not super-resolve images")
    return loaded


@torch.no_grad()
def upscale_tensor(
    G: Generator, lr: torch.Tensor, *, tile: int = TILE, pad: int | None = None
) -> torch.Tensor:
    """I^LR (1, C, H, W) in [-1, 1] on any device -> I^SR (1, C, rH, rW) on the CPU, tile by tile."""
    if tile < 1:
        raise ValueError(f"tile must be positive, not {tile}")
    pad = G.receptive_radius() if pad is None else pad
    device = next(G.parameters()).device
    s = G.scale
    _, c, h, w = lr.shape
    out = torch.empty((1, c, h * s, w * s))
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            bottom, right = min(top + tile, h), min(left + tile, w)
            # The tile plus `pad` pixels of context, clipped at the image border (where G pads
            # with zeros, as it does on the whole image).
            t0, l0 = max(top - pad, 0), max(left - pad, 0)
            b0, r0 = min(bottom + pad, h), min(right + pad, w)
            sr = G(lr[:, :, t0:b0, l0:r0].to(device))  # (1, C, r(b0-t0), r(r0-l0))
            own = sr[:, :, (top - t0) * s : (bottom - t0) * s, (left - l0) * s : (right - l0) * s]
            out[:, :, top * s : bottom * s, left * s : right * s] = own.cpu()
    return out


def super_resolve(G: Generator, image: np.ndarray, *, tile: int = TILE) -> np.ndarray:
    """uint8 H x W x C -> uint8 rH x rW x C."""
    was_training = G.training
    G.eval()
    try:
        sr = upscale_tensor(G, images_to_tensor(image[None], torch.device("cpu")), tile=tile)
    finally:
        G.train(was_training)
    return to_uint8(sr)[0]


def _input_files(local: Path, limits: DataLimits | None = None) -> list[tuple[str, Path]]:
    """(name relative to the input, path) of each image to super-resolve, sorted. Names become the
    outputs' keys, so each is checked (`check_key`); there are at most `limits.max_files`."""
    from gantry.worker.data.files import IMAGE_EXTENSIONS, folder_image_paths

    limits = limits if limits is not None else DataLimits()
    if local.is_file():
        return [(check_key(local.name, field="input"), local)]
    if local.is_dir():
        found = folder_image_paths(local, limits, field="input")
        if not found:
            raise InvalidInput(
                "input", f"{local}: no images inside (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        return [(check_key(str(rel), field="input"), local / rel) for rel in found]
    raise InvalidInput("input", f"{local} does not exist")


def _output_names(names: list[str]) -> list[str]:
    """`photos/cat.jpg` -> `photos/cat.png`; the full name plus .png where two inputs would collide."""
    stems = [str(PurePosixPath(n).with_suffix(".png")) for n in names]
    return [s if stems.count(s) == 1 else n + ".png" for s, n in zip(stems, names, strict=True)]


def super_resolve_input(
    checkpoint: bytes, input_uri: str, *, settings: Settings, device: torch.device | str | None = None
) -> SampleResult:
    """Super-resolve one image, a folder or an S3 prefix of images; outputs are PNGs named like the inputs.

    Raises InvalidInput("input", ...) for a file that is not an image or a name that would leave the
    job's folder, and DataLimitExceeded (an InvalidInput) for an image with more than
    `settings.max_input_pixels` pixels (checked before it is decoded), more files than
    `settings.max_data_files` or more bytes than `settings.max_data_file_bytes` / `max_data_bytes`.
    """
    device = torch.device(device) if device is not None else default_device()
    from gantry.worker.data.files import read_file
    from gantry.worker.data.photos import decode_rgb

    limits = DataLimits.from_settings(settings)
    loaded = load_upscaler(checkpoint, device=device)
    G, channels = loaded.G, loaded.channels
    with tempfile.TemporaryDirectory(prefix="gantry-input-") as scratch:
        local = fetch_to_local(
            input_uri,
            Path(scratch),
            endpoint_url=settings.s3_endpoint_url,
            field="input",
            max_files=limits.max_files,
            max_bytes=limits.max_bytes,
        )
        files = _input_files(local, limits)
        budget = ByteBudget(limits, field="input")
        images: list[bytes] = []
        for name, path in files:
            content = read_file(path, limits, budget, field="input")
            rgb = decode_rgb(content, name, field="input", max_pixels=limits.max_pixels)
            lr = rgb if channels == 3 else np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
            sr = super_resolve(G, lr)
            images.append(png_bytes(sr))
            log.info(
                "super-resolved %s: %dx%d -> %dx%d", name, lr.shape[1], lr.shape[0], sr.shape[1], sr.shape[0]
            )
    return SampleResult(images=images, grid=None, names=_output_names([n for n, _ in files]))
