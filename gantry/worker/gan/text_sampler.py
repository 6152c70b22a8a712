"""Sampling by prompt from a text2img checkpoint (or a dcgan trained with `labels`): N images per
prompt, and a grid with the prompts as row labels.

Every prompt gets the same N latents (z drawn from `seed`), so a column shows one z under each text:
what the text changes (colour, shape) and what z keeps (in Reed et al. 2016, arXiv 1605.05396, §5.2,
z carries the "style" the text leaves out: here the size, position and background of a prompt that
does not name them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import load_train_spec
from gantry.jobs.specs.prompts import parse_label_prompt
from gantry.worker.gan.checkpoint import load_checkpoint, load_generator
from gantry.worker.gan.figures import labelled_rows
from gantry.worker.gan.images import png_bytes
from gantry.worker.gan.infogan import CodedLatents
from gantry.worker.gan.sampler import SampleResult, default_device, generate

log = logging.getLogger(__name__)

GRID_COLUMNS = 16  # a prompt's row wraps after this many images


def sample_prompts(
    checkpoint: bytes,
    *,
    prompts: Sequence[str],
    count: int,
    seed: int,
    device: torch.device | str | None = None,
) -> SampleResult:
    """`count` images for each prompt, prompt-major: images[i * count + j] is prompt i, latent j.
    `prompts.json` (in `extra`) maps the file names to their prompts.

    text2img draws G(z, φ(prompt)); a dcgan trained with `labels` reads the prompt's label values
    (`gantry.jobs.specs.prompts`) and sets those one-hot codes in each latent, leaving the rest of the
    latent (z, and the labels the prompt does not name) as the seed drew it."""
    if not prompts or count < 1:
        raise ValueError("need at least one prompt and a count of at least 1")
    device = torch.device(device) if device is not None else default_device()
    state = load_checkpoint(checkpoint, map_location="cpu")
    spec = load_train_spec(state["spec"])
    model = spec.model
    draw: Callable[[int, str], np.ndarray]  # (prompt index, prompt) -> (count, H, W, C) uint8
    if spec.prompted_by == "captions":
        from gantry.worker.gan.models.text2img import TextGenerator

        text = TextGenerator(load_generator(state, device=device))
        phi = text.embed(list(prompts))  # (P, E)
        z = text.latents(count, torch.Generator().manual_seed(seed))

        def draw(i: int, prompt: str) -> np.ndarray:
            return generate(text.G, z, cond=phi[i : i + 1].expand(count, -1), device=device)

    elif spec.prompted_by == "labels" and spec.options.label_attributes():
        from gantry.worker.gan.latent import load_decoder

        decoder = load_decoder(checkpoint, device=device)
        latents = decoder.sample
        assert isinstance(latents, CodedLatents), "a dcgan with labels draws coded latents"
        z = latents(count, torch.Generator().manual_seed(seed))
        dataset, labels = spec.dataset, list(spec.options.label_attributes())
        known = (state.get("extra") or {}).get("label_values")  # labels=folder: the sub-folders

        def draw(i: int, prompt: str) -> np.ndarray:
            chosen = parse_label_prompt(prompt, dataset, labels, known)
            return decoder.decode(latents.with_labels(z, {labels.index(n): v for n, v in chosen.items()}))

    else:
        raise InvalidInput(
            "prompts", f"prompts need a text2img job or a dcgan trained with labels, not {model}"
        )
    rows, images, index = [], [], []
    for i, prompt in enumerate(prompts):
        row = draw(i, prompt)
        rows.append((prompt, list(row)))
        for j, image in enumerate(row):
            images.append(png_bytes(image))
            index.append({"file": f"{i * count + j:06d}.png", "prompt": prompt, "latent": j})
    log.info(
        "sampled %d images for each of %d prompts (seed %d, step %d)",
        count,
        len(prompts),
        seed,
        state["step"],
    )
    return SampleResult(
        images=images,
        grid=labelled_rows(rows, columns=min(count, GRID_COLUMNS)),
        extra={"prompts.json": json.dumps(index, indent=1).encode()},
    )
