"""InfoGAN's categorical codes (`--set latent_codes=...`, arXiv 1606.03657) on dcgan: the latents
carry one-hot codes, D's code head learns to read them back from G's images, and every latent walk
and sample seed sees the same coded latents."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import load_train_spec, parse_train_spec
from gantry.worker.data import shapes
from gantry.worker.data.digits import load as load_digits
from gantry.worker.gan.checkpoint import checkpoint_file, checkpoint_state, load_checkpoint
from gantry.worker.gan.latent import load_decoder
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.registry import GANModel, build_model
from gantry.worker.gan.sampler import sample
from gantry.worker.gan.text_sampler import sample_prompts

CPU = torch.device("cpu")
NZ = 8


def spec(**options: Any) -> Any:
    return parse_train_spec(
        "dcgan",
        {"dataset": "digits", "image_size": 16, "batch_size": 32, "steps": 150, "checkpoint_every": 150},
        {"nz": NZ, "ngf": 16, "ndf": 16, "lr": "1e-3", **options},
    )


def model(**options: Any) -> GANModel:
    torch.manual_seed(0)
    return build_model(spec(**options), channels=1, device=CPU)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latent_codes": "1"}, "2 to 256 categories"),
        ({"latent_codes": "8,x"}, "comma-separated"),
        ({"info_weight": "2"}, "only applies with latent_codes"),
        ({"latent_codes": "8", "virtual_batch_norm": "true"}, "virtual_batch_norm"),
    ],
)
def test_bad_codes_are_rejected_at_submit(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        spec(**options)


def test_codes_read_from_the_command_line_and_back_from_the_store() -> None:
    coded = spec(latent_codes="8,4", info_weight="0.5")
    assert coded.options.latent_codes == (8, 4)
    assert load_train_spec(coded.model_dump(mode="json")) == coded
    assert spec(latent_codes="none").options.latent_codes == ()


def test_latents_are_gaussian_z_then_one_hot_codes() -> None:
    m = model(latent_codes="5,3")
    z = m.sample_latents(2000, torch.Generator().manual_seed(0))
    assert z.shape == (2000, NZ + 5 + 3, 1, 1)
    gaussian, codes = z[:, :NZ, 0, 0], z[:, NZ:, 0, 0]
    assert abs(gaussian.mean().item()) < 0.05 and abs(gaussian.std().item() - 1) < 0.05
    for part, size in zip(codes.split([5, 3], dim=1), (5, 3), strict=True):
        assert set(part.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(part.sum(1), torch.ones(2000))  # exactly one category per code
        share = part.mean(0)  # each category drawn about equally often
        assert torch.allclose(share, torch.full((size,), 1 / size), atol=0.04)
    again = m.sample_latents(2000, torch.Generator().manual_seed(0))
    assert torch.equal(z, again)


def _final_checkpoint(s: Any) -> bytes:
    checkpoints: list[bytes] = []
    train(
        s,
        load_digits(16),
        callbacks=Callbacks(
            progress=lambda step, metrics: None,
            should_stop=lambda: False,
            checkpoint=lambda step, payload: checkpoints.append(payload),
            samples=lambda step, png: None,
        ),
        device=CPU,
    )
    return checkpoints[-1]


@pytest.mark.slow
def test_training_makes_the_codes_readable_from_the_images() -> None:
    """After 150 steps on digits, D's code head reads a 4-way code back from G's images far better
    than chance (1/4): G has learnt to draw the code. With the term nearly off, G ignores the code."""
    accuracy = {}
    for weight in ("1", "1e-4"):
        s = spec(latent_codes="4", info_weight=weight)
        state = load_checkpoint(_final_checkpoint(s))
        trained = build_model(s, channels=1, device=CPU)
        trained.G.load_state_dict(state["G"])
        trained.D.load_state_dict(state["D"])
        z = trained.sample_latents(512, torch.Generator().manual_seed(1))
        with torch.no_grad():
            trained.G.eval(), trained.D.eval()
            head = trained.D.info_head
            logits = head.fc(trained.D.features(trained.G(z)).flatten(1))
        accuracy[weight] = (logits.argmax(1) == head.code_indices(z)[0]).float().mean().item()
    assert accuracy["1"] > 0.9, accuracy
    assert accuracy["1e-4"] < accuracy["1"] - 0.2, accuracy


def test_a_sample_seed_and_a_latent_walk_seed_are_the_same_coded_latent() -> None:
    """`gantry sample --seed S --count 1` and the exemplar S of `--arithmetic` decode the same z."""
    s = spec(latent_codes="6")
    m = build_model(s, channels=1, device=CPU)
    payload = checkpoint_file(
        checkpoint_state(
            model=m,
            step=0,
            spec=s,
            channels=1,
            batch_generator=torch.Generator(),
            fixed_z=m.sample_latents(4, torch.Generator()),
            metrics={},
        )
    )
    decoder = load_decoder(payload, device=CPU)
    for seed in (3, 11):
        z = decoder.latent(seed)
        assert z.shape == (NZ + 6, 1, 1) and z[NZ:].sum().item() == 1.0
        assert torch.equal(z, m.sample_latents(1, torch.Generator().manual_seed(seed))[0])
        sampled = np.asarray(
            Image.open(io.BytesIO(sample(payload, count=1, seed=seed, device=CPU).images[0]))
        )
        assert np.array_equal(sampled.reshape(16, 16, 1), decoder.decode(z[None])[0])


def test_text2img_prompts_and_walks_draw_the_same_coded_latents() -> None:
    """text2img takes the codes too: a training step reports the code loss, and a prompt's sample
    for seed S is G(latent S, prompt), the latent that `--interpolate S:T` starts from."""
    s = parse_train_spec(
        "text2img",
        {"dataset": "shapes", "image_size": 16, "batch_size": 8, "steps": 2, "checkpoint_every": 2},
        {"nz": NZ, "ngf": 8, "ndf": 8, "embed_dim": 8, "vocab_size": 64, "latent_codes": "5"},
    )
    checkpoints: list[bytes] = []
    progress: list[dict[str, float]] = []
    train(
        s,
        shapes.generate(16, seed=0, count=64),
        callbacks=Callbacks(
            progress=lambda step, metrics: progress.append(metrics),
            should_stop=lambda: False,
            checkpoint=lambda step, payload: checkpoints.append(payload),
            samples=lambda step, png: None,
        ),
        device=CPU,
        log_every=1,
    )
    assert all(m["loss_info"] > 0 for m in progress)
    decoder = load_decoder(checkpoints[-1], device=CPU)
    z = decoder.latent(5)
    assert z.shape == (NZ + 5, 1, 1) and z[NZ:].sum().item() == 1.0
    prompt = "a red circle"
    sampled = sample_prompts(checkpoints[-1], prompts=[prompt], count=1, seed=5, device=CPU).images[0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(sampled))), decoder.decode(z[None], prompt)[0])
