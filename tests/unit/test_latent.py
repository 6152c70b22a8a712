"""Latent walks: slerp, arithmetic parsing (CLI exit 2), and the interpolation / arithmetic outputs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gantry.api.cli import cli
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import DCGANOptions, DCGANTrainSpec, parse_arithmetic
from gantry.worker.data import ImageData
from gantry.worker.gan.latent import arithmetic, interpolate, lerp, load_decoder, noisy_results, slerp
from gantry.worker.gan.loop import Callbacks, train

# --- slerp ----------------------------------------------------------------------------------------


def test_slerp_endpoints_are_exact_and_norms_stay_on_the_shell() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 1, 1, generator=g), torch.randn(100, 1, 1, generator=g)
    t = torch.linspace(0, 1, 9)
    walk = slerp(a, b, t)
    assert walk.shape == (9, 100, 1, 1)
    assert torch.equal(walk[0], a) and torch.equal(walk[-1], b)
    norms = walk.flatten(1).norm(dim=1)
    low, high = sorted((a.norm().item(), b.norm().item()))
    # Spherical: every frame's norm between the endpoints' (about sqrt(100) = 10) ...
    assert (norms >= low - 1e-4).all() and (norms <= high + 1e-4).all()
    # ... where the straight line sags to about 1/sqrt(2) of it half way between two random latents.
    middle = lerp(a, b, t)[4].norm().item()
    assert middle < 0.85 * low and norms[4] > 0.95 * low
    # Between latents of equal norm: constant norm and equal steps in angle (a great circle).
    walk = slerp(a, b * a.norm() / b.norm(), t)
    assert torch.allclose(walk.flatten(1).norm(dim=1), a.norm().expand(9), rtol=1e-5)
    unit = torch.nn.functional.normalize(walk.flatten(1).double(), dim=1)
    angles = torch.arccos((unit[1:] * unit[:-1]).sum(1).clamp(-1, 1))
    assert angles.max() - angles.min() < 1e-3 * angles.mean()


def test_slerp_of_a_latent_with_itself_is_that_latent() -> None:
    a = torch.randn(16)
    walk = slerp(a, a.clone(), torch.linspace(0, 1, 4))
    assert torch.allclose(walk, a.expand(4, -1))


# --- arithmetic parsing -------------------------------------------------------------------------


def test_parse_arithmetic_terms() -> None:
    assert parse_arithmetic("3,17,42 - 5,8,9 + 11,12,13") == [
        (1, [3, 17, 42]),
        (-1, [5, 8, 9]),
        (1, [11, 12, 13]),
    ]
    assert parse_arithmetic(" 1 , 2+3") == [(1, [1, 2]), (1, [3])]


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("3,17,42", "at least two terms"),
        ("- 3 + 4", "must start with a term"),
        ("3,17 - ", "an empty term"),
        ("3,,17 - 4", "'3,,17'"),
        ("3,x - 4", "'3,x'"),
        ("3 * 4", "'3 * 4'"),
        ("3 - 99999999999", "seeds go from 0"),
    ],
)
def test_bad_arithmetic_names_the_problem(expression: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_arithmetic(expression)
    assert info.value.field == "arithmetic" and words in info.value.message


def test_bad_arithmetic_on_the_cli_exits_2_naming_the_problem(settings) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(cli, ["sample", "anyjob", "--arithmetic", "3,17 - "], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "arithmetic" in result.output and "empty term" in result.output


# --- outputs on a tiny trained DCGAN --------------------------------------------------------------


@pytest.fixture(scope="module")
def dcgan_checkpoint() -> bytes:
    rng = np.random.default_rng(0)
    data = ImageData(images=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8))
    spec = DCGANTrainSpec(image_size=16, batch_size=8, steps=3, options=DCGANOptions(nz=16, ngf=8, ndf=8))
    checkpoints: list[bytes] = []
    callbacks = Callbacks(
        lambda *a: None, lambda: False, lambda step, b: checkpoints.append(b), lambda *a: None
    )
    train(spec, data, callbacks=callbacks, device="cpu")
    return checkpoints[-1]


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_interpolation_frames_start_and_end_at_the_seeds_samples(dcgan_checkpoint: bytes) -> None:
    from gantry.worker.gan.sampler import sample

    result = interpolate(dcgan_checkpoint, seed_a=3, seed_b=17, frames=6, device="cpu")
    assert len(result.images) == 6 and result.names == [f"frame-{k:03d}.png" for k in range(6)]
    # A seed means the z of `gantry sample --seed SEED --count 1`.
    assert result.images[0] == sample(dcgan_checkpoint, count=1, seed=3, device="cpu").images[0]
    assert result.images[-1] == sample(dcgan_checkpoint, count=1, seed=17, device="cpu").images[0]
    assert result.images[2] not in (result.images[0], result.images[-1])
    linear = interpolate(dcgan_checkpoint, seed_a=3, seed_b=17, frames=6, method="linear", device="cpu")
    assert linear.images[0] == result.images[0] and linear.images[2] != result.images[2]
    assert result.grid is not None and Image.open(io.BytesIO(result.grid)).width >= 6 * 48


def test_arithmetic_shows_exemplars_averages_and_noisy_results(dcgan_checkpoint: bytes) -> None:
    result = arithmetic(dcgan_checkpoint, "3,17,42 - 5,8 + 11", count=4, seed=0, device="cpu")
    assert result.names == [
        "term1-seed3.png", "term1-seed17.png", "term1-seed42.png", "term1-average.png",
        "term2-seed5.png", "term2-seed8.png", "term2-average.png",
        "term3-seed11.png", "term3-average.png",
        "result-000.png", "result-001.png", "result-002.png", "result-003.png",
    ]  # fmt: skip
    # A one-seed term's average is that seed's sample.
    assert result.images[7] == result.images[8]
    # The first result is the arithmetic itself: decode mean(3,17,42) - mean(5,8) + z(11).
    decoder = load_decoder(dcgan_checkpoint, device="cpu")
    z = decoder.latents([3, 17, 42]).mean(0) - decoder.latents([5, 8]).mean(0) + decoder.latent(11)
    expected = decoder.decode(z[None])[0]
    assert np.array_equal(_pixels(result.images[9]), expected)
    # The others are near it but not it (small noise, DCGAN paper Fig. 7).
    assert len(set(result.images[9:])) == 4
    noisy = noisy_results(z, 4, seed=0)
    assert torch.equal(noisy[0], z) and (noisy[1:] - z).abs().max() <= 0.25
    grid = Image.open(io.BytesIO(result.grid or b""))
    assert grid.height >= 4 * 48  # three term rows and the result row
