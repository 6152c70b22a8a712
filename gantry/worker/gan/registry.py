"""Model name -> the module that builds it, and what every model module provides.

A model module under `gantry/worker/gan/models/` defines

    def build(spec, *, channels: int, device: torch.device) -> GANModel

returning its networks, their optimizers and its loss (see `losses.GANLoss`). The training loop
(`loop.train`) and the sampler only ever see a `GANModel`, so adding a variant is its spec in
`jobs/specs.py`, its module, and one line in `MODELS` below.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from gantry.jobs.specs import TrainSpecBase
    from gantry.worker.gan.losses import GANLoss

# spec.model -> module defining `build`. Imported on first use, so a worker loads only its model.
MODELS: dict[str, str] = {
    "dcgan": "gantry.worker.gan.models.dcgan",
}


@dataclass(eq=False)
class GANModel:
    """G, D, one optimizer each, and the loss that trains them."""

    G: nn.Module
    D: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    loss: GANLoss
    latent_shape: tuple[int, ...]  # one z, e.g. (nz, 1, 1) for DCGAN, (nz,) for an MLP

    @property
    def nz(self) -> int:
        return self.latent_shape[0]

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """z ~ N(0, I), (n, *latent_shape), drawn on the CPU so a seed means the same z on any device."""
        return torch.randn((n, *self.latent_shape), generator=generator)


def build_model(spec: TrainSpecBase, *, channels: int, device: torch.device) -> GANModel:
    """Build the model a train spec names, with weights initialised from the global torch RNG."""
    module_name = MODELS.get(getattr(spec, "model", ""))
    if module_name is None:
        raise ValueError(f"no worker model for {getattr(spec, 'model', None)!r}; known: {', '.join(MODELS)}")
    return importlib.import_module(module_name).build(spec, channels=channels, device=device)
