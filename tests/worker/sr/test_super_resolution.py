"""Super-resolution: PSNR/SSIM as the SR papers compute them, SRResNet's shapes, tiling, training
that beats bicubic, and super-resolve jobs end to end (Ledig et al. 2016, arXiv 1609.04802)."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.api.service import Service
from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import load_dataset
from gantry.worker.data.photos import TRAIN, VALIDATION, PhotoData
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.models.srresnet import Generator, SubPixelUpsample, sr_batches
from gantry.worker.sr.ops import bicubic_resize, psnr, rgb_to_y, ssim, y_psnr_ssim
from gantry.worker.sr.upscale import load_upscaler, super_resolve, super_resolve_input, upscale_tensor


def _train(
    model: str,
    fields: dict[str, Any],
    options: dict[str, Any],
    *,
    init: bytes | None = None,
    data: Any = None,
) -> bytes:
    """Train in-process; the last checkpoint's bytes."""
    spec = parse_train_spec(model, {"checkpoint_every": 10**6, "sample_every": 10**6, **fields}, options)
    data = data if data is not None else load_dataset("photos", image_size=spec.image_size, full_size=True)
    out: list[bytes] = []
    callbacks = Callbacks(
        progress=lambda step, metrics: None,
        should_stop=lambda: False,
        checkpoint=lambda step, payload: out.append(payload),
        samples=lambda step, png: None,
    )
    train(spec, data, callbacks=callbacks, init=init, device="cpu")
    return out[-1]


@pytest.fixture(scope="module")
def tiny_checkpoint() -> bytes:
    """An srresnet at 2x, 2 blocks x 8 channels, after 2 steps on 16-pixel crops."""
    return _train(
        "srresnet", {"image_size": 16, "batch_size": 2, "steps": 2}, {"blocks": 2, "channels": 8, "scale": 2}
    )


# --- metrics ------------------------------------------------------------------------------------


def test_identical_images_have_infinite_psnr_and_ssim_one() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    p, s = y_psnr_ssim(image, image.copy(), scale=4)
    assert p == math.inf and s == pytest.approx(1.0)


def test_psnr_of_a_known_noise_level() -> None:
    rng = np.random.default_rng(1)
    clean = rng.uniform(50, 200, (256, 256))
    # A constant error of 5 grey levels: MSE 25, PSNR = 10 log10(255^2 / 25) = 34.15 dB.
    assert psnr(clean + 5, clean) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    # Gaussian noise of sigma 10: PSNR = 20 log10(255 / 10) = 28.13 dB, to sampling error.
    assert psnr(clean + rng.normal(0, 10, clean.shape), clean) == pytest.approx(28.13, abs=0.05)
    # SSIM falls with the noise and stays in (0, 1).
    assert (
        0
        < ssim(clean + rng.normal(0, 20, clean.shape), clean)
        < ssim(clean + rng.normal(0, 5, clean.shape), clean)
        < 1
    )


def test_y_is_bt601_studio_swing() -> None:
    assert rgb_to_y(np.zeros((1, 1, 3))).item() == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255.0)).item() == pytest.approx(235.0)
    assert rgb_to_y(np.full((2, 2, 1), 255.0)) == pytest.approx(np.full((2, 2), 235.0))


def test_a_border_of_scale_pixels_is_left_out() -> None:
    hr = np.full((32, 32, 3), 128, np.uint8)
    sr = hr.copy()
    sr[:4, :] = 0  # wrong only in the 4-pixel border
    assert y_psnr_ssim(sr, hr, scale=4)[0] == math.inf
    assert y_psnr_ssim(sr, hr, scale=2)[0] < 30


# --- the generator ------------------------------------------------------------------------------


def test_sub_pixel_upsampling_doubles_height_and_width() -> None:
    assert SubPixelUpsample(8)(torch.zeros(2, 8, 5, 7)).shape == (2, 8, 10, 14)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_upscales_by_its_scale(scale: int) -> None:
    G = Generator(blocks=1, channels=8, scale=scale)
    assert G(torch.zeros(1, 3, 5, 6)).shape == (1, 3, 5 * scale, 6 * scale)


@pytest.mark.parametrize("bicubic_skip", [False, True])
def test_tiled_upscaling_equals_untiled(bicubic_skip: bool) -> None:
    torch.manual_seed(0)
    G = Generator(blocks=2, channels=8, scale=2, bicubic_skip=bicubic_skip).eval()
    lr = torch.rand(1, 3, 37, 53) * 2 - 1
    whole = upscale_tensor(G, lr, tile=1000)
    tiled = upscale_tensor(G, lr, tile=16)  # 3 x 4 tiles, each with G's receptive radius of context
    assert torch.allclose(tiled, whole, atol=1e-5)
    # Without the context, tiles differ near their seams: the padding is what makes them agree.
    assert not torch.allclose(upscale_tensor(G, lr, tile=16, pad=0), whole, atol=1e-3)


# --- data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("augment", [False, True])
def test_augment_draws_the_eight_symmetries_of_each_crop(augment: bool) -> None:
    # One 8x8 image with no symmetry of its own, cropped whole: every HR crop is the image itself,
    # or (augment) one of its 8 flips and rotations, and the LR side is always the bicubic of the HR.
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    symmetries = [np.rot90(im, k) for im in (image, image.transpose(1, 0, 2)) for k in range(4)]
    make_batch = sr_batches(image_size=8, scale=2, augment=augment)
    batch = make_batch(
        PhotoData(images=[image], names=["x"]), 64, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    hr = np.rint((batch.real.permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.int64)
    lr = np.rint((batch.z.permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.int64)
    seen = {next(i for i, s in enumerate(symmetries) if np.array_equal(h, s)) for h in hr}
    assert seen == (set(range(8)) if augment else {0})
    for h, low in zip(hr, lr, strict=True):
        assert np.array_equal(low, bicubic_resize(h.astype(np.uint8), 4, 4))


def test_photos_are_full_size_rgb_with_a_fixed_validation_split() -> None:
    train_set = load_dataset("photos", image_size=96, split="train", full_size=True)
    validation = load_dataset("photos", image_size=96, split="test", full_size=True)
    assert isinstance(train_set, PhotoData) and train_set.names == list(TRAIN)
    assert validation.names == list(VALIDATION) and not set(TRAIN) & set(VALIDATION)
    assert validation.channels == 3
    assert {im.shape for im in validation.images} == {(512, 512, 3), (300, 451, 3), (400, 600, 3)}


def test_a_folder_keeps_each_image_at_its_own_size(tmp_path: Path) -> None:
    Image.new("RGB", (70, 50), "red").save(tmp_path / "a.png")
    Image.new("L", (40, 90), 100).save(tmp_path / "b.jpg")
    data = load_dataset(str(tmp_path), image_size=32, full_size=True)
    assert [im.shape for im in data.images] == [(50, 70, 3), (90, 40, 3)]


# --- training -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_srresnet_at_2x_beats_bicubic_on_held_out_crops() -> None:
    # A CPU-sized G with VDSR's bicubic skip (the option that makes a few hundred steps enough;
    # without it G first has to learn to reproduce the image, thousands of steps on a CPU).
    torch.set_num_threads(1)
    checkpoint = _train(
        "srresnet",
        {"image_size": 32, "batch_size": 16, "steps": 300, "seed": 0},
        {"blocks": 2, "channels": 16, "scale": 2, "lr": 1e-3, "bicubic_skip": True},
    )
    G = load_upscaler(checkpoint, device="cpu").G
    ours, bicubic = [], []
    for photo in load_dataset("photos", image_size=32, split="test", full_size=True).images:
        hr = photo[100:196, 100:196]  # a 96 x 96 crop of each validation photo, never trained on
        lr = bicubic_resize(hr, 48, 48)
        ours.append(y_psnr_ssim(super_resolve(G, lr), hr, scale=2)[0])
        bicubic.append(y_psnr_ssim(bicubic_resize(lr, 96, 96), hr, scale=2)[0])
    assert np.mean(ours) > np.mean(bicubic) + 0.1, (ours, bicubic)


def test_srgan_starts_from_the_srresnet_it_is_given(tiny_checkpoint: bytes) -> None:
    fields = {"image_size": 16, "batch_size": 2, "steps": 1, "seed": 5}  # another seed: another init
    options = {"blocks": 2, "channels": 8, "scale": 2, "ndf": 4, "lr": 1e-12}  # a step barely moves G
    started = torch.load(
        io.BytesIO(_train("srgan", fields, options, init=tiny_checkpoint)), weights_only=True
    )
    scratch = torch.load(io.BytesIO(_train("srgan", fields, options)), weights_only=True)
    srresnet = torch.load(io.BytesIO(tiny_checkpoint), weights_only=True)
    weight = "head.0.weight"
    assert torch.allclose(started["G"][weight], srresnet["G"][weight], atol=1e-6)
    assert not torch.allclose(scratch["G"][weight], srresnet["G"][weight], atol=1e-3)
    assert started["D"] and set(started["spec"]["options"]) >= {"adversarial_weight", "init_from"}


def test_vgg54_content_loss_checks_the_weights_file(tmp_path: Path) -> None:
    from gantry.worker.sr.vgg import vgg54_features

    weights = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg54_features().state_dict().items()}, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    fields = {"image_size": 16, "batch_size": 2, "steps": 1}
    options = {"blocks": 1, "channels": 8, "scale": 2, "content_loss": "vgg54", "vgg_weights": str(weights)}
    # Not torchvision's file (its SHA-256 does not start with dcbb9e9d): refused, naming the option.
    with pytest.raises(InvalidInput, match="SHA-256") as info:
        _train("srresnet", fields, options)
    assert info.value.field == "set.vgg_weights"
    # With its own checksum it trains.
    state = torch.load(
        io.BytesIO(_train("srresnet", fields, options | {"vgg_sha256": digest})), weights_only=True
    )
    assert state["step"] == 1


# --- specs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "options", "field"),
    [
        ("srresnet", {}, {"scale": 3}, "set.scale"),
        ("srresnet", {"image_size": 50}, {"scale": 4}, "image_size"),
        ("srresnet", {}, {"content_loss": "vgg54"}, "set.vgg_weights"),
        ("srresnet", {}, {"init_from": "abc"}, "set.init_from"),
        ("srgan", {}, {"init_from": "no such/job"}, "set.init_from"),
    ],
)
def test_bad_sr_options_are_refused_naming_the_field(
    model: str, fields: dict, options: dict, field: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_train_spec(model, fields, options)
    assert info.value.field == field


# --- jobs end to end ----------------------------------------------------------------------------

TINY_JOB = {"dataset": "photos", "image_size": 16, "batch_size": 2, "steps": 2}
TINY_OPTS = {"blocks": 1, "channels": 8, "scale": 2}


def _run(svc: Service, job: Any) -> Any:
    svc.run_embedded(job)
    return svc.get(job.id)


@pytest.fixture
def srresnet_job(settings: Settings) -> tuple[Service, Any]:
    svc = Service(settings)
    job = _run(svc, svc.submit_train("srresnet", options=TINY_OPTS, **TINY_JOB))
    assert job.state == "succeeded", job.error
    return svc, job


def test_training_ends_with_psnr_and_ssim_against_bicubic(srresnet_job: tuple[Service, Any]) -> None:
    _, job = srresnet_job
    assert {"psnr", "psnr_bicubic", "ssim", "ssim_bicubic"} <= set(job.metrics)
    assert 25 < job.metrics["psnr_bicubic"] < 40 and 0 < job.metrics["ssim_bicubic"] < 1


def test_sample_super_resolves_a_folder_with_the_input_names(srresnet_job, tmp_path: Path) -> None:
    svc, job = srresnet_job
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (30, 20), "blue").save(folder / "wide.jpg")
    Image.new("RGB", (9, 13), "green").save(folder / "sub" / "small.png")
    (folder / "notes.txt").write_text("not an image, and not an image name: skipped")
    sample = _run(svc, svc.submit_sample(job.id, input=str(folder)))
    assert sample.state == "succeeded", sample.error
    images = {a.key.split("/images/", 1)[1]: a for a in sample.artifacts if a.kind == "image"}
    assert set(images) == {"wide.png", "sub/small.png"}
    out = Image.open(io.BytesIO(svc.objects.get_bytes(images["wide.png"].key)))
    assert out.size == (60, 40)  # 2x


def test_sample_of_a_file_that_is_not_an_image_fails_clearly(srresnet_job, tmp_path: Path) -> None:
    svc, job = srresnet_job
    fake = tmp_path / "photo.png"
    fake.write_text("hello")
    sample = _run(svc, svc.submit_sample(job.id, input=str(fake)))
    assert sample.state == "failed" and "photo.png: not a readable image" in sample.error


def test_an_image_over_the_pixel_limit_is_refused(tiny_checkpoint: bytes, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(big)
    with pytest.raises(InvalidInput, match="20,000 pixels is over the limit of 19,999"):
        super_resolve_input(
            tiny_checkpoint, str(big), settings=Settings(max_input_pixels=19_999), device="cpu"
        )
    result = super_resolve_input(
        tiny_checkpoint, str(big), settings=Settings(max_input_pixels=20_000), device="cpu"
    )
    assert result.names == ["big.png"]


def test_sampling_an_sr_job_needs_an_input(srresnet_job) -> None:
    svc, job = srresnet_job
    with pytest.raises(InvalidInput, match="--input"):
        svc.submit_sample(job.id, count=4)


def test_srgan_init_from_is_checked_at_submit(srresnet_job) -> None:
    svc, job = srresnet_job
    with pytest.raises(InvalidInput, match="not a train job with a checkpoint"):
        svc.submit_train("srgan", options=TINY_OPTS | {"init_from": "0123456789ab"}, **TINY_JOB)
    with pytest.raises(InvalidInput, match="channels=8"):
        svc.submit_train("srgan", options=TINY_OPTS | {"channels": 16, "init_from": job.id}, **TINY_JOB)
    srgan = _run(
        svc, svc.submit_train("srgan", options=TINY_OPTS | {"ndf": 4, "init_from": job.id}, **TINY_JOB)
    )
    assert srgan.state == "succeeded", srgan.error
    assert {"loss_D", "loss_G", "psnr"} <= set(srgan.metrics)
