"""Model name -> the module that builds it, and what every model module provides.

The module of model `m` is `gantry.worker.gan.models.m` (found by that name, imported on first use,
so a worker loads only its model). It defines

    def build_generator(spec, *, channels: int, device: torch.device, extra=None) -> GeneratorParts
    def build(spec, *, channels: int, device: torch.device) -> GANModel

`build_generator` makes G alone (no D, optimizers or loss): what sampling needs, with the weights
then loaded from a checkpoint (`checkpoint.load_generator`); `extra` is that checkpoint's `extra`
state where G's shape depends on it (text2img's caption grammar), None when building to train.
`build` returns G (made by the same code), D, their optimizers and the loss (see
`losses.GANLoss`). The training loop (`loop.train`) only ever sees a `GANModel`, so adding a
variant is its spec in `gantry/jobs/specs/<model>.py` (and one line in `MODELS` there) and its
module here (docs/architecture.md, "Adding a model").
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from gantry.jobs.specs import TrainSpecBase
    from gantry.worker.gan.losses import GANLoss, Minibatch, Phase
    from gantry.worker.gan.sampler import SampleResult

MODELS_PACKAGE = "gantry.worker.gan.models"

# (data, batch_size, generator, device) -> one step's minibatch, everything random drawn from
# `generator` (a CPU torch.Generator), so a seed means the same batches on any device.
BatchMaker = Callable[[Any, int, torch.Generator, torch.device], "Minibatch"]
# (n, generator) -> n latents (n, *latent_shape), drawn on the CPU.
LatentSampler = Callable[[int, torch.Generator], torch.Tensor]
# G(z) as a float CPU tensor (N, ...) -> a sample job's files (see `GANModel.render`).
Renderer = Callable[[torch.Tensor], "SampleResult"]


def draw_latents(
    latent_shape: tuple[int, ...], sampler: LatentSampler | None, n: int, generator: torch.Generator
) -> torch.Tensor:
    """z ~ N(0, I) (or `sampler`'s latents), (n, *latent_shape), drawn on the CPU so a seed means
    the same z on any device."""
    if sampler is not None:
        return sampler(n, generator)
    return torch.randn((n, *latent_shape), generator=generator)


@dataclass(eq=False)
class GeneratorParts:
    """G and what drawing from it needs: the shape of one z, how z is drawn, how G(z) becomes files."""

    G: nn.Module
    latent_shape: tuple[int, ...]  # one z, e.g. (nz, 1, 1) for DCGAN, (nz,) for an MLP, an LR crop for SR
    latent_sampler: LatentSampler | None = None  # None: z ~ N(0, I) (see `GANModel.latent_sampler`)
    render: Renderer | None = None  # None: G draws images (see `GANModel.render`)

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return draw_latents(self.latent_shape, self.latent_sampler, n, generator)


@dataclass(eq=False)
class GANModel:
    """G, D, one optimizer each, and the loss that trains them."""

    G: nn.Module
    D: nn.Module | None  # None: no adversary (SRResNet trains G on a pixel loss alone)
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer | None
    loss: GANLoss
    latent_shape: tuple[int, ...]  # one z, e.g. (nz, 1, 1) for DCGAN, (nz,) for an MLP
    # Optional hooks for variants whose steps differ from an unconditional GAN's:
    # the optimizer steps of one training step, in order ("G" alone when there is no D) ...
    phases: tuple[Phase, ...] = ("D", "G")
    # ... and how a minibatch is made from the data; None: images drawn with replacement from
    # `data.images` (N, H, W, C) and z ~ N(0, I). SR models make random HR crops and their
    # bicubic LR versions (`Minibatch.z` is then G's input, the LR crops).
    make_batch: BatchMaker | None = None
    # ... and plain data the checkpoint keeps beside the weights (e.g. text2img's fitted text
    # encoder), so that sampling needs the checkpoint alone; None: nothing.
    extra_state: Callable[[], dict[str, Any]] | None = None
    # ... and how G's outputs become files when they are not images (the MLP GAN's 2-D points):
    # G(z) as a float CPU tensor (N, ...) -> a sample job's files, whose `grid` is also the
    # training loop's sample PNG; None: images (uint8 PNGs and a grid).
    render: Renderer | None = None
    # ... and how latents are drawn, (n, generator) -> (n, *latent_shape), when they are not
    # z ~ N(0, I) (InfoGAN's one-hot codes after z); None: Gaussian.
    latent_sampler: LatentSampler | None = None
    # ... and whether, on the CPU, the networks and the default image batches run in channels-last
    # memory format (oneDNN's convolutions are about 20% faster so; bench/RESULTS.md). For
    # convolutional networks whose layers all accept it.
    channels_last_on_cpu: bool = False
    # ... and the data's label attributes whose values each default minibatch carries as
    # `Minibatch.labels` (N, K), in this order (AC-GAN's classes); (): none.
    labels: tuple[str, ...] = ()

    @property
    def nz(self) -> int:
        return self.latent_shape[0]

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """z ~ N(0, I) (or the model's `latent_sampler`), (n, *latent_shape), drawn on the CPU so a
        seed means the same z on any device."""
        return draw_latents(self.latent_shape, self.latent_sampler, n, generator)


def known_models() -> list[str]:
    """The model modules under `gantry.worker.gan.models`, by name."""
    package = importlib.import_module(MODELS_PACKAGE)
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__))


def model_module(model: str) -> ModuleType:
    """The module that builds `model`: `gantry.worker.gan.models.<model>`."""
    name = f"{MODELS_PACKAGE}.{model}"
    if not model.isidentifier():
        raise _unknown(model)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # the module exists but imports something missing: that error, as it is
            raise
        raise _unknown(model) from None


def _unknown(model: str) -> ValueError:
    return ValueError(f"no worker model for {model!r}; known: {', '.join(known_models())}")


def build_model(
    spec: TrainSpecBase,
    *,
    channels: int,
    device: torch.device,
    label_values: dict[str, list[str]] | None = None,
) -> GANModel:
    """Build the model a train spec names, with weights initialised from the global torch RNG.
    `label_values`: the classes of labels the data brings (`labels=folder`: its sub-folders), passed
    on to the models that take them (dcgan); None for labels a built-in data set declares."""
    more = {"label_values": label_values} if label_values else {}
    model: GANModel = model_module(spec.model).build(spec, channels=channels, device=device, **more)
    return model


def build_generator(
    spec: TrainSpecBase, *, channels: int, device: torch.device, extra: dict[str, Any] | None = None
) -> GeneratorParts:
    """G alone for the model a train spec names (no D, optimizers or loss); `extra`: the checkpoint's
    extra state when G is rebuilt from one. Weights initialised from the global torch RNG."""
    parts: GeneratorParts = model_module(spec.model).build_generator(
        spec, channels=channels, device=device, extra=extra
    )
    return parts


def adam_pair(
    G: nn.Module, D: nn.Module, *, lr: float, betas: tuple[float, float]
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(opt_G, opt_D): Adam with the same settings for both players, as every GAN here trains."""
    return torch.optim.Adam(G.parameters(), lr=lr, betas=betas), torch.optim.Adam(
        D.parameters(), lr=lr, betas=betas
    )
