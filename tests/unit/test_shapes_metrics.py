"""sample_validity on hand-made image sets: real shapes, noise, and a collapsed generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gantry.worker.data import shapes
from gantry.worker.gan.shapes_classifier import ShapesClassifier, attribute_classifier
from gantry.worker.gan.shapes_metrics import validity


@pytest.fixture(scope="module")
def classifier(classifier_home: Path) -> ShapesClassifier:
    return attribute_classifier(16, cache_dir=classifier_home / "cache")  # where evaluations look


def test_real_shapes_are_valid_and_cover_every_training_pair(classifier: ShapesClassifier) -> None:
    real = shapes.generate(16, seed=7, split="train", count=1024).images
    values = validity(real, classifier)
    assert values["sample_validity"] > 0.9
    assert values["pair_coverage"] == 1.0


def test_noise_and_empty_backgrounds_are_not_shapes(classifier: ShapesClassifier) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 16, 16, 3), dtype=np.uint8)
    empty = np.zeros((256, 16, 16, 3), np.uint8)
    assert validity(noise, classifier)["sample_validity"] < 0.2
    assert validity(empty, classifier)["sample_validity"] < 0.2


def test_a_collapsed_generator_is_valid_but_covers_one_pair(classifier: ShapesClassifier) -> None:
    one = shapes.generate(16, seed=7, split="train", count=64).images[:1]
    values = validity(np.repeat(one, 256, axis=0), classifier)
    assert values["sample_validity"] == 1.0
    assert values["pair_coverage"] == pytest.approx(1 / 28)
