"""The built-in `stacked-digits` data set: three digits drawn independently into R, G and B.

Stacked MNIST (Metz et al. 2016, arXiv 1611.02163; PacGAN Table 2, arXiv 1712.04086) built from
scikit-learn's 8x8 digits instead of MNIST (nothing is downloaded): each image's red, green and
blue channels are three digits chosen independently and uniformly from the `digits` data set at
the requested size, so there are 10^3 = 1000 modes (digit triples). Labels are N x 3, the digits
of (R, G, B), with `attributes` naming the columns.

The split follows `digits`: train images are stacked from train digits only, test images from
test digits only. Images are drawn from the job's seed (train and test from independent streams).
"""

from __future__ import annotations

from typing import Final

import numpy as np

from gantry.worker.data import digits
from gantry.worker.data.base import ImageData

DEFAULT_COUNT: Final = {"train": 25_600, "test": 2_560}
CHANNELS: Final = ("red", "green", "blue")


def generate(image_size: int, *, seed: int = 0, split: str = "train", count: int | None = None) -> ImageData:
    """`count` stacked images (default: DEFAULT_COUNT[split]) at image_size x image_size x 3."""
    if split not in DEFAULT_COUNT:
        raise ValueError(f"split must be train or test, not {split!r}")
    count = DEFAULT_COUNT[split] if count is None else count
    source = digits.load(image_size, split=split)  # n x S x S x 1, labels n
    assert source.labels is not None
    # Each channel picks a digit class uniformly, then an image of that class uniformly, so the
    # 1000 triples are equally likely (scikit-learn's classes are only roughly balanced).
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    labels = rng.integers(10, size=(count, 3))  # (N, 3): digits of R, G, B
    by_class = [np.flatnonzero(source.labels == d) for d in range(10)]
    index = np.empty((count, 3), dtype=np.int64)
    for d, members in enumerate(by_class):
        hit = labels == d
        index[hit] = members[rng.integers(len(members), size=int(hit.sum()))]
    images = source.images[index, :, :, 0]  # (N, 3, S, S)
    return ImageData(
        images=np.ascontiguousarray(images.transpose(0, 2, 3, 1)),  # (N, S, S, 3)
        labels=labels.astype(np.int64),
        attributes={channel: [str(d) for d in range(10)] for channel in CHANNELS},
    )
