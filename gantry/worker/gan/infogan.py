"""InfoGAN's categorical latent codes (Chen et al. 2016, arXiv 1606.03657), for convolutional GANs.

G's input becomes [z ; c_1 ; ... ; c_k]: Gaussian noise z and one-hot codes c_i, each uniform over
its categories. A small head Q on D's last hidden features predicts every code back from G(z, c), and
both G and Q minimise λ Σ_i CE(Q_i(G(z, c)), c_i): the variational lower bound on the mutual
information I(c; G(z, c)) of the paper (§5), with the entropy of c a constant. G must then draw
images from which the code can be read, so each code value becomes a distinct kind of image.

Why gantry has it: data made of separate pieces (`shapes`: one shape, colour, size and place per
image) is what a G that is continuous in z draws badly, since it must also draw the images between
the pieces (blobs, half-drawn pairs). A discrete code lets G jump between pieces instead. On
`shapes`, `latent_codes=64` raised the share of confidently recognisable demo samples from 0.25 to
0.42 (4 seeds; bench/RESULTS.md), and `gantry demo` trains with it.

Latents stay one tensor (N, nz + Σ k_i, 1, 1), so checkpoints, sample seeds, interpolation and
latent arithmetic work on them unchanged: the codes are its last Σ k_i entries, and the averaged
exemplars of the DCGAN paper's arithmetic average the one-hot codes too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class CodedLatents:
    """Draws latents (n, nz + Σ codes, *spatial): z ~ N(0, I), then a uniform one-hot code per size."""

    def __init__(self, nz: int, codes: Sequence[int], spatial: tuple[int, ...] = (1, 1)) -> None:
        self.nz, self.codes, self.spatial = nz, tuple(codes), spatial

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.nz + sum(self.codes), *self.spatial)

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((n, self.nz), generator=generator)
        parts = [z]
        for size in self.codes:
            index = torch.randint(size, (n,), generator=generator)
            parts.append(F.one_hot(index, size).to(z.dtype))
        return torch.cat(parts, dim=1).view(n, *self.latent_shape)


class InfoHead(nn.Module):
    """Q: D's last hidden features (N, ...) -> one row of logits per code, and the InfoGAN loss.

    One linear layer on the flattened features, sharing everything else with D as the paper does
    (its Q adds a hidden layer; at these sizes one layer reads the codes back as well).
    """

    def __init__(self, in_features: int, *, nz: int, codes: Sequence[int], weight: float = 1.0) -> None:
        super().__init__()
        self.nz, self.codes, self.weight = nz, tuple(codes), weight
        self.fc = nn.Linear(in_features, sum(self.codes))

    def code_indices(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The category of each code in latents z (N, nz + Σ codes, ...): one (N,) tensor per code."""
        flat = z.flatten(1)[:, self.nz :]
        return [part.argmax(1) for part in flat.split(self.codes, dim=1)]

    def loss(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """λ Σ_i CE(Q_i(features), c_i), averaged over the batch: minimised by G and by Q (and D's body)."""
        logits = self.fc(features.flatten(1)).split(self.codes, dim=1)
        targets = self.code_indices(z)
        total = sum(F.cross_entropy(lg, c) for lg, c in zip(logits, targets, strict=True))
        return self.weight * total  # type: ignore[return-value]
