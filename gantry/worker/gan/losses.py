"""GAN losses as objects with one method, `accumulate_gradients(phase, batch)`.

As in stylegan2-ada-pytorch (training/loss.py): the shared training loop zeroes a phase's
gradients, asks the loss to accumulate them, and steps that phase's optimizer. A GAN variant
brings its own loss class; the loop never looks inside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

Phase = Literal["D", "G"]


@dataclass(eq=False)
class Minibatch:
    """What one training step sees. Conditional variants add their fields here (labels, text)."""

    real: torch.Tensor  # x: (N, C, H, W) real images in [-1, 1]
    z: torch.Tensor  # latents: (N, *latent_shape)
    # What G and D are conditioned on, one row per real image (e.g. text embeddings φ(t), (N, E));
    # None: unconditional. The loop hands it to `generate` for the sample grid too.
    cond: torch.Tensor | None = None
    # The real images' class labels (N, K) int64, where a model learns them (AC-GAN's `labels`).
    labels: torch.Tensor | None = None
    # Which of those label attributes each real image's caption names (N, K) bool (text2img on
    # `shapes`); None: all of them. G is held to the named ones only.
    named: torch.Tensor | None = None


def on_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A minibatch's tensor drawn on the CPU (indices, latents) on the step's `device`. To a GPU it
    goes from pinned memory without waiting: a copy from ordinary memory waits until the GPU has
    done all the work queued before it, so each step would wait for the last one to finish (torch's
    caching host allocator keeps a pinned block until its copy is done)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


class GANLoss(Protocol):
    def accumulate_gradients(self, phase: Phase, batch: Minibatch) -> dict[str, torch.Tensor]:
        """Backpropagate the phase's loss (no zeroing, no optimizer step); return detached 0-dim stats."""
        ...


class NonSaturatingLoss:
    """The GAN loss of Goodfellow et al. 2014 (arXiv 1406.2661) with G's non-saturating form.

    D maximises log D(x) + log(1 - D(G(z))); G maximises log D(G(z)) instead of minimising
    log(1 - D(G(z))), which saturates early in training when D rejects fakes confidently
    (paper §3). D returns logits, and BCE-with-logits keeps both terms numerically stable.

    Phase "G" reuses the fakes that phase "D" made from the same minibatch, as the DCGAN
    reference (pytorch/examples dcgan) does: one G forward per step instead of two, which is
    most of G's cost at these sizes. The phase-D graph of G is kept until phase G uses it.
    """

    def __init__(self, G: nn.Module, D: nn.Module) -> None:
        self.G = G
        self.D = D
        self._fake: tuple[Minibatch, torch.Tensor] | None = None  # (batch, G(z)) from the last phase D

    def accumulate_gradients(self, phase: Phase, batch: Minibatch) -> dict[str, torch.Tensor]:
        if phase == "D":
            # G's weights are trainable here (the loop freezes only D, in phase G), so G(z)
            # keeps its graph for phase G; D trains on it detached.
            fake = self.G(batch.z)  # (N, C, H, W)
            self._fake = (batch, fake)
            # Real and fake go through D separately, so batch norm never mixes them (DCGAN
            # reference; "construct different mini-batches for real and fake", ganhacks).
            logits_real = self.D(batch.real)  # (N,)
            logits_fake = self.D(fake.detach())  # (N,)
            loss_real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
            loss_fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            loss_D = loss_real + loss_fake
            loss_D.backward()
            return {
                "loss_D": loss_D.detach(),
                "D_x": torch.sigmoid(logits_real.detach()).mean(),  # mean D(x), a probability
                "D_G_z": torch.sigmoid(logits_fake.detach()).mean(),  # mean D(G(z)) before D's step
            }
        if phase == "G":
            if self._fake is not None and self._fake[0] is batch and self._fake[1].requires_grad:
                fake = self._fake[1]
            else:
                fake = self.G(batch.z)
            self._fake = None  # free G's graph once it has been used
            logits_fake = self.D(fake)  # (N,), scored by the D just updated
            loss_G = F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))
            loss_G.backward()
            return {"loss_G": loss_G.detach()}
        raise ValueError(f"unknown phase {phase!r}; expected 'D' or 'G'")
