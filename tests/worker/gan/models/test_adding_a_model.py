"""Adding a model touches four places (README, "Adding a model"): its spec module, its model module,
one line in `MODELS`, a test. This test adds a model, `toy`, in exactly those places (the spec and
model module are written here, the registry line is a monkeypatch) and runs it through the service
as users run any model: submit, train, sample. Nothing else in gantry needs to know its name."""

from __future__ import annotations

import sys
import types
from typing import Any, Literal

import pytest
import torch
from pydantic import Field
from torch import nn

from gantry.api.service import Service
from gantry.jobs import specs
from gantry.jobs.errors import InvalidInput
from gantry.jobs.settings import Settings
from gantry.jobs.specs import ModelOptions, TrainSpec
from gantry.worker.gan.losses import NonSaturatingLoss
from gantry.worker.gan.registry import GANModel, GeneratorParts, adam_pair

# --- 1. the spec module (gantry/jobs/specs/toy.py) -------------------------------------------------


class ToyOptions(ModelOptions):
    nz: int = Field(8, ge=1, le=64, description="latent dimension (z)")


class ToyTrainSpec(TrainSpec):
    model: Literal["toy"] = "toy"
    options: ToyOptions = ToyOptions()


# --- 2. the model module (gantry/worker/gan/models/toy.py) -----------------------------------------


def build_generator(
    spec: ToyTrainSpec, *, channels: int, device: torch.device, extra: dict[str, Any] | None = None
) -> GeneratorParts:
    side = spec.image_size
    G = nn.Sequential(
        nn.Linear(spec.options.nz, channels * side * side), nn.Tanh(), nn.Unflatten(1, (channels, side, side))
    )
    return GeneratorParts(G=G.to(device), latent_shape=(spec.options.nz,))


def build(spec: ToyTrainSpec, *, channels: int, device: torch.device) -> GANModel:
    parts = build_generator(spec, channels=channels, device=device)
    D = nn.Sequential(nn.Flatten(), nn.Linear(channels * spec.image_size**2, 1)).to(device)
    opt_G, opt_D = adam_pair(parts.G, D, lr=1e-3, betas=(0.5, 0.999))
    return GANModel(
        G=parts.G,
        D=D,
        opt_G=opt_G,
        opt_D=opt_D,
        loss=NonSaturatingLoss(parts.G, D),
        latent_shape=parts.latent_shape,
    )


# --- 3. the registry line, 4. this test ----------------------------------------------------------


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("gantry.worker.gan.models.toy")
    module.build, module.build_generator = build, build_generator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(specs.MODELS, "toy", ToyTrainSpec)


@pytest.mark.usefixtures("toy")
def test_a_model_added_in_four_places_trains_and_samples_as_a_job(settings: Settings) -> None:
    svc = Service(settings)
    train = svc.submit_train(
        "toy", dataset="digits", image_size=16, steps=4, batch_size=8, checkpoint_every=2
    )
    svc.run_embedded(train)
    trained = svc.get(train.id)
    assert (trained.state, trained.progress.step) == ("succeeded", 4), trained.error
    sample = svc.submit_sample(train.id, count=4, seed=3)
    svc.run_embedded(sample)
    sampled = svc.get(sample.id)
    assert sampled.state == "succeeded", sampled.error
    assert sum(a.kind == "image" for a in sampled.artifacts) == 4
    # What the spec did not declare is refused at submit, by the same checks as every model's.
    with pytest.raises(InvalidInput, match="interpolate"):
        svc.submit_sample(train.id, interpolate="1:2")
    with pytest.raises(InvalidInput, match="nosuch"):
        svc.submit_train("toy", dataset="digits", options={"nosuch": "1"})
