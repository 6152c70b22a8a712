"""Walks in G's latent space: interpolation between two seeds and vector arithmetic on averaged seeds.

Both come from the DCGAN paper (Radford et al. 2015, arXiv 1511.06434): §6.1 walks between latents
to show that G has learnt a smooth space rather than memorised images; §6.3 averages the z of three
exemplars per concept (one z is unstable) and adds and subtracts the averages, "smiling woman" -
"neutral woman" + "neutral man" = "smiling man", decoding the result with a little noise added.

A seed means the z that `gantry sample --seed SEED --count 1` draws, so a user picks exemplars
from sample grids. Interpolation is spherical by default (White 2016, "Sampling generative
networks", arXiv 1609.04468): z ~ N(0, I) lives near a sphere of radius sqrt(nz), and the straight
line between two latents cuts through the low-density inside, where the midpoint's norm is about
1/sqrt(2) of the endpoints'. For `text2img` the walk is over z at fixed text: the prompt given, or
the first caption the model trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import MODELS, DCGANOptions, load_train_spec, parse_arithmetic
from gantry.worker.gan.checkpoint import Checkpoint, load_checkpoint, load_generator
from gantry.worker.gan.figures import labelled_rows
from gantry.worker.gan.images import png_bytes
from gantry.worker.gan.sampler import SampleResult, default_device, generate

log = logging.getLogger(__name__)

ARITHMETIC_NOISE = 0.25  # uniform +-0.25 added to the result's z (DCGAN paper, Fig. 7)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a and b (same shape) at fractions t (T,) -> (T, *a.shape).

    sin((1-t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b, Ω the angle between a and b (White 2016). t = 0 and
    t = 1 give a and b exactly; nearly parallel latents fall back to linear interpolation.
    """
    a64, b64, t64 = a.double().flatten(), b.double().flatten(), t.double()[:, None]
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6:
        out = (1 - t64) * a64 + t64 * b64
    else:
        out = (torch.sin((1 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / torch.sin(omega)
    out = out.to(a.dtype).view(len(t), *a.shape)
    out[t == 0] = a  # exact endpoints, not sin(Ω)/sin(Ω) rounded
    out[t == 1] = b
    return out


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation (1-t)·a + t·b at fractions t (T,) -> (T, *a.shape)."""
    shape = (len(t),) + (1,) * a.ndim
    out = (1 - t.view(shape)) * a + t.view(shape) * b
    out[t == 0] = a
    out[t == 1] = b
    return out


def path(a: torch.Tensor, b: torch.Tensor, frames: int, method: Literal["slerp", "linear"]) -> torch.Tensor:
    """`frames` latents from a to b inclusive (frames, *a.shape)."""
    t = torch.linspace(0, 1, frames)
    return slerp(a, b, t) if method == "slerp" else lerp(a, b, t)


@dataclass
class LatentDecoder:
    """G of a dcgan or text2img checkpoint, with the z of a seed and text2img's text encoder."""

    model: str
    G: torch.nn.Module
    latent_shape: tuple[int, ...]
    device: torch.device
    # (n, generator) -> n latents (n, *latent_shape), drawn as the model draws them in training and
    # in sample jobs (z ~ N(0, I), with InfoGAN's one-hot codes after it where the model has them).
    sample: Callable[[int, torch.Generator], torch.Tensor]
    text: object | None = None  # text2img: a models.text2img.TextGenerator
    # dcgan with `code_walk=switch`: latents -> what G reads (z's codes as their larger values);
    # text2img's G reads its codes itself.
    read: Callable[[torch.Tensor], torch.Tensor] | None = None

    def latent(self, seed: int) -> torch.Tensor:
        """The z of `gantry sample --seed SEED --count 1` (*latent_shape)."""
        return self.sample(1, torch.Generator().manual_seed(seed))[0]

    def latents(self, seeds: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.latent(seed) for seed in seeds])

    def default_text(self) -> str | None:
        examples = getattr(self.text, "example_captions", None)
        return examples[0] if examples else None

    def decode(self, z: torch.Tensor, text: str | None = None) -> np.ndarray:
        """G(z) (text2img: G(z, φ(text)) for every z) as uint8 images (N, H, W, C)."""
        if self.read is not None:
            z = self.read(z)
        if self.text is None:
            return generate(self.G, z, device=self.device)
        phi = self.text.embed([text or self.default_text() or ""])  # type: ignore[attr-defined]
        return generate(self.G, z, cond=phi.expand(len(z), -1), device=self.device)


def load_decoder(
    checkpoint: Checkpoint, *, device: torch.device | str | None = None, code_walk: str | None = None
) -> LatentDecoder:
    """The checkpoint's G as a LatentDecoder; `code_walk`: read its codes so (`--code-walk`; default:
    as the train job's options say)."""
    device = torch.device(device) if device is not None else default_device()
    state = load_checkpoint(checkpoint, map_location="cpu")
    spec = load_train_spec(state["spec"])
    model = spec.model
    if "interpolate" not in spec.sample_modes:
        walkers = " or ".join(name for name, cls in MODELS.items() if "interpolate" in cls.sample_modes)
        raise InvalidInput("model", f"latent walks need a {walkers} job, not {model}")
    if code_walk is not None:
        spec.check_code_walk(code_walk)  # as the service checks it at submit
    loaded = load_generator(state, device=device)
    if spec.prompted_by == "captions":  # G also reads a text embedding
        from gantry.worker.gan.models.text2img import TextGenerator

        text = TextGenerator(loaded, code_walk=code_walk)
        return LatentDecoder(model, text.G, text.latents.latent_shape, device, text.latents, text)
    # InfoGAN's and AC-GAN's coded latents where the model has them (they know where each code sits).
    codes = loaded.codes
    read = None
    trained = spec.options.code_walk if isinstance(spec.options, DCGANOptions) else "blend"
    if (code_walk or trained) == "switch":
        assert codes is not None  # checked: the train option's validator, check_code_walk
        read = codes.switch
    return LatentDecoder(
        model, loaded.G, loaded.latent_shape, device, codes or loaded.sample_latents, read=read
    )


def interpolate(
    checkpoint: bytes,
    *,
    seed_a: int,
    seed_b: int,
    frames: int,
    method: Literal["slerp", "linear"] = "slerp",
    prompts: Sequence[str] = (),
    device: torch.device | str | None = None,
    code_walk: str | None = None,
) -> SampleResult:
    """`frames` images from seed_a's z to seed_b's, endpoints included; text2img: one row per prompt."""
    decoder = load_decoder(checkpoint, device=device, code_walk=code_walk)
    z = path(decoder.latent(seed_a), decoder.latent(seed_b), frames, method)
    texts: list[str | None] = list(prompts) or [decoder.default_text()]
    rows, images, names = [], [], []
    for i, text in enumerate(texts):
        row = decoder.decode(z, text)
        label = text if text is not None else f"{seed_a} -> {seed_b}"
        rows.append((label, list(row)))
        prefix = f"p{i:02d}-" if len(texts) > 1 else ""
        images += [png_bytes(image) for image in row]
        names += [f"{prefix}frame-{k:03d}.png" for k in range(frames)]
    log.info("interpolated %d frames (%s) from seed %d to %d", frames, method, seed_a, seed_b)
    return SampleResult(images=images, grid=labelled_rows(rows), names=names)


def arithmetic_latent(
    terms: list[tuple[int, list[int]]], decoder: LatentDecoder
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Σ sign · mean(z of the term's seeds) (*latent_shape), and each term's mean."""
    means = [decoder.latents(seeds).mean(0) for _, seeds in terms]
    total = torch.zeros_like(means[0])
    for (sign, _), mean in zip(terms, means, strict=True):
        total += sign * mean
    return total, means


def noisy_results(z: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """z itself, then count - 1 copies with uniform noise in +-ARITHMETIC_NOISE (count, *z.shape)."""
    noise = torch.rand((count - 1, *z.shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.cat([z[None], z[None] + ARITHMETIC_NOISE * noise])


def arithmetic(
    checkpoint: bytes,
    expression: str,
    *,
    count: int,
    seed: int,
    prompts: Sequence[str] = (),
    device: torch.device | str | None = None,
    code_walk: str | None = None,
) -> SampleResult:
    """Decode "3,17,42 - 5,8 + 11,12": each term's exemplars and their average, then the result's z
    and `count - 1` noisy neighbours of it, in a figure like the DCGAN paper's Fig. 7."""
    terms = parse_arithmetic(expression)
    decoder = load_decoder(checkpoint, device=device, code_walk=code_walk)
    text = prompts[0] if prompts else decoder.default_text()
    result_z, means = arithmetic_latent(terms, decoder)
    rows: list[tuple[str, list[np.ndarray | None]]] = []
    images: list[bytes] = []
    names: list[str] = []
    widest = max(len(seeds) for _, seeds in terms) + 2
    for k, ((sign, seeds), mean) in enumerate(zip(terms, means, strict=True)):
        exemplars = decoder.decode(decoder.latents(seeds), text)
        average = decoder.decode(mean[None], text)[0]
        label = ("+ " if sign > 0 else "- ") + ",".join(map(str, seeds))
        cells: list[np.ndarray | None] = [*exemplars, *([None] * (widest - 1 - len(seeds))), average]
        rows.append((label, cells))
        images += [png_bytes(image) for image in exemplars] + [png_bytes(average)]
        names += [f"term{k + 1}-seed{s}.png" for s in seeds] + [f"term{k + 1}-average.png"]
    results = decoder.decode(noisy_results(result_z, count, seed), text)
    rows.append(("= result" + (f" ({text})" if text else ""), list(results)))
    images += [png_bytes(image) for image in results]
    names += [f"result-{i:03d}.png" for i in range(count)]
    log.info("latent arithmetic %r: %d result samples", expression, count)
    return SampleResult(
        images=images, grid=labelled_rows(rows, columns=max(widest, min(count, 8))), names=names
    )
