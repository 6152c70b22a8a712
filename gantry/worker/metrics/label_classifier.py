"""gantry's own label classifier: what `cas`, `gan_train`, `gan_test` and `fd_classifier` read instead
of a pretrained network (gantry downloads none).

A small CNN with one softmax head per label attribute (a data set with one label per image has
one), trained by gantry: on a data set's real train split for `gan_test` and `fd_classifier` (and
as the ceiling of `cas`), on a model's samples for `cas` / `gan_train`. The same network, budget and
seed either way, so the two accuracies compare (Ravuri & Vinyals 2019, arXiv 1905.10887, §3).

It reads images at `min(image_size, MAX_SIZE)` pixels (larger ones are area-downsampled, as the shapes
classifier does): enough to tell classes apart, and fast on a CPU. Training is deterministic on a CPU
(fixed seed, its own RNG streams; the caller's RNG is left as it was). The real-data classifier is
cached in object storage by the content of the data it was trained and tested on
(`gantry.worker.metrics.cache`), so a data set pays for it once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# Bump when the network, its training or its cached accuracy changes: older caches are ignored.
VERSION: Final = 2
MAX_SIZE: Final = 32
FEATURES: Final = 64  # the penultimate features fd_classifier compares
BATCH: Final = 64
EPOCHS: Final = 8  # passes over the training images, within MIN_STEPS..MAX_STEPS optimiser steps
MIN_STEPS: Final = 300
MAX_STEPS: Final = 1500
LR: Final = 1e-3
SEED: Final = 0  # every classifier starts from the same weights and batch order
CLASSIFY_BATCH: Final = 512


class LabelNet(nn.Module):
    """Images (N, C, S, S) in [-1, 1] -> logits of every head, concatenated (N, Σ sizes)."""

    def __init__(self, channels: int, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = tuple(sizes)

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.body = nn.Sequential(
            *block(channels, 16, 1),  # 16 x S x S
            *block(16, 32, 2),  # 32 x S/2 x S/2
            *block(32, 64, 2),  # 64 x S/4 x S/4
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # 64
            nn.Linear(64, FEATURES),
            nn.ReLU(inplace=True),  # the penultimate features
        )
        self.heads = nn.Linear(FEATURES, sum(self.sizes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.body(x))


def to_input(images: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, size, size) in [-1, 1] on `device`, area-downsampled if larger."""
    x = (
        torch.from_numpy(np.ascontiguousarray(images))
        .to(device)
        .permute(0, 3, 1, 2)
        .float()
        .div_(127.5)
        .sub_(1.0)
    )
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> list[float]:
    """Per attribute (column of (N, K) arrays), the mean over the classes present in `labels` of the
    share of that class read right. The plain share read right where the classes are equally many
    (ImageNet's, digits', shapes'), and 1/classes for a classifier that always names the commonest
    class of data where one class is most of it (where plain accuracy would give that class's share)."""
    scores = []
    for column in range(labels.shape[1]):
        truth, guess = labels[:, column], predicted[:, column]
        scores.append(float(np.mean([np.mean(guess[truth == c] == c) for c in np.unique(truth)])))
    return scores


def as_columns(labels: np.ndarray) -> np.ndarray:
    """Labels (N,) or (N, K) -> int64 (N, K): one column per attribute."""
    return (labels[:, None] if labels.ndim == 1 else labels).astype(np.int64)


@dataclass
class LabelClassifier:
    net: LabelNet
    size: int  # the side it reads images at
    device: torch.device

    @torch.no_grad()
    def _run(self, images: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
        self.net.eval()
        parts = [
            fn(to_input(images[start : start + CLASSIFY_BATCH], self.size, self.device)).float().cpu()
            for start in range(0, len(images), CLASSIFY_BATCH)
        ]
        return torch.cat(parts).numpy() if parts else np.zeros((0,))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C) -> int64 (N, K): the most likely value of each attribute."""
        logits = torch.from_numpy(self._run(images, self.net))
        return torch.stack([part.argmax(1) for part in logits.split(self.net.sizes, dim=1)], 1).numpy()

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C) -> float64 (N, FEATURES): the penultimate layer."""
        return self._run(images, self.net.features).astype(np.float64)

    def accuracy(self, images: np.ndarray, labels: np.ndarray, heads: Sequence[int] | None = None) -> float:
        """Class-balanced accuracy (`balanced_accuracy`) against labels (N, len(heads)) or (N,) for
        one, averaged over the attributes `heads` (default: all)."""
        heads = list(range(len(self.net.sizes))) if heads is None else list(heads)
        predicted = self.predict(images)[:, heads]
        return float(np.mean(balanced_accuracy(predicted, as_columns(labels))))


def steps_for(count: int) -> int:
    """Optimiser steps for `count` training images: EPOCHS passes, within MIN_STEPS..MAX_STEPS."""
    return min(MAX_STEPS, max(MIN_STEPS, EPOCHS * count // BATCH))


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    sizes: Sequence[int],
    *,
    device: torch.device | str = "cpu",
    report: Callable[[int, int], None] | None = None,
) -> LabelClassifier:
    """A classifier of `labels` ((N,) or (N, K) int64, values below `sizes`) trained on uint8 images
    (N, H, W, C) for `steps_for(N)` steps. `report(done, total)` every 100 steps."""
    device = torch.device(device)
    columns = as_columns(labels)
    if columns.shape[1] != len(sizes) or (columns >= np.asarray(sizes)).any() or (columns < 0).any():
        raise ValueError(f"labels must be {len(sizes)} columns of values below {tuple(sizes)}")
    size = min(images.shape[1], MAX_SIZE)
    started, steps = time.perf_counter(), steps_for(len(images))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        net = LabelNet(images.shape[-1], sizes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    x_all, y_all = to_input(images, size, device), torch.from_numpy(columns).to(device)
    order = torch.Generator().manual_seed(SEED)
    net.train()
    for step in range(steps):
        index = torch.randint(len(images), (BATCH,), generator=order).to(device)
        logits = net(x_all[index]).split(net.sizes, dim=1)
        loss = sum(F.cross_entropy(lg, y_all[index, k]) for k, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        if report is not None and (step + 1) % 100 == 0:
            report(step + 1, steps)
    log.info(
        "label classifier (%s) trained on %d images at %dpx in %d steps, %.1fs",
        "x".join(map(str, sizes)),
        len(images),
        size,
        steps,
        time.perf_counter() - started,
    )
    return LabelClassifier(net.eval(), size, device)


def content_name(*arrays: np.ndarray, extra: Any = ()) -> str:
    """A cache name for a classifier trained on `arrays` (images, labels of each split): their SHA-256."""
    digest = hashlib.sha256(f"v{VERSION}|{extra!r}".encode())
    for array in arrays:
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return f"label-classifier-{digest.hexdigest()[:24]}.pt"


def dump(classifier: LabelClassifier, accuracy: Sequence[float]) -> bytes:
    """The classifier and its held-out accuracy per attribute, as `torch.save` bytes of plain data."""
    buf = io.BytesIO()
    state = {k: v.cpu() for k, v in classifier.net.state_dict().items()}
    channels = classifier.net.body[0].in_channels
    meta = {"sizes": list(classifier.net.sizes), "channels": channels, "size": classifier.size}
    torch.save({"net": state, "accuracy": [float(a) for a in accuracy], **meta}, buf)
    return buf.getvalue()


def load(data: bytes, device: torch.device | str = "cpu") -> tuple[LabelClassifier, list[float]]:
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net = LabelNet(state["channels"], state["sizes"])
    net.load_state_dict(state["net"])
    device = torch.device(device)
    return LabelClassifier(net.to(device).eval(), int(state["size"]), device), list(state["accuracy"])
