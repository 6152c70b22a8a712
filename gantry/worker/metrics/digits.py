"""The digit classifier that reads stacked-digits samples channel by channel.

PacGAN (arXiv 1712.04086, Table 2) counts stacked-MNIST modes with a pretrained MNIST classifier;
gantry has no network access, so it trains its own on scikit-learn's digits: an RBF support vector
machine (the classic scikit-learn digits classifier) on the 8x8 block means of each channel. It
trains in a fraction of a second, deterministically, on the `digits` train split at the requested
image size (the same upscaling that made the stacked images), and its accuracy on the held-out
test split is reported with every metric it produces. One per image size, cached in-process.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SIDE = 8  # the classifier's input: 8x8 block means, scikit-learn's own resolution


def block_features(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S) with S a multiple of 8 -> float (N, 64): means over S/8 x S/8 blocks, in [0, 1]."""
    n, h, w = images.shape
    if h % SIDE or w % SIDE:
        raise ValueError(f"image sides must be multiples of {SIDE}, got {h}x{w}")
    blocks = images.reshape(n, SIDE, h // SIDE, SIDE, w // SIDE).astype(np.float32)
    return blocks.mean(axis=(2, 4)).reshape(n, SIDE * SIDE) / 255.0


@dataclass(frozen=True)
class DigitClassifier:
    svm: Any  # sklearn.svm.SVC
    image_size: int
    accuracy: float  # on the held-out `digits` test split

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S) single-channel digits -> int64 (N,) predicted digits."""
        return self.svm.predict(block_features(images)).astype(np.int64)


@functools.lru_cache(maxsize=4)
def digit_classifier(image_size: int) -> DigitClassifier:
    """Train (once per process and size) on `digits` train; measure on `digits` test."""
    from sklearn.svm import SVC  # imported here: scikit-learn takes seconds to import

    from gantry.worker.data import digits

    train = digits.load(image_size, split="train")
    test = digits.load(image_size, split="test")
    # C=10 with the default gamma="scale": ~98% held-out on the 8x8 digits; no randomness involved.
    svm = SVC(C=10.0, gamma="scale").fit(block_features(train.images[..., 0]), train.labels)
    classifier = DigitClassifier(svm=svm, image_size=image_size, accuracy=0.0)
    accuracy = float((classifier.predict(test.images[..., 0]) == test.labels).mean())
    log.info("digit classifier at %dx%d: held-out accuracy %.4f", image_size, image_size, accuracy)
    return DigitClassifier(svm=svm, image_size=image_size, accuracy=accuracy)
