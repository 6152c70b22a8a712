from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gantry.jobs.specs import parse_train_spec
from gantry.worker.gan.losses import Minibatch, NonSaturatingLoss
from gantry.worker.gan.models.dcgan import Discriminator, Generator
from gantry.worker.gan.registry import build_model

CPU = torch.device("cpu")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_size", [16, 32, 64, 128])
def test_generator_and_discriminator_shapes(image_size: int, channels: int) -> None:
    torch.manual_seed(0)
    G = Generator(nz=16, ngf=8, channels=channels, image_size=image_size)
    D = Discriminator(ndf=8, channels=channels, image_size=image_size)
    x = G(torch.randn(3, 16, 1, 1))
    assert x.shape == (3, channels, image_size, image_size)
    assert x.min() >= -1 and x.max() <= 1  # Tanh output, the range of the real images
    assert D(x).shape == (3,)  # one logit per image


@pytest.mark.parametrize("image_size", [16, 32, 64])
def test_nearest_upsampling_replaces_the_transposed_convolutions(image_size: int) -> None:
    spec = parse_train_spec(
        "dcgan", {"image_size": image_size}, {"ngf": "8", "ndf": "8", "upsample": "nearest"}
    )
    torch.manual_seed(0)
    G = build_model(spec, channels=3, device=CPU).G
    kinds = [type(m) for m in G.modules()]
    # Only the projection of z (1x1 -> 4x4) stays transposed; each doubling is a resize and a 3x3 conv.
    assert kinds.count(nn.ConvTranspose2d) == 1
    assert kinds.count(nn.Upsample) == int(math.log2(image_size)) - 2
    assert all(m.kernel_size == (3, 3) for m in G.modules() if isinstance(m, nn.Conv2d))
    x = G(torch.randn(2, 100, 1, 1))
    assert x.shape == (2, 3, image_size, image_size) and x.abs().max() <= 1


def test_other_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="16, 32, 64 and 128"):
        Generator(nz=16, ngf=8, channels=3, image_size=48)


def test_build_model_follows_the_spec_options() -> None:
    spec = parse_train_spec(
        "dcgan", {"image_size": 16}, {"nz": "12", "ngf": "8", "ndf": "8", "lr": "1e-3", "beta1": "0.3"}
    )
    torch.manual_seed(0)
    model = build_model(spec, channels=1, device=CPU)
    for opt in (model.opt_G, model.opt_D):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
        assert opt.param_groups[0]["betas"] == pytest.approx((0.3, 0.999))
    z = model.sample_latents(5, torch.Generator().manual_seed(0))
    assert z.shape == (5, 12, 1, 1) and model.nz == 12
    assert model.G(z).shape == (5, 1, 16, 16)


def test_weights_are_initialised_as_in_the_paper() -> None:
    spec = parse_train_spec("dcgan", {"image_size": 32}, {})
    torch.manual_seed(0)
    model = build_model(spec, channels=3, device=CPU)
    for net in (model.G, model.D):
        convs = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
        gammas = [m.weight for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert torch.cat([w.flatten() for w in convs]).std().item() == pytest.approx(0.02, rel=0.05)
        gamma = torch.cat(gammas)
        assert gamma.mean().item() == pytest.approx(1.0, abs=0.01)
        assert gamma.std().item() == pytest.approx(0.02, rel=0.2)


class _ConstantD(nn.Module):
    """A discriminator whose logit is one learnable number, whatever the image."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(logit))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1) * 0 + self.logit


def test_non_saturating_loss_values() -> None:
    # D(x) = D(G(z)) = sigmoid(2) for every image.
    G = Generator(nz=4, ngf=4, channels=1, image_size=16)
    loss = NonSaturatingLoss(G, _ConstantD(2.0))
    batch = Minibatch(real=torch.zeros(4, 1, 16, 16), z=torch.randn(4, 4, 1, 1))
    stats_D = loss.accumulate_gradients("D", batch)
    stats_G = loss.accumulate_gradients("G", batch)
    p = 1 / (1 + math.exp(-2.0))
    assert stats_D["D_x"].item() == pytest.approx(p)
    assert stats_D["D_G_z"].item() == pytest.approx(p)
    assert stats_D["loss_D"].item() == pytest.approx(-math.log(p) - math.log(1 - p), rel=1e-5)
    # Non-saturating: G minimises -log D(G(z)), not log(1 - D(G(z))).
    assert stats_G["loss_G"].item() == pytest.approx(-math.log(p), rel=1e-5)


def test_each_phase_accumulates_gradients_for_its_own_network() -> None:
    torch.manual_seed(0)
    G = Generator(nz=8, ngf=8, channels=3, image_size=16)
    D = Discriminator(ndf=8, channels=3, image_size=16)
    loss = NonSaturatingLoss(G, D)
    batch = Minibatch(real=torch.rand(4, 3, 16, 16) * 2 - 1, z=torch.randn(4, 8, 1, 1))

    loss.accumulate_gradients("D", batch)
    assert all(p.grad is not None for p in D.parameters())
    assert all(p.grad is None for p in G.parameters())  # D's loss does not reach G

    D.zero_grad(set_to_none=True)
    D.requires_grad_(False)  # as the training loop does in phase G
    stats = loss.accumulate_gradients("G", batch)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())
    assert all(p.grad is None for p in D.parameters())
    assert math.isfinite(stats["loss_G"].item())

    with pytest.raises(ValueError, match="phase"):
        loss.accumulate_gradients("Dreg", batch)  # type: ignore[arg-type]
