"""An attribute classifier for the `shapes` data set: what the text-to-image and latent metrics read.

A small CNN with one softmax head per attribute (shape, colour, size, position, background), trained
by gantry on real `shapes` images of every (colour, shape) combination, the held-out ones included
(it judges the generator, it is not the generator), and checked on other images of the same kind.
Each attribute should reach `MIN_ACCURACY` there; its accuracies are reported with the metrics.

It runs at `min(image_size, 32)` pixels: larger images are area-downsampled first (a shape drawn at
64 and averaged down looks like one drawn at 32). Training is deterministic (fixed seed, its own
data seed) and takes well under a minute on one CPU core; the weights are cached under
`$GANTRY_HOME/cache/`, so later evaluations load them in milliseconds.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gantry.worker.data import shapes

log = logging.getLogger(__name__)

CLASSIFIER_VERSION: Final = 1  # bump when the network, data or training changes: old caches are ignored
MIN_ACCURACY: Final = 0.98  # per attribute, on the test split
MAX_SIZE: Final = 32
DATA_SEED: Final = 12345  # its own data, not the seed a GAN trained on
TRAIN_COUNT: Final = 20_000
TEST_COUNT: Final = 4_000
EPOCHS: Final = 2
BATCH: Final = 128
CLASSIFY_BATCH: Final = 512  # images per forward when classifying
CLASSES: Final = {name: len(values) for name, values in shapes.ATTRIBUTES.items()}


class AttributeNet(nn.Module):
    """Images (N, 3, S, S) in [-1, 1] -> logits per attribute, concatenated (N, 26).

    What a shape is does not depend on where it is: shape, colour, size and background are read
    from features pooled over the whole image (average and max, translation invariant), position
    from the feature map pooled to the 3 x 3 grid of the data set's cells.
    """

    def __init__(self, image_size: int) -> None:
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            # Batch norm: several times fewer steps to converge (Ioffe & Szegedy 2015, arXiv 1502.03167).
            return [
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(3, 16, 1),  # 16 x S x S: full resolution for small shapes
            *block(16, 32, 2),  # 32 x S/2 x S/2
            *block(32, 64, 1),  # 64 x S/2 x S/2
            *block(64, 64, 2),  # 64 x S/4 x S/4
        )
        self.what = nn.Linear(2 * 64, sum(n for name, n in CLASSES.items() if name != "position"))
        self.where = nn.Linear(64 * 9, CLASSES["position"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (N, 64, S/4, S/4)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1)  # (N, 128)
        what = self.what(pooled)  # shape, colour, size, background logits (N, 4 + 8 + 2 + 3)
        where = self.where(F.adaptive_avg_pool2d(f, 3).flatten(1))  # position logits (N, 9)
        n_shape, n_colour, n_size = CLASSES["shape"], CLASSES["colour"], CLASSES["size"]
        head = n_shape + n_colour + n_size
        return torch.cat([what[:, :head], where, what[:, head:]], dim=1)  # in ATTRIBUTES order


def _to_input(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, size, size) in [-1, 1], area-downsampled if larger."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x


def _split(logits: torch.Tensor) -> list[torch.Tensor]:
    return list(logits.split(list(CLASSES.values()), dim=1))


@dataclass
class Classification:
    labels: np.ndarray  # int64 (N, 5), columns as shapes.ATTRIBUTES
    confidence: np.ndarray  # float (N, 5): the softmax probability of each chosen label


class ShapesClassifier:
    def __init__(self, net: AttributeNet, size: int, accuracy: dict[str, float]) -> None:
        self.net = net.eval()
        self.size = size
        self.accuracy = accuracy  # attribute -> accuracy on the test split

    @torch.no_grad()
    def classify(self, images: np.ndarray) -> Classification:
        """uint8 images (N, H, W, 3) -> labels and confidences."""
        labels, confidence = [], []
        for start in range(0, len(images), CLASSIFY_BATCH):
            probs = [
                p.softmax(1)
                for p in _split(self.net(_to_input(images[start : start + CLASSIFY_BATCH], self.size)))
            ]
            best = [p.max(1) for p in probs]
            labels.append(torch.stack([b.indices for b in best], 1))
            confidence.append(torch.stack([b.values for b in best], 1))
        return Classification(
            labels=torch.cat(labels).numpy().astype(np.int64), confidence=torch.cat(confidence).numpy()
        )


def _train(size: int) -> ShapesClassifier:
    started = time.perf_counter()
    # Both from the "test" distribution, which has every (colour, shape) pair: a classifier that
    # never saw a green triangle would learn "green is never a triangle" and misjudge exactly the
    # held-out prompts it is meant to check. Different seeds: disjoint images.
    train_data = shapes.generate(size, seed=DATA_SEED, split="test", count=TRAIN_COUNT)
    test_data = shapes.generate(size, seed=DATA_SEED + 1, split="test", count=TEST_COUNT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DATA_SEED)
        net = AttributeNet(size)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        x_all = _to_input(train_data.images, size)
        y_all = torch.from_numpy(train_data.labels)
        generator = torch.Generator().manual_seed(DATA_SEED)
        for _ in range(EPOCHS):
            order = torch.randperm(len(x_all), generator=generator)
            for start in range(0, len(order), BATCH):
                index = order[start : start + BATCH]
                x = x_all[index]
                # Pixel noise, so that a GAN's slightly grainy output reads like a drawing.
                x = x + 0.04 * torch.randn(x.shape, generator=generator)
                loss = sum(
                    F.cross_entropy(logits, y_all[index, k]) for k, logits in enumerate(_split(net(x)))
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[union-attr]
                opt.step()
    classifier = ShapesClassifier(net, size, {})
    predicted = classifier.classify(test_data.images).labels
    assert test_data.labels is not None
    classifier.accuracy = {
        name: float((predicted[:, k] == test_data.labels[:, k]).mean()) for k, name in enumerate(CLASSES)
    }
    log.info(
        "shapes attribute classifier at %dpx trained in %.0fs; test accuracy %s",
        size,
        time.perf_counter() - started,
        ", ".join(f"{k} {v:.4f}" for k, v in classifier.accuracy.items()),
    )
    return classifier


def default_cache_dir() -> Path:
    from gantry.jobs.settings import get_settings

    return get_settings().home / "cache"


def attribute_classifier(image_size: int, *, cache_dir: Path | None = None) -> ShapesClassifier:
    """The classifier for images of `image_size` pixels: from the cache, or trained and cached."""
    size = min(image_size, MAX_SIZE)
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"shapes-classifier-{size}px-v{CLASSIFIER_VERSION}.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = AttributeNet(size)
        net.load_state_dict(state["net"])
        return ShapesClassifier(net, size, dict(state["accuracy"]))
    classifier = _train(size)
    worst = min(classifier.accuracy.values())
    if worst < MIN_ACCURACY:
        raise RuntimeError(
            f"the shapes classifier reached only {worst:.3f} on an attribute (needs {MIN_ACCURACY})"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"net": classifier.net.state_dict(), "accuracy": classifier.accuracy, "size": size}, buf)
    # Written to a temporary file and renamed: a concurrent evaluation never reads half a file.
    with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False, suffix=".tmp") as tmp:
        tmp.write(buf.getvalue())
    os.replace(tmp.name, path)
    return classifier
