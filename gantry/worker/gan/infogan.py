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
0.42 (4 seeds; bench/RESULTS.md).

The same head serves AC-GAN (Odena, Olah & Shlens 2016, arXiv 1610.09585; dcgan's `labels`): the
last `labelled` codes stand for label attributes of the data (a shape, a colour), drawn as the data's
label combinations are, and D's side learns them from the real images' labels alone, not from G's
images as AC-GAN's paper does: a head that also trains on the fakes learns to read whatever private
mark G draws for a class (on `shapes`, G then drew the colour asked for in 18% of samples, chance
12.5%); trained on real images only, it makes G draw what the class looks like in the data (98%).
Conditioned on all five `shapes` attributes, the demo's samples are recognisable about 8 times in 10
against 4 with `latent_codes=64` (bench/RESULTS.md), and `gantry demo` trains so.

Latents stay one tensor (N, nz + Σ k_i, 1, 1), so checkpoints, sample seeds, interpolation and
latent arithmetic work on them unchanged: the codes are its last Σ k_i entries, and the averaged
exemplars of the DCGAN paper's arithmetic average the one-hot codes too. A walk between two seeds
of different codes thus crosses blends of two codes (about 0.7 of each half way), which G never
trained on and draws as blends of two classes; `code_walk=switch` reads each code as its larger
value instead (`switched`), so the walk changes class half way and every frame is one class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

# code_walk=switch: a code read as softmax(SWITCH_SHARPNESS · code). A one-hot code stays one-hot
# (to 1e-8); half way along a walk between two codes, where slerp weighs them about 0.7 each, the
# reading swaps over about a tenth of the walk (weights 0.1 to 0.9 across a difference of 0.22).
SWITCH_SHARPNESS: Final = 20.0


def switched(code: torch.Tensor) -> torch.Tensor:
    """One-hot codes (N, k), or blends of them, as `code_walk=switch` reads them: the larger value."""
    return torch.softmax(SWITCH_SHARPNESS * code.float(), dim=1).to(code)


class CodedLatents:
    """Draws latents (n, nz + Σ codes + Σ labels, *spatial): z ~ N(0, I), a uniform one-hot code per
    size in `codes`, then one-hot label codes (AC-GAN) for a row drawn uniformly from `label_rows`
    (M, K): the label combinations the data has, so that G is never asked for one it never saw."""

    def __init__(
        self,
        nz: int,
        codes: Sequence[int],
        spatial: tuple[int, ...] = (1, 1),
        *,
        label_sizes: Sequence[int] = (),
        label_rows: torch.Tensor | None = None,
    ) -> None:
        self.nz, self.codes, self.spatial = nz, tuple(codes), spatial
        self.label_sizes = tuple(label_sizes)
        if self.label_sizes and (label_rows is None or label_rows.shape[1:] != (len(self.label_sizes),)):
            raise ValueError(f"label codes need label rows (M, {len(self.label_sizes)})")
        self.label_rows = label_rows

    @property
    def all_codes(self) -> tuple[int, ...]:
        """The sizes of every one-hot part after z: the free codes, then the labels."""
        return self.codes + self.label_sizes

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.nz + sum(self.all_codes), *self.spatial)

    def __call__(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn((n, self.nz), generator=generator)
        parts = [z]
        for size in self.codes:
            index = torch.randint(size, (n,), generator=generator)
            parts.append(F.one_hot(index, size).to(z.dtype))
        if self.label_rows is not None:
            rows = self.label_rows[torch.randint(len(self.label_rows), (n,), generator=generator)]
            for j, size in enumerate(self.label_sizes):
                parts.append(F.one_hot(rows[:, j], size).to(z.dtype))
        return torch.cat(parts, dim=1).view(n, *self.latent_shape)

    def switch(self, z: torch.Tensor) -> torch.Tensor:
        """Latents z (n, *latent_shape) with every code (free and label) `switched`, z's Gaussian part
        as it is: what G reads with `code_walk=switch`."""
        flat = z.flatten(1)
        codes = flat[:, self.nz :].split(self.all_codes, dim=1)
        return torch.cat([flat[:, : self.nz], *map(switched, codes)], dim=1).view_as(z)

    def label_values(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The value index of each label code in latents z (n, *latent_shape): one (n,) tensor each."""
        flat = z.flatten(1)[:, self.nz + sum(self.codes) :]
        return [part.argmax(1) for part in flat.split(self.label_sizes, dim=1)]

    def with_labels(self, z: torch.Tensor, values: dict[int, int | torch.Tensor]) -> torch.Tensor:
        """A copy of latents z (n, *latent_shape) whose label codes are set where `values` says:
        {position among the label attributes: value index}, one for every latent or an (n,) tensor
        of one per latent; everything else as drawn."""
        z = z.clone()
        flat = z.view(len(z), -1)  # a view: writing the codes writes z
        start = self.nz + sum(self.codes)
        rows = torch.arange(len(z))
        for j, size in enumerate(self.label_sizes):
            if j in values:
                flat[:, start : start + size] = 0.0
                flat[rows, start + values[j]] = 1.0
            start += size
        return z


class InfoHead(nn.Module):
    """Q: D's last hidden features (N, ...) -> one row of logits per code, and the InfoGAN loss.

    One linear layer on the flattened features, sharing everything else with D as the paper does
    (its Q adds a hidden layer; at these sizes one layer reads the codes back as well).
    """

    def __init__(
        self, in_features: int, *, nz: int, codes: Sequence[int], weight: float = 1.0, labelled: int = 0
    ) -> None:
        super().__init__()
        if not 0 <= labelled <= len(codes):
            raise ValueError(f"labelled must be 0 to {len(codes)} codes, not {labelled}")
        self.nz, self.codes, self.weight, self.labelled = nz, tuple(codes), weight, labelled
        self.fc = nn.Linear(in_features, sum(self.codes))

    def code_indices(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The category of each code in latents z (N, nz + Σ codes, ...): one (N,) tensor per code."""
        flat = z.flatten(1)[:, self.nz :]
        return [part.argmax(1) for part in flat.split(self.codes, dim=1)]

    def loss(self, features: torch.Tensor, z: torch.Tensor, *, labelled: bool = True) -> torch.Tensor:
        """λ Σ_i CE(Q_i(features), c_i), averaged over the batch: minimised by G and by Q (and D's body).

        `labelled=False` leaves the labelled codes out: D's side learns those from real images only
        (`label_loss`), so G must draw what the data's classes look like rather than a private mark
        that a head trained on G's own images would learn to read (the InfoGAN term's way)."""
        logits = self.fc(features.flatten(1)).split(self.codes, dim=1)
        targets = self.code_indices(z)
        count = len(self.codes) if labelled else len(self.codes) - self.labelled
        pairs = list(zip(logits, targets, strict=True))[:count]
        if not pairs:
            return features.new_zeros(())
        total = sum(F.cross_entropy(lg, c) for lg, c in pairs)
        return self.weight * total  # type: ignore[return-value]

    def label_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """AC-GAN's class term on real images: λ Σ_j CE(Q_j(features), labels[:, j]) over the labelled
        codes (the last `labelled`), labels (N, labelled) int64; minimised by D's side only."""
        logits = self.fc(features.flatten(1)).split(self.codes, dim=1)[len(self.codes) - self.labelled :]
        return self.weight * label_cross_entropy(logits, labels)


class LabelHead(nn.Module):
    """An auxiliary classifier on D's image features (TAC-GAN, Dash et al. 2017, arXiv 1703.06412, for
    text2img's `labels`): one linear layer to a row of logits per label attribute. D's side learns
    the real images' labels; G's images must show the labels of the caption they were drawn from."""

    def __init__(self, in_features: int, *, sizes: Sequence[int], weight: float = 1.0) -> None:
        super().__init__()
        self.sizes, self.weight = tuple(sizes), weight
        self.fc = nn.Linear(in_features, sum(self.sizes))

    def loss(
        self, features: torch.Tensor, labels: torch.Tensor, named: torch.Tensor | None = None
    ) -> torch.Tensor:
        """λ Σ_j CE(head_j(features), labels[:, j]), labels (N, K) int64, averaged over the batch;
        with `named` (N, K) bool, each attribute's term over the rows that name it only."""
        logits = self.fc(features.flatten(1)).split(self.sizes, dim=1)
        return self.weight * label_cross_entropy(logits, labels, named)


def label_cross_entropy(
    logits: Sequence[torch.Tensor], labels: torch.Tensor, named: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_j CE(logits[j], labels[:, j]): one row of logits (N, size_j) per label attribute, labels
    (N, K) int64, each term averaged over the batch; with `named` (N, K) bool, over the rows where
    named[:, j] only (no term where no row names attribute j). The rows are weighed, not picked:
    picking rows by mask, or asking whether any is named, waits for the GPU, which a CUDA graph
    cannot hold (gantry.worker.gan.fast)."""
    if named is None:
        return sum(F.cross_entropy(lg, labels[:, j]) for j, lg in enumerate(logits))  # type: ignore[return-value]
    total: torch.Tensor | int = 0
    for j, lg in enumerate(logits):
        each = F.cross_entropy(lg, labels[:, j], reduction="none")
        weight = named[:, j].to(each.dtype)
        total = total + (each * weight).sum() / weight.sum().clamp(min=1)  # 0 where none is named
    return total  # type: ignore[return-value]
