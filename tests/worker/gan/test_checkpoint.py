"""The one generator loader (`checkpoint.load_generator`): G alone, and the same outputs as before it.

The digests below were computed once with the code before the loader existed (each sampler built
the whole model, D, optimizers and loss, and loaded G into it): tiny checkpoints trained here on the
CPU, sampled through the public samplers. A digest is the sha256 of the decoded pixels (and point
arrays), not of the PNG files, so a different zlib cannot fail the test while any drift in what G
draws does.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import ImageData, load_dataset
from gantry.worker.data import shapes as shapes_data
from gantry.worker.gan.checkpoint import LoadedGenerator, load_checkpoint, load_generator
from gantry.worker.gan.infogan import CodedLatents
from gantry.worker.gan.latent import arithmetic, interpolate
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.registry import model_module
from gantry.worker.gan.sampler import SampleResult, sample
from gantry.worker.gan.text_sampler import sample_prompts
from gantry.worker.sr.upscale import load_upscaler, super_resolve_input


def _train(model: str, fields: dict[str, Any], options: dict[str, Any], data: Any) -> bytes:
    """Train in-process on the CPU; the last checkpoint's bytes."""
    spec = parse_train_spec(model, {"checkpoint_every": 10**6, "sample_every": 10**6, **fields}, options)
    out: list[bytes] = []
    callbacks = Callbacks(
        progress=lambda step, metrics: None,
        should_stop=lambda: False,
        checkpoint=lambda step, payload: out.append(payload),
        samples=lambda step, png: None,
    )
    train(spec, data, callbacks=callbacks, device="cpu")
    return out[-1]


def _noise_images(channels: int = 3, size: int = 16) -> ImageData:
    rng = np.random.default_rng(0)
    return ImageData(images=rng.integers(0, 256, (24, size, size, channels), dtype=np.uint8))


def _digest(result: SampleResult) -> str:
    """sha256 over every image's pixels, the grid's and the extra files (names included)."""
    h = hashlib.sha256()
    for png in [*result.images, *([result.grid] if result.grid is not None else [])]:
        image = Image.open(io.BytesIO(png))
        if image.mode == "P":  # a palette plot (gan's scatter): the colours it shows
            image = image.convert("RGB")
        pixels = np.asarray(image)
        h.update(str(pixels.shape).encode() + pixels.tobytes())
    for name in result.names or []:
        h.update(name.encode())
    for name, data in sorted(result.extra.items()):
        if name.endswith(".npy"):
            array = np.load(io.BytesIO(data))
            h.update(name.encode() + str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
        elif name.endswith(".json"):
            h.update(name.encode() + data)
    return h.hexdigest()


def _weights_digest(checkpoint: bytes) -> str:
    """sha256 over G's and D's trained weights: building the model for training drew the same."""
    state = load_checkpoint(checkpoint)
    h = hashlib.sha256()
    for part in ("G", "D"):
        for key, tensor in state[part].items():
            h.update(f"{part}.{key}".encode() + tensor.numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, bytes]:
    torch.set_num_threads(1)
    shapes = shapes_data.generate(16, seed=0, count=64)
    tiny_conv = {"nz": 16, "ngf": 8, "ndf": 8}
    return {
        # DCGAN with a moving average of G: sampling must use G_ema.
        "dcgan_ema": _train(
            "dcgan",
            {"image_size": 16, "batch_size": 8, "steps": 3},
            {**tiny_conv, "ema": 0.5},
            _noise_images(),
        ),
        # AC-GAN + InfoGAN codes read with code_walk=switch, minibatch discrimination in D.
        "dcgan_codes": _train(
            "dcgan",
            {"dataset": "shapes", "image_size": 16, "batch_size": 8, "steps": 3},
            {
                **tiny_conv,
                "labels": "colour,shape",
                "latent_codes": "3",
                "minibatch_discrimination": True,
                "mbd_kernels": 4,
                "code_walk": "switch",
            },
            shapes,
        ),
        # Virtual batch norm (G wrapped in its reference batch, whose latents are in G's state) and
        # historical averaging (whose means are in G's state too).
        "dcgan_vbn": _train(
            "dcgan",
            {"image_size": 16, "batch_size": 8, "steps": 3},
            {**tiny_conv, "virtual_batch_norm": True, "historical_averaging": 0.01, "d_norm": "spectral"},
            _noise_images(),
        ),
        # The MLP GAN on 2-D points: G's outputs rendered as points and a scatter plot.
        "gan_points": _train(
            "gan",
            {"dataset": "ring8", "batch_size": 16, "steps": 3},
            {"g_width": 16, "d_width": 16, "virtual_batch_norm": True, "historical_averaging": 0.01},
            load_dataset("ring8", image_size=32, seed=0),
        ),
        "text2img": _train(
            "text2img",
            {"dataset": "shapes", "image_size": 16, "batch_size": 8, "steps": 3},
            {"nz": 8, "ngf": 8, "ndf": 8, "vocab_size": 64, "embed_dim": 8},
            shapes,
        ),
        "text2img_codes": _train(
            "text2img",
            {"dataset": "shapes", "image_size": 16, "batch_size": 8, "steps": 3},
            {
                "nz": 8,
                "ngf": 8,
                "ndf": 8,
                "vocab_size": 64,
                "embed_dim": 8,
                "labels": "shape,colour,size",
                "free_label_codes": True,
                "code_words": True,
                "generator": "layered",
                "ema": 0.5,
            },
            shapes,
        ),
        "srresnet": _train(
            "srresnet",
            {"image_size": 16, "batch_size": 2, "steps": 2},
            {"blocks": 2, "channels": 8, "scale": 2},
            _noise_images(size=32),
        ),
    }


def _outputs(checkpoints: dict[str, bytes], scratch: Path) -> dict[str, SampleResult]:
    image = scratch / "in.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(image)
    prompts = ["a red circle", "a large blue square in the top left"]
    return {
        "dcgan_ema sample": sample(checkpoints["dcgan_ema"], count=4, seed=7, device="cpu"),
        "dcgan_ema interpolate": interpolate(
            checkpoints["dcgan_ema"], seed_a=1, seed_b=2, frames=3, device="cpu"
        ),
        "dcgan_ema arithmetic": arithmetic(
            checkpoints["dcgan_ema"], "1,2 - 3 + 4", count=3, seed=5, device="cpu"
        ),
        "dcgan_codes sample": sample(checkpoints["dcgan_codes"], count=4, seed=3, device="cpu"),
        "dcgan_codes interpolate": interpolate(
            checkpoints["dcgan_codes"], seed_a=1, seed_b=2, frames=3, device="cpu"
        ),
        "dcgan_codes prompts": sample_prompts(
            checkpoints["dcgan_codes"], prompts=["a red circle"], count=2, seed=0, device="cpu"
        ),
        "dcgan_vbn sample": sample(checkpoints["dcgan_vbn"], count=4, seed=3, device="cpu"),
        "gan_points sample": sample(checkpoints["gan_points"], count=16, seed=1, device="cpu"),
        "text2img prompts": sample_prompts(
            checkpoints["text2img"], prompts=prompts, count=2, seed=0, device="cpu"
        ),
        "text2img interpolate": interpolate(
            checkpoints["text2img"], seed_a=1, seed_b=2, frames=3, prompts=prompts, device="cpu"
        ),
        "text2img_codes prompts": sample_prompts(
            checkpoints["text2img_codes"], prompts=prompts, count=2, seed=0, device="cpu"
        ),
        "text2img_codes interpolate switch": interpolate(
            checkpoints["text2img_codes"], seed_a=1, seed_b=2, frames=3, device="cpu", code_walk="switch"
        ),
        "srresnet input": super_resolve_input(
            checkpoints["srresnet"], str(image), settings=Settings(), device="cpu"
        ),
    }


# Computed with the code before `load_generator` (see the module docstring).
PINNED_OUTPUTS = {
    "dcgan_ema sample": "1eea78ab9a1d11c9326bd836df506c255fc68a99cf1b86fb4f673e04a7192008",
    "dcgan_ema interpolate": "88a0d55c8b5d73eae2b890305fa669082f5d66d2b0fcc7edc401a78ecf0eb404",
    "dcgan_ema arithmetic": "982c42874eb96cc89f3dda421d27f37a7b24aa6d5f50ac72299879fe818b9405",
    "dcgan_codes sample": "91e5f76e638e76cfffe49f904c62209afa92eca800a83f9d493bfea6e64d54d7",
    "dcgan_codes interpolate": "ed368a235b5528d69682ce0926bfb899eba31e7c46cbe42714136aaab917447b",
    "dcgan_codes prompts": "1cce4c7ed07cf83e9feef1c26f8b33f695251ae2bc0435ea5f868cd09a9d7df1",
    "dcgan_vbn sample": "eb06ffb013bff87a223353761a24c5b81ca8a9ff6908dc659264af0b58874884",
    "gan_points sample": "4a675e2e64bac538e1e6373506df5e617ae5a687df2848f58e059bd5d7376c9d",
    "text2img prompts": "54458ba712e9a1d346bd20206fe3a81cb14184223744271fe96e015d2ad0e632",
    "text2img interpolate": "5ffa9bd54d0c6ab8e208c029add0d47ac905bc05379290a9a137c1669a8622e1",
    "text2img_codes prompts": "318dd41f9167876e0958bcecccb32612744cded7e3f2e31c1fee6b52178f51ab",
    "text2img_codes interpolate switch": "e8b10a8a83ba8b263bfd19b060c04c4ccf8c1a7e7f426d8705bc7d28d8fd887f",
    "srresnet input": "cf9b342f78464003b996b9f1a3e2bbfdb5795c4ed64d6268d395982aa15c3b5b",
}
PINNED_WEIGHTS = {
    "dcgan_ema": "1788c7dde1a179f2bd565d9e998e0a6e9c2261006fc2bb48bf713130b8113bbe",
    "dcgan_codes": "b2fd52933d8d8bc8e0d95f2c591b5cc0bab96a09aeae64bdb2760b81ff277315",
    "dcgan_vbn": "16d8112053b99e99ae0b8bf17d343b00bd1fb4c5492e569b9e9a2335d87876c0",
    "gan_points": "ed8db1edd43cb0cf799b5653de7431ff96ae11aa5a00b54f082aa7e300e25890",
    "text2img": "6cfcde5aa86278e6f2cfca2d80bdadfabb3ead73172c006c3f0162e0e7182243",
    "text2img_codes": "407beccf523a4a11b0c66b320da8236c42fd2aeb1b91c0cc073e35df251d7e1c",
    "srresnet": "49cbf9c65b29d8afa34113a833f2ce110f053cac2c6b91fe052bbed84928c4d4",
}


# The digests are of float results, bit for bit, and CPUs of another kind run other kernels (AVX512
# with FP16 and AMX on some Xeons, AVX2 or AVX512 on EPYCs): each set below was computed on one kind
# of host. The second set was computed on an Intel Xeon (avx512_fp16, amx) with the code that gave the
# first set on the first host, and the code after it gives the same there. A new kind of host adds its
# set only after the same check.
PINNED_WEIGHTS_OTHER_HOST = {
    "dcgan_ema": "10489a5dfdc009de44b67e53edf4044b7ab3111872f0743de98ac0ad8133bd30",
    "dcgan_codes": "8b2211350a12f3e844d100cdc4a6074b07215361e81f7a7b23ef118779f48539",
    "dcgan_vbn": "367de511af168777539fa0932f60a4140a1410ba95fea3448a155e73b78973eb",
    "gan_points": "dc712a4b5bec726a1ea6db3044f180edfef8755ef138f787c6c73cc25a1c0735",
    "text2img": "e6cd9af75f2316487ed3499a9c24f274712ad8bd959b6975f79f77fa15df86c8",
    "text2img_codes": "e7053e697f517bdc18600f345d270e4b19c84e93289518bb0ecd64d5a167028e",
    "srresnet": "a87506c77c4b5b6d9c1524a70f2275b993abd1197a6372f3917498fb3c77dd02",
}
# A third, for the weights only, on an AMD EPYC with avx512_bf16 (its samples of the pinned
# checkpoints equal the first set's): the code that gave the first set gives these there, as the
# code after it does.
PINNED_WEIGHTS_THIRD_HOST = {
    "dcgan_ema": "b0372c5c19154b5de4f5203be987c2e655f476c08db4d59c08d2ce60d5bae460",
    "dcgan_codes": "2af11f606f0f86731ec7a2cb0904f221c7a1dfd31f2272ae21798b7f26eab73a",
    "dcgan_vbn": "5ba2eb208c420cdba8ce440c0705315898fc915a45b8ed31b4d0d1fbd27cfc63",
    "gan_points": "e1c1532499771731055e08b4d2748e2956c67ac4568e259ef3e4814fd6ba9453",
    "text2img": "8d320969ce23751ac64e63b8e350e45a3aea92257a21fe65680c0f8c0d6b83d6",
    "text2img_codes": "bc5a421cd785d2007f929110b18c408a2828fa69fc1a74fb0a86d783e06539ed",
    "srresnet": "05ac46c81443c1408761ff495156fae3d79bb7736d840f83a7e8639f43fa0174",
}
PINNED_OUTPUTS_OTHER_HOST = PINNED_OUTPUTS | {
    "gan_points sample": "7e834d0acf4d99cea58e6c317dfe0884f5b6eb1a7a8740e2a985ad1f0e057ce2",
}


def test_training_from_a_seed_gives_the_same_weights_as_before(checkpoints: dict[str, bytes]) -> None:
    # `build` makes G through the same function as the loader, drawing the global RNG in the order
    # it always has (G, D, their initialisation, D's extra layers, G's reference batch).
    digests = {name: _weights_digest(c) for name, c in checkpoints.items()}
    assert digests in (PINNED_WEIGHTS, PINNED_WEIGHTS_OTHER_HOST, PINNED_WEIGHTS_THIRD_HOST), digests


def test_old_checkpoints_sample_the_same_outputs_as_before(
    checkpoints: dict[str, bytes], tmp_path: Path
) -> None:
    digests = {name: _digest(result) for name, result in _outputs(checkpoints, tmp_path).items()}
    assert digests in (PINNED_OUTPUTS, PINNED_OUTPUTS_OTHER_HOST), digests


# --- what the loader builds ----------------------------------------------------------------------


def test_the_loader_builds_g_alone_with_the_moving_average_in_eval_mode(
    checkpoints: dict[str, bytes],
) -> None:
    state = load_checkpoint(checkpoints["dcgan_ema"])
    before = torch.get_rng_state()
    loaded = load_generator(checkpoints["dcgan_ema"], device="cpu")
    assert torch.equal(torch.get_rng_state(), before)  # building drew nothing from the caller's RNG
    # G, and nothing of D, the optimizers or the loss.
    assert not {"D", "opt_G", "opt_D", "loss", "model"} & {f.name for f in fields(LoadedGenerator)}
    assert loaded.G.state_dict().keys() == state["G_ema"].keys()
    assert sum(p.numel() for p in loaded.G.parameters()) == sum(
        v.numel() for k, v in state["G"].items() if "running" not in k and "num_batches" not in k
    )
    for key, value in loaded.G.state_dict().items():
        assert torch.equal(value, state["G_ema"][key]), key
    assert not loaded.G.training
    assert (loaded.step, loaded.channels, loaded.latent_shape) == (state["step"], 3, (16, 1, 1))
    assert loaded.device == torch.device("cpu") and loaded.render is None and loaded.extra == {}
    assert loaded.codes is None  # plain Gaussian z
    z = loaded.sample_latents(2, torch.Generator().manual_seed(0))
    assert torch.equal(z, torch.randn((2, 16, 1, 1), generator=torch.Generator().manual_seed(0)))


def test_the_loader_keeps_g_state_that_training_adds(checkpoints: dict[str, bytes]) -> None:
    # Virtual batch norm's reference latents and historical averaging's means are G's state: an old
    # checkpoint's G loads strictly, key for key.
    for name in ("dcgan_vbn", "gan_points"):
        state = load_checkpoint(checkpoints[name])
        loaded = load_generator(state, device="cpu")
        keys = loaded.G.state_dict().keys()
        assert keys == state["G"].keys() and "z_ref" in keys and "historical_average.count" in keys
    points = load_generator(checkpoints["gan_points"], device="cpu")
    assert points.render is not None and points.latent_shape == (2,)


def test_the_loader_exposes_coded_latents_and_the_models_extra_state(checkpoints: dict[str, bytes]) -> None:
    coded = load_generator(checkpoints["dcgan_codes"], device="cpu")
    assert isinstance(coded.codes, CodedLatents) and coded.codes.label_sizes == (8, 4)
    text = load_generator(checkpoints["text2img"], device="cpu")
    assert "text_encoder" in text.extra and isinstance(text.codes, CodedLatents)


def test_an_unknown_model_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"no worker model for 'nope'; known: dcgan, gan, srgan, srresnet"):
        model_module("nope")
    with pytest.raises(ValueError, match="no worker model"):
        model_module("..registry")


def test_only_generators_that_super_resolve_upscale(checkpoints: dict[str, bytes]) -> None:
    assert load_upscaler(checkpoints["srresnet"], device="cpu").G.scale == 2
    with pytest.raises(InvalidInput, match="dcgan jobs do not super-resolve images") as info:
        load_upscaler(checkpoints["dcgan_ema"], device="cpu")
    assert info.value.field == "input"
