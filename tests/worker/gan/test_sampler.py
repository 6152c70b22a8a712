from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.jobs.specs import DCGANOptions, DCGANTrainSpec, load_train_spec
from gantry.worker.data import ImageData
from gantry.worker.gan.checkpoint import load_checkpoint
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.registry import build_model
from gantry.worker.gan.sampler import generate, sample


def _trained_checkpoint(channels: int, ema: float = 0.0) -> bytes:
    """A checkpoint of a tiny DCGAN after a few steps (its batch-norm running stats are not the init)."""
    rng = np.random.default_rng(0)
    data = ImageData(images=rng.integers(0, 256, (24, 16, 16, channels), dtype=np.uint8))
    options = DCGANOptions(nz=16, ngf=8, ndf=8, ema=ema)
    spec = DCGANTrainSpec(image_size=16, batch_size=8, steps=3, options=options)
    checkpoints: list[bytes] = []
    callbacks = Callbacks(
        progress=lambda step, metrics: None,
        should_stop=lambda: False,
        checkpoint=lambda step, data: checkpoints.append(data),
        samples=lambda step, png: None,
    )
    train(spec, data, callbacks=callbacks, device="cpu")
    return checkpoints[-1]


@pytest.fixture(scope="module")
def rgb_checkpoint() -> bytes:
    return _trained_checkpoint(channels=3)


def _decode(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png))


def test_same_seed_same_pngs_other_seed_other_images(rgb_checkpoint: bytes) -> None:
    a = sample(rgb_checkpoint, count=4, seed=7, device="cpu")
    b = sample(rgb_checkpoint, count=4, seed=7, device="cpu")
    c = sample(rgb_checkpoint, count=4, seed=8, device="cpu")
    assert a.images == b.images and a.grid == b.grid
    assert all(x != y for x, y in zip(a.images, c.images, strict=True))
    assert a.grid != c.grid


def test_one_png_per_image_and_a_square_ish_grid(rgb_checkpoint: bytes) -> None:
    result = sample(rgb_checkpoint, count=5, seed=0, device="cpu")
    assert len(result.images) == 5
    for png in result.images:
        image = _decode(png)
        assert image.size == (16, 16) and image.mode == "RGB"
    grid = _decode(result.grid)
    assert grid.size == (3 * 18 + 2, 2 * 18 + 2)  # 3 columns x 2 rows of 16 px with 2 px padding
    # The grid holds the same pixels as the single images.
    first = np.asarray(grid)[2:18, 2:18]
    assert np.array_equal(first, np.asarray(_decode(result.images[0])))


def test_grayscale_checkpoint_gives_grayscale_pngs() -> None:
    result = sample(_trained_checkpoint(channels=1), count=2, seed=0, device="cpu")
    assert {_decode(png).mode for png in [*result.images, result.grid]} == {"L"}


def test_an_image_does_not_depend_on_the_rest_of_its_batch(rgb_checkpoint: bytes) -> None:
    # G samples in eval mode: batch norm uses its running statistics, not the batch's.
    state = load_checkpoint(rgb_checkpoint)
    model = build_model(load_train_spec(state["spec"]), channels=3, device=torch.device("cpu"))
    model.G.load_state_dict(state["G"])
    z = torch.randn(6, 16, 1, 1, generator=torch.Generator().manual_seed(0))
    together, alone = generate(model.G, z)[:1], generate(model.G, z[:1])
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1  # rounding at most
    assert model.G.training  # the caller's mode is restored


def test_a_run_with_ema_samples_from_the_average_of_g() -> None:
    checkpoint = _trained_checkpoint(channels=3, ema=0.5)
    state = load_checkpoint(checkpoint)
    model = build_model(load_train_spec(state["spec"]), channels=3, device=torch.device("cpu"))
    z = model.sample_latents(2, torch.Generator().manual_seed(0))
    drawn = {}
    for weights in ("G", "G_ema"):
        model.G.load_state_dict(state[weights])
        drawn[weights] = generate(model.G, z)
    sampled = np.stack(
        [np.asarray(_decode(png)) for png in sample(checkpoint, count=2, seed=0, device="cpu").images]
    )
    assert np.array_equal(sampled, drawn["G_ema"])
    assert not np.array_equal(sampled, drawn["G"])
