"""Improved Techniques (arXiv 1606.03498) as `--set` options of gan and dcgan: each changes what the
model does, and each test here fails when its option is ignored."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import parse_train_spec
from gantry.worker.gan.improved import MinibatchDiscrimination
from gantry.worker.gan.losses import Minibatch
from gantry.worker.gan.registry import GANModel, build_model

CPU = torch.device("cpu")


def gan(**options: Any) -> GANModel:
    spec = parse_train_spec("gan", {"dataset": "ring8"}, {"g_width": 16, "d_width": 16, **options})
    torch.manual_seed(0)
    return build_model(spec, channels=2, device=CPU)


def dcgan(**options: Any) -> GANModel:
    spec = parse_train_spec(
        "dcgan", {"dataset": "digits", "image_size": 16}, {"nz": 8, "ngf": 8, "ndf": 8, **options}
    )
    torch.manual_seed(0)
    return build_model(spec, channels=1, device=CPU)


def points_batch(n: int = 16, seed: int = 0) -> Minibatch:
    g = torch.Generator().manual_seed(seed)
    return Minibatch(real=torch.randn(n, 2, generator=g), z=torch.randn(n, 2, generator=g))


def images_batch(n: int = 8, seed: int = 0) -> Minibatch:
    g = torch.Generator().manual_seed(seed)
    return Minibatch(
        real=torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, z=torch.randn(n, 8, 1, 1, generator=g)
    )


def _first_output_moves_with_the_rest(net: torch.nn.Module, x: torch.Tensor) -> bool:
    """Does net(x)[0] change when only the other rows of x change?"""
    with torch.no_grad():
        other = x.clone()
        other[1:] = torch.randn_like(other[1:]) * 3
        return not torch.allclose(net(x)[0], net(other)[0], atol=1e-6)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gan", "dcgan"])
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"label_smoothing": "0.2"}, "set.label_smoothing"),
        ({"label_smoothing": "1.5"}, "set.label_smoothing"),
        ({"historical_averaging": "-1"}, "set.historical_averaging"),
        ({"mbd_kernels": "0", "minibatch_discrimination": "true"}, "set.mbd_kernels"),
        ({"minibatch_discrimination": "maybe"}, "set.minibatch_discrimination"),
        ({"d_norm": "layer"}, "set.d_norm"),  # gan: no such option; dcgan: not an allowed value
    ],
)
def test_bad_options_are_rejected_at_submit(model: str, options: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_train_spec(model, {"dataset": "ring8" if model == "gan" else "digits"}, options)
    assert err.value.field == field


def test_kernel_options_without_minibatch_discrimination_are_rejected() -> None:
    with pytest.raises(InvalidInput, match="only applies with minibatch_discrimination=true"):
        parse_train_spec("dcgan", {}, {"mbd_kernels": "50"})


def test_defaults_are_the_papers_code() -> None:
    opts = parse_train_spec("gan", {}, {"minibatch_discrimination": "true"}).options
    assert (opts.mbd_kernels, opts.mbd_kernel_dim) == (100, 5)  # type: ignore[attr-defined]


# --- minibatch discrimination ----------------------------------------------------------------------


def test_minibatch_layer_scores_a_collapsed_batch_as_crowded() -> None:
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(4, kernels=7, kernel_dim=3)
    diverse = torch.randn(10, 4) * 100  # far apart after T (entries ~ N(0, 0.05²))
    collapsed = diverse[:1].repeat(10, 1)
    o_diverse, o_collapsed = layer(diverse)[:, 4:], layer(collapsed)[:, 4:]
    assert layer(diverse).shape == (10, 4 + 7)
    # Every other sample is identical: each closeness is exp(0) = 1, so o = N - 1 per kernel.
    torch.testing.assert_close(o_collapsed, torch.full((10, 7), 9.0))
    assert o_diverse.max() < 1.0


@pytest.mark.parametrize(("make", "batch"), [(gan, points_batch), (dcgan, images_batch)])
def test_minibatch_discrimination_makes_D_compare_samples(make: Any, batch: Any) -> None:
    x = batch().real
    plain, mbd = make(), make(minibatch_discrimination="true", mbd_kernels="6", mbd_kernel_dim="3")
    plain.D.eval(), mbd.D.eval()  # eval: batch norm (dcgan's D) does not mix the batch either
    assert not _first_output_moves_with_the_rest(plain.D, x)
    assert _first_output_moves_with_the_rest(mbd.D, x)
    T = next(p for name, p in mbd.D.named_parameters() if name.endswith("minibatch.T"))
    assert T.shape[1] == 6 * 3


# --- feature matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "batch"), [(gan, points_batch), (dcgan, images_batch)])
def test_feature_matching_is_G_loss(make: Any, batch: Any) -> None:
    b = batch()
    model = make(feature_matching="true")
    model.D.requires_grad_(False)
    loss_G = model.loss.accumulate_gradients("G", b)["loss_G"]
    with torch.no_grad():
        f_real = model.D.features(b.real).flatten(1).mean(0)
        f_fake = model.D.features(model.G(b.z)).flatten(1).mean(0)
    torch.testing.assert_close(loss_G, ((f_real - f_fake) ** 2).sum())
    # ... and not the non-saturating loss the model trains with otherwise
    with torch.no_grad():
        logits = model.D(model.G(b.z))
    assert not torch.allclose(loss_G, F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)))


# --- one-sided label smoothing --------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "batch"), [(gan, points_batch), (dcgan, images_batch)])
def test_label_smoothing_lowers_only_the_real_target(make: Any, batch: Any) -> None:
    b = batch()
    model = make(label_smoothing="0.9")
    G, D = model.G, model.D
    stats = model.loss.accumulate_gradients("D", b)
    with torch.no_grad():  # D is in training mode as in the loop; its forward is deterministic here
        real, fake = D(b.real), D(G(b.z))
    expected = F.binary_cross_entropy_with_logits(real, torch.full_like(real, 0.9))
    expected = expected + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    torch.testing.assert_close(stats["loss_D"], expected, rtol=1e-4, atol=1e-5)


def test_label_smoothing_keeps_D_from_certainty() -> None:
    """Trained on separable data, D's confidence on real data settles near 0.9, not 1."""
    probabilities = {}
    for smoothing in ("1.0", "0.9"):
        model = gan(label_smoothing=smoothing)
        b = Minibatch(real=torch.full((32, 2), 3.0), z=torch.randn(32, 2))
        for _ in range(300):
            model.opt_D.zero_grad()
            model.loss.accumulate_gradients("D", b)
            model.opt_D.step()
        probabilities[smoothing] = torch.sigmoid(model.D(b.real)).mean().item()
    assert probabilities["1.0"] > 0.97
    assert 0.85 < probabilities["0.9"] < 0.93


# --- historical averaging ------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "batch"), [(gan, points_batch), (dcgan, images_batch)])
def test_historical_averaging_pulls_parameters_to_their_past_mean(make: Any, batch: Any) -> None:
    b = batch()
    model = make(historical_averaging="10")
    first = model.loss.accumulate_gradients("D", b)
    assert first["hist_avg_D"].item() == 0.0  # the mean of one θ is θ
    model.opt_D.step()
    model.opt_D.zero_grad()
    with torch.no_grad():  # move D away from its history
        for p in model.D.parameters():
            p.add_(0.1)
    second = model.loss.accumulate_gradients("D", b)
    assert second["hist_avg_D"].item() > 0.0
    # The running mean is part of D's state, so checkpoints carry it.
    assert any("historical_average" in key for key in model.D.state_dict())
    assert any("historical_average" in key for key in model.G.state_dict())


def test_historical_averaging_with_latent_codes_covers_the_code_head() -> None:
    # D's code head (InfoGAN) trains with D, so D's running mean must include its parameters.
    model = dcgan(historical_averaging="10", latent_codes="4")
    real = images_batch().real
    b = Minibatch(real=real, z=model.sample_latents(len(real), torch.Generator().manual_seed(0)))
    for phase in ("D", "G"):
        losses = model.loss.accumulate_gradients(phase, b)
        assert torch.isfinite(losses[f"hist_avg_{phase}"])
    means = [k for k in model.D.state_dict() if k.startswith("historical_average.mean_")]
    assert len(means) == len(list(model.D.parameters())) and any(
        "info_head" in k for k in model.D.state_dict()
    )


# --- virtual batch norm ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "batch", "plain"),
    [(gan, points_batch, {"batch_norm": "true"}), (dcgan, images_batch, {})],
)
def test_virtual_batch_norm_makes_G_independent_of_its_batch(
    make: Any, batch: Any, plain: dict[str, str]
) -> None:
    z = batch().z
    with_bn, with_vbn = make(**plain), make(virtual_batch_norm="true")
    with_bn.G.train(), with_vbn.G.train()
    assert _first_output_moves_with_the_rest(with_bn.G, z)  # batch norm: G(z)_0 depends on z_1..
    assert not _first_output_moves_with_the_rest(with_vbn.G, z)
    with torch.no_grad():  # ... and training and sampling agree: there are no running statistics
        train_out = with_vbn.G(z)
        with_vbn.G.eval()
        torch.testing.assert_close(with_vbn.G(z), train_out)


# --- minimax vs non-saturating (gan) ------------------------------------------------------------------


def test_spectral_norm_D_scores_each_image_on_its_own() -> None:
    """d_norm=spectral: no batch norm in D, so (unlike the paper's D in training) an image's score
    does not depend on the rest of its batch, and every conv is scaled to spectral norm 1."""
    x = images_batch().real
    assert _first_output_moves_with_the_rest(dcgan().D.train(), x)
    D = dcgan(d_norm="spectral").D.train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    with torch.nn.utils.parametrize.cached():  # one power iteration for both calls
        assert not _first_output_moves_with_the_rest(D, x)
    with torch.no_grad():
        for _ in range(50):  # one power iteration per call in training mode
            D(x)
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05


def test_minimax_G_loss_saturates_where_non_saturating_does_not() -> None:
    """Goodfellow et al. 2014 §3: when D rejects fakes confidently, log(1 - D(G(z))) has almost no
    gradient, log D(G(z)) a large one."""
    b = points_batch()
    grads = {}
    for loss in ("minimax", "non_saturating"):
        model = gan(loss=loss)
        with torch.no_grad():
            model.D.out.bias.fill_(-12.0)  # D(x) ~ 6e-6 everywhere
        model.D.requires_grad_(False)
        model.loss.accumulate_gradients("G", b)
        grads[loss] = torch.cat([p.grad.flatten() for p in model.G.parameters()]).norm().item()
    assert grads["minimax"] < 1e-3 * grads["non_saturating"]


@pytest.mark.parametrize("model", ["gan", "dcgan"])
def test_stored_specs_with_the_options_read_back(model: str) -> None:
    from gantry.jobs.specs import load_train_spec

    for options in ({}, {"minibatch_discrimination": "true", "mbd_kernels": "7", "label_smoothing": "0.9"}):
        spec = parse_train_spec(model, {"dataset": "ring8" if model == "gan" else "digits"}, options)
        assert load_train_spec(spec.model_dump(mode="json")) == spec
