"""Model name -> the module that builds it, and what every model module provides.

A model module under `gantry/worker/gan/models/` defines

    def build(spec, *, channels: int, device: torch.device) -> GANModel

returning its networks, their optimizers and its loss (see `losses.GANLoss`). The training loop
(`loop.train`) and the sampler only ever see a `GANModel`, so adding a variant is its spec in
`jobs/specs/<model>.py` (and a line in its `MODELS`), its module, and one line in `MODELS` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from gantry.jobs.specs import TrainSpecBase
    from gantry.worker.gan.losses import GANLoss, Minibatch, Phase
    from gantry.worker.gan.sampler import SampleResult

# (data, batch_size, generator, device) -> one step's minibatch, everything random drawn from
# `generator` (a CPU torch.Generator), so a seed means the same batches on any device.
BatchMaker = Callable[[Any, int, torch.Generator, torch.device], "Minibatch"]

# spec.model -> module defining `build`. Imported on first use, so a worker loads only its model.
MODELS: dict[str, str] = {
    "gan": "gantry.worker.gan.models.gan",
    "dcgan": "gantry.worker.gan.models.dcgan",
    "srresnet": "gantry.worker.gan.models.srresnet",
    "srgan": "gantry.worker.gan.models.srgan",
    "text2img": "gantry.worker.gan.models.text2img",
}


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
    render: Callable[[torch.Tensor], SampleResult] | None = None
    # ... and how latents are drawn, (n, generator) -> (n, *latent_shape), when they are not
    # z ~ N(0, I) (InfoGAN's one-hot codes after z); None: Gaussian.
    latent_sampler: Callable[[int, torch.Generator], torch.Tensor] | None = None
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
        if self.latent_sampler is not None:
            return self.latent_sampler(n, generator)
        return torch.randn((n, *self.latent_shape), generator=generator)


def build_model(spec: TrainSpecBase, *, channels: int, device: torch.device) -> GANModel:
    """Build the model a train spec names, with weights initialised from the global torch RNG."""
    module_name = MODELS.get(spec.model)
    if module_name is None:
        raise ValueError(f"no worker model for {spec.model!r}; known: {', '.join(MODELS)}")
    return importlib.import_module(module_name).build(spec, channels=channels, device=device)


def adam_pair(
    G: nn.Module, D: nn.Module, *, lr: float, betas: tuple[float, float]
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """(opt_G, opt_D): Adam with the same settings for both players, as every GAN here trains."""
    return torch.optim.Adam(G.parameters(), lr=lr, betas=betas), torch.optim.Adam(
        D.parameters(), lr=lr, betas=betas
    )
