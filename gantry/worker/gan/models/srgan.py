"""SRGAN (Ledig et al. 2016, arXiv 1609.04802): SRResNet's generator trained against a discriminator.

D (paper Fig. 4, bottom), for a 96 x 96 crop with ndf = 64:

    conv k3n64s1, LeakyReLU(0.2)                                    -> 64 x 96 x 96
    7 x [conv, BN, LeakyReLU]: k3n64s2, k3n128s1, k3n128s2, k3n256s1,
                               k3n256s2, k3n512s1, k3n512s2        -> 512 x 6 x 6
    Dense(1024), LeakyReLU(0.2), Dense(1)                           -> one logit (the sigmoid is in the loss)

Loss (§2.2): l^SR = content + 1e-3 x adversarial, the adversarial term G's non-saturating
-log D(G(I^LR)) (Goodfellow et al. 2014); D minimises the usual binary cross-entropy. G starts from a
trained SRResNet (`init_from`; §3.2 "to avoid undesired local optima").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantry.jobs.specs import SRGANTrainSpec
from gantry.worker.gan.losses import Minibatch, Phase
from gantry.worker.gan.models.srresnet import ContentLoss, build_generator, content_loss, sr_batches
from gantry.worker.gan.registry import GANModel, adam_pair

__all__ = ["Discriminator", "SRGANLoss", "build", "build_generator"]  # G is SRResNet's


class Discriminator(nn.Module):
    """I (N, C, S, S) in [-1, 1] -> logits (N,). Widths scale with `ndf` (64 in the paper)."""

    def __init__(self, *, ndf: int, channels: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        width, size = ndf, image_size
        # (out channels, stride) of the seven conv-BN-LeakyReLU blocks
        for mult, stride in ((1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2)):
            layers += [
                nn.Conv2d(width, ndf * mult, 3, stride, 1),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = ndf * mult
            size = (size + 1) // 2 if stride == 2 else size  # k3 p1 s2 halves, rounding up
        self.features = nn.Sequential(*layers)  # (N, 8 ndf, S/16, S/16)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * size * size, 16 * ndf),  # Dense(1024) at ndf = 64
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(16 * ndf, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).view(-1)


class SRGANLoss:
    """Phase D: BCE on real HR crops vs G(I^LR); phase G: content + w * -log D(G(I^LR)).

    As `losses.NonSaturatingLoss`, phase G reuses the G(I^LR) that phase D made from the same batch.
    """

    def __init__(
        self, G: nn.Module, D: nn.Module, content: ContentLoss, *, adversarial_weight: float
    ) -> None:
        self.G, self.D, self.content = G, D, content
        self.adversarial_weight = adversarial_weight
        self._fake: tuple[Minibatch, torch.Tensor] | None = None

    def accumulate_gradients(self, phase: Phase, batch: Minibatch) -> dict[str, torch.Tensor]:
        if phase == "D":
            fake = self.G(batch.z)  # I^SR (N, C, S, S), graph kept for phase G
            self._fake = (batch, fake)
            logits_real, logits_fake = self.D(batch.real), self.D(fake.detach())
            loss_D = F.binary_cross_entropy_with_logits(
                logits_real, torch.ones_like(logits_real)
            ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
            loss_D.backward()
            return {
                "loss_D": loss_D.detach(),
                "D_x": torch.sigmoid(logits_real.detach()).mean(),
                "D_G_z": torch.sigmoid(logits_fake.detach()).mean(),
            }
        if phase == "G":
            if self._fake is not None and self._fake[0] is batch and self._fake[1].requires_grad:
                fake = self._fake[1]
            else:
                fake = self.G(batch.z)
            self._fake = None
            logits = self.D(fake)
            loss_content = self.content(fake, batch.real)
            loss_adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            loss_G = loss_content + self.adversarial_weight * loss_adv
            loss_G.backward()
            return {
                "loss_G": loss_G.detach(),
                "loss_content": loss_content.detach(),
                "loss_adv": loss_adv.detach(),
            }
        raise ValueError(f"unknown phase {phase!r}; expected 'D' or 'G'")


def build(spec: SRGANTrainSpec, *, channels: int, device: torch.device) -> GANModel:
    """G (SRResNet's), D, Adam for both (paper §3.2: lr 1e-4, beta1 0.9), content + adversarial loss."""
    opts = spec.options
    parts = build_generator(spec, channels=channels, device=device)
    G = parts.G
    D = Discriminator(ndf=opts.ndf, channels=channels, image_size=spec.image_size).to(device)
    opt_G, opt_D = adam_pair(G, D, lr=opts.lr, betas=(opts.beta1, 0.999))
    return GANModel(
        G=G,
        D=D,
        opt_G=opt_G,
        opt_D=opt_D,
        loss=SRGANLoss(G, D, content_loss(opts, device), adversarial_weight=opts.adversarial_weight),
        latent_shape=parts.latent_shape,
        make_batch=sr_batches(image_size=spec.image_size, scale=opts.scale, augment=opts.augment),
    )
