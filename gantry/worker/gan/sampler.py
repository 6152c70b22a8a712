"""Sample images from a training checkpoint: one PNG per image and a grid of all of them."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gantry.worker.gan.checkpoint import Checkpoint, load_generator
from gantry.worker.gan.images import grid_png, png_bytes, to_uint8

log = logging.getLogger(__name__)

GENERATE_BATCH = 256  # latents per G forward: bounds memory for large counts


@dataclass
class SampleResult:
    images: list[bytes]  # one PNG per sample, in latent order
    grid: bytes | None  # PNG of all samples, about square (None: no grid makes sense)
    names: list[str] | None = None  # file names of `images`; None: 000000.png, 000001.png, ...
    extra: dict[str, bytes] = field(default_factory=dict)  # more files for images/, e.g. points.npy


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def generate(
    G: nn.Module, z: torch.Tensor, *, cond: torch.Tensor | None = None, device: torch.device | None = None
) -> np.ndarray:
    """G(z) as uint8 images (N, H, W, C), with G in eval mode; G(z, cond) when `cond` (one row per z,
    e.g. text embeddings) is given.

    Eval mode makes batch norm use its running statistics, so an image depends on its own z
    only, not on which other latents share its batch; G's training mode is restored after.
    """
    device = device or next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        if cond is None:
            chunks = [to_uint8(G(z_chunk.to(device))) for z_chunk in z.split(GENERATE_BATCH)]
        else:
            pairs = zip(z.split(GENERATE_BATCH), cond.split(GENERATE_BATCH), strict=True)
            chunks = [to_uint8(G(z_chunk.to(device), c_chunk.to(device))) for z_chunk, c_chunk in pairs]
    finally:
        G.train(was_training)
    return np.concatenate(chunks)


@torch.no_grad()
def generate_outputs(G: nn.Module, z: torch.Tensor, *, device: torch.device | None = None) -> torch.Tensor:
    """G(z) as a float CPU tensor (N, ...), with G in eval mode: for outputs that are not images."""
    device = device or next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        return torch.cat([G(z_chunk.to(device)).float().cpu() for z_chunk in z.split(GENERATE_BATCH)])
    finally:
        G.train(was_training)


@dataclass
class Batches:
    """A checkpoint's samples a batch at a time (`sample_batches`): `render` is set instead for a
    model whose outputs are not images (its files, made whole)."""

    step: int
    batches: Iterator[np.ndarray]  # uint8 (n, H, W, C), GENERATE_BATCH at a time, in latent order
    render: SampleResult | None = None


def sample_batches(
    checkpoint: bytes, *, count: int, seed: int, device: torch.device | str | None = None
) -> Batches:
    """`count` images from G in the checkpoint as `sample` makes them (the same latents from `seed`,
    so the same pixels), a batch at a time: a bulk sample job never holds them all."""
    if count < 1:
        raise ValueError("count must be at least 1")
    device = torch.device(device) if device is not None else default_device()
    loaded = load_generator(checkpoint, device=device)
    z = loaded.sample_latents(count, torch.Generator().manual_seed(seed))
    if loaded.render is not None:
        return Batches(
            loaded.step, iter(()), render=loaded.render(generate_outputs(loaded.G, z, device=device))
        )
    return Batches(
        loaded.step, (generate(loaded.G, chunk, device=device) for chunk in z.split(GENERATE_BATCH))
    )


def sample(
    checkpoint: bytes, *, count: int, seed: int, device: torch.device | str | None = None
) -> SampleResult:
    """`count` images from G in the checkpoint, from latents drawn with `seed` (same seed, same bytes)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    device = torch.device(device) if device is not None else default_device()
    loaded = load_generator(checkpoint, device=device)
    z = loaded.sample_latents(count, torch.Generator().manual_seed(seed))
    if loaded.render is not None:  # not images (2-D points): the model makes its own files
        log.info("sampled %d outputs from step %d with seed %d", count, loaded.step, seed)
        return loaded.render(generate_outputs(loaded.G, z, device=device))
    images = generate(loaded.G, z, device=device)  # (count, H, W, C) uint8
    log.info("sampled %d images from step %d with seed %d", count, loaded.step, seed)
    return SampleResult(
        images=[png_bytes(image) for image in images],
        grid=grid_png(images, nrow=math.ceil(math.sqrt(count))),
    )


def generated_images(
    checkpoint: Checkpoint, *, count: int, seed: int, captions: Sequence[str] | None, device: torch.device
) -> np.ndarray:
    """`count` uint8 images (N, H, W, C) from the checkpoint's G, latents drawn as sample jobs draw
    them from `seed`. text2img draws each image for a caption of the training data picked at random
    (the distribution of G(z, φ(t)) over the data's captions is what FID compares with the data)."""
    loaded = load_generator(checkpoint, device=device)
    generator = torch.Generator().manual_seed(seed)
    if loaded.spec.prompted_by != "captions":
        return generate(loaded.G, loaded.sample_latents(count, generator), device=device)
    from gantry.worker.gan.models.text2img import TextGenerator

    if not captions:
        raise ValueError("a text2img job's data set has captions")
    text = TextGenerator(loaded)
    picked = np.random.default_rng(seed).integers(len(captions), size=count)
    z = text.latents(count, generator)
    chunks = []
    for start in range(0, count, GENERATE_BATCH):
        phi = text.embed([captions[i] for i in picked[start : start + GENERATE_BATCH]])
        chunks.append(generate(text.G, z[start : start + GENERATE_BATCH], cond=phi, device=device))
    return np.concatenate(chunks)
