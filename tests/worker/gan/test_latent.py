"""Latent walks: slerp, arithmetic parsing (CLI exit 2), and the interpolation / arithmetic outputs."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gantry.api.cli import cli
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import (
    DCGANOptions,
    DCGANTrainSpec,
    load_train_spec,
    parse_arithmetic,
    parse_train_spec,
)
from gantry.worker.data import ImageData
from gantry.worker.gan.infogan import CodedLatents
from gantry.worker.gan.latent import arithmetic, interpolate, lerp, load_decoder, noisy_results, path, slerp
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


def _tiny_dcgan(**options: object) -> bytes:
    """The checkpoint of a tiny dcgan trained 3 steps on noise images, with these options."""
    rng = np.random.default_rng(0)
    data = ImageData(images=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8))
    opts = DCGANOptions.model_validate({"nz": 16, "ngf": 8, "ndf": 8, **options})
    spec = DCGANTrainSpec(image_size=16, batch_size=8, steps=3, options=opts)
    checkpoints: list[bytes] = []
    callbacks = Callbacks(
        lambda *a: None, lambda: False, lambda step, b: checkpoints.append(b), lambda *a: None
    )
    train(spec, data, callbacks=callbacks, device="cpu")
    return checkpoints[-1]


@pytest.fixture(scope="module")
def dcgan_checkpoint() -> bytes:
    return _tiny_dcgan()


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


# --- how a walk reads a coded dcgan's one-hot codes (`code_walk`) --------------------------------


def test_switch_reads_each_code_as_its_larger_value_and_leaves_z_alone() -> None:
    rows = torch.tensor([[0, 1], [1, 3], [0, 2]])
    latents = CodedLatents(4, (3,), label_sizes=(2, 4), label_rows=rows)
    z = latents(2, torch.Generator().manual_seed(0))  # (2, 4 + 3 + 2 + 4, 1, 1)
    assert torch.allclose(latents.switch(z), z, atol=1e-6)  # one-hot codes stay as they are
    blend = 0.75 * z[0] + 0.25 * z[1]  # a walk's frame nearer z[0]: each code leans to z[0]'s value
    read = latents.switch(blend[None])[0].flatten()
    assert torch.equal(read[:4], blend.flatten()[:4])  # the Gaussian part untouched
    nearer = z[0].flatten()
    for start, size in ((4, 3), (7, 2), (9, 4)):
        if not torch.equal(nearer[start : start + size], z[1].flatten()[start : start + size]):
            assert not torch.allclose(blend.flatten()[start : start + size], nearer[start : start + size])
        assert torch.allclose(read[start : start + size], nearer[start : start + size], atol=1e-4)


def test_a_walk_read_with_switch_draws_the_nearer_ends_code_in_every_frame() -> None:
    checkpoint = _tiny_dcgan(latent_codes="3")  # one InfoGAN code of 3 values; labels read alike
    blend = load_decoder(checkpoint, device="cpu")  # as trained: code_walk=blend
    switch = load_decoder(checkpoint, device="cpu", code_walk="switch")
    assert blend.read is None and switch.read is not None
    assert isinstance(blend.sample, CodedLatents)  # z's code is its last 3 entries
    for G in (blend.G, switch.G):  # three steps leave G grey: make its code and its colours count
        convs = [m for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d | torch.nn.Conv2d)]
        with torch.no_grad():
            convs[0].weight[-3:] *= 100
            convs[-1].weight *= 50
    a, b = next(
        (blend.latent(s), blend.latent(s + 1))
        for s in range(100)
        if blend.latent(s)[-3:].argmax() != blend.latent(s + 1)[-3:].argmax()
    )
    walk = path(a, b, 8, "slerp")  # t = 0, 1/7, ..., 1
    snapped = walk.clone()  # the frames with the nearer end's one-hot code
    snapped[:4, -3:], snapped[4:, -3:] = a[-3:], b[-3:]
    drawn = switch.decode(walk).astype(int)
    # Away from the middle tenth of the walk (t = 3/7, 4/7 swap), each frame is the nearer end's code.
    outer = [0, 1, 2, 5, 6, 7]
    assert np.abs(drawn[outer] - blend.decode(snapped[outer])).max() <= 1  # uint8 rounding at most
    assert np.abs(blend.decode(walk)[1:7] - drawn[1:7]).max() > 1  # blends drew something else
    # Trained with code_walk=switch, its walks read so by default; --code-walk blend reads back.
    trained = _tiny_dcgan(latent_codes="3", code_walk="switch")
    assert load_decoder(trained, device="cpu").read is not None
    assert load_decoder(trained, device="cpu", code_walk="blend").read is None


@pytest.mark.parametrize(
    ("model", "options", "walk", "words"),
    [
        ("dcgan", {}, "switch", "needs latent_codes or labels"),
        ("dcgan", {"labels": ["shape"]}, "slide", "'blend' or 'switch'"),
        ("gan", {}, "switch", "a dcgan or text2img job's codes"),
    ],
)
def test_readings_a_job_cannot_take_are_refused(model: str, options: dict, walk: str, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        load_train_spec({"model": model, "dataset": "shapes", "options": options}).check_code_walk(walk)
    assert info.value.field == "code_walk" and words in info.value.message, info.value.message


def test_a_dcgan_decoder_refuses_a_reading_its_job_cannot_take(dcgan_checkpoint: bytes) -> None:
    for walk, words in (("switch", "latent_codes or labels"), ("slide", "'blend' or 'switch'")):
        with pytest.raises(InvalidInput) as info:
            load_decoder(dcgan_checkpoint, device="cpu", code_walk=walk)
        assert info.value.field == "code_walk" and words in info.value.message, info.value.message


def test_a_coded_dcgan_can_be_read_with_switch_and_the_train_option_asks_for_codes() -> None:
    labelled = load_train_spec({"model": "dcgan", "dataset": "shapes", "options": {"labels": ["shape"]}})
    labelled.check_code_walk("switch")  # a labelled dcgan can
    with pytest.raises(InvalidInput) as info:  # and the train option asks for the same
        parse_train_spec("dcgan", {"dataset": "shapes"}, {"code_walk": "switch"})
    assert info.value.field == "set.code_walk" and "latent_codes or labels" in info.value.message


def test_a_coded_dcgan_walks_with_code_walk_switch_from_the_cli(settings) -> None:  # type: ignore[no-untyped-def]
    def run(command: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli, command.split(), catch_exceptions=False)
        return result.exit_code, result.output

    train = "train dcgan --dataset shapes --image-size 16 --steps 2 --batch-size 8 --set nz=8 --set ngf=8"
    code, out = run(f"{train} --set ndf=8 --set latent_codes=3 --wait --json")
    assert code == 0, out
    job = json.loads(out)["id"]
    code, out = run(f"sample {job} --interpolate 1:2 --frames 4 --code-walk switch --wait --json")
    assert code == 0 and json.loads(out)["spec"]["code_walk"] == "switch", out
    code, out = run(f"{train} --set ndf=8 --wait --json")
    plain = json.loads(out)["id"]
    code, out = run(f"sample {plain} --interpolate 1:2 --code-walk switch")
    assert code == 2 and "code_walk" in out and "latent_codes or labels" in out, out
