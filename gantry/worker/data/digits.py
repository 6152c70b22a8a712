"""The built-in `digits` data set: scikit-learn's 1,797 handwritten digits (8x8, ink 0..16), upscaled.

Pixels are rescaled to uint8 0..255 (white ink on black) and resized with Pillow's bicubic filter to the
requested size; 1 channel; labels are the digits 0..9.

Split: a fixed, stratified 80/20 split (20% of each digit, chosen with `SPLIT_SEED`), the same for
every job whatever its seed, so a model evaluated on `test` has never trained on those digits.
Train has 1,438 images and test 359, each in scikit-learn's order.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image

from gantry.worker.data.base import ImageData

TEST_FRACTION: Final = 0.2
SPLIT_SEED: Final = 0


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Sorted indices of `split`: for each digit, a fixed random TEST_FRACTION of its images is test."""
    rng = np.random.default_rng(SPLIT_SEED)
    is_test = np.zeros(len(labels), dtype=bool)
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        is_test[rng.permutation(idx)[: round(TEST_FRACTION * len(idx))]] = True
    if split == "test":
        return np.flatnonzero(is_test)
    if split == "train":
        return np.flatnonzero(~is_test)
    raise ValueError(f"split must be train or test, not {split!r}")


def load(image_size: int, *, seed: int = 0, split: str = "train") -> ImageData:
    """The digits of `split` at image_size x image_size x 1. `seed` does not change anything (the split is
    fixed); it is accepted so that every built-in data set loads the same way."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes seconds to import

    bunch = load_digits()
    labels = bunch.target.astype(np.int64)
    idx = split_indices(labels, split)
    small = np.rint(bunch.images[idx] * (255.0 / 16.0)).astype(np.uint8)  # n x 8 x 8, 0..255
    if image_size == small.shape[1]:
        images = small
    else:
        size = (image_size, image_size)
        images = np.stack(
            [np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BICUBIC)) for im in small]
        )
    return ImageData(images=images[..., None], labels=labels[idx])
