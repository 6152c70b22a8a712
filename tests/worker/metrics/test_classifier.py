"""The metrics that need no pretrained network (gantry.worker.metrics.classifier), on `digits` at 8x8:
a "generator" that hands back real images of the asked-for class scores like real data, noise like
chance; real against real is a Fréchet distance near 0, noise a large one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import parse_train_spec
from gantry.jobs.storage import FileStore
from gantry.worker.metrics import EvalContext, evaluate
from gantry.worker.metrics import label_classifier as lc
from gantry.worker.metrics.cache import Cache
from gantry.worker.metrics.classifier import (
    LabelledData,
    frechet_distance,
    labelled_data,
    real_classifier,
    trained_on,
)

CPU = torch.device("cpu")
pytestmark = pytest.mark.slow  # each test trains a classifier or two: seconds each


@pytest.fixture(scope="module")
def digits() -> LabelledData:
    spec = parse_train_spec("gan", {"dataset": "digits", "image_size": 8}, {})
    return labelled_data(EvalContext.local(b"", spec, step=0))


@pytest.fixture(scope="module")
def real(digits: LabelledData) -> tuple[lc.LabelClassifier, list[float]]:
    spec = parse_train_spec("gan", {"dataset": "digits", "image_size": 8}, {})
    return real_classifier(EvalContext.local(b"", spec, step=0), digits)


def _of_classes(data: LabelledData, wanted: np.ndarray, seed: int = 1) -> np.ndarray:
    """A 'generator' that draws a real train image of each class asked for."""
    rng = np.random.default_rng(seed)
    labels = data.train_labels[:, 0]
    return data.train_images[[rng.choice(np.flatnonzero(labels == k)) for k in wanted]]


def _noise(count: int, side: int = 8) -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (count, side, side, 1), dtype=np.uint8)


def test_the_held_out_split_is_the_data_sets_test_split(digits: LabelledData) -> None:
    assert (len(digits.train_images), len(digits.test_images)) == (1438, 359)
    assert digits.attributes == ("digit",) and digits.sizes == (10,)


def test_cas_is_near_real_accuracy_for_real_images_and_chance_for_noise(
    digits: LabelledData, real: tuple[lc.LabelClassifier, list[float]]
) -> None:
    _, accuracy = real
    assert accuracy[0] > 0.9  # the real-data classifier: the ceiling
    asked = np.random.default_rng(0).integers(0, 10, 2000)[:, None]
    as_real = trained_on(_of_classes(digits, asked[:, 0]), asked, digits, [0], device=CPU)
    on_noise = trained_on(_noise(2000), asked, digits, [0], device=CPU)
    assert as_real > accuracy[0] - 0.05
    assert on_noise < 0.2  # chance: 0.1
    # Deterministic: the same samples give the same score.
    assert trained_on(_of_classes(digits, asked[:, 0]), asked, digits, [0], device=CPU) == as_real


def test_gan_test_reads_real_images_of_the_class_and_not_noise(
    digits: LabelledData, real: tuple[lc.LabelClassifier, list[float]]
) -> None:
    classifier, accuracy = real
    asked = np.random.default_rng(0).integers(0, 10, 1000)
    assert classifier.accuracy(_of_classes(digits, asked), asked) > accuracy[0] - 0.05
    assert classifier.accuracy(_noise(1000), asked) < 0.25
    # Labels other than the ones the images show: what a G that ignores its label scores.
    assert classifier.accuracy(_of_classes(digits, asked), (asked + 1) % 10) < 0.1


def test_fd_classifier_is_near_zero_for_real_images_and_large_for_noise(
    digits: LabelledData, real: tuple[lc.LabelClassifier, list[float]]
) -> None:
    classifier, _ = real
    held_out = classifier.features(digits.test_images)
    real_vs_real = frechet_distance(held_out, classifier.features(digits.train_images))
    real_vs_noise = frechet_distance(held_out, classifier.features(_noise(1000)))
    assert real_vs_real < 0.05 * real_vs_noise
    assert frechet_distance(held_out, held_out) == pytest.approx(0.0, abs=1e-6)


def test_the_real_classifier_is_cached_by_the_datas_content(tmp_path: Path, digits: LabelledData) -> None:
    store = FileStore(tmp_path)
    spec = parse_train_spec("gan", {"dataset": "digits", "image_size": 8}, {})
    ctx = EvalContext.local(b"", spec, step=0)
    ctx.cache = Cache.of_store(store)
    first, accuracy = real_classifier(ctx, digits)
    assert [k for k in store.list("cache/") if k.startswith("cache/label-classifier-")]

    def refuse(key: str, data: bytes) -> None:
        raise AssertionError("trained again instead of reading the cache")

    ctx.cache = Cache(get_bytes=store.get_bytes, put_bytes=refuse)
    again, accuracy_again = real_classifier(ctx, digits)
    assert accuracy_again == accuracy
    assert (again.predict(digits.test_images) == first.predict(digits.test_images)).all()


def test_user_data_holds_out_a_fixed_fifth_and_without_labels_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 16, 16, 3), dtype=np.uint8)
    np.savez(tmp_path / "labelled.npz", images=images, labels=np.arange(50) % 3)
    np.savez(tmp_path / "plain.npz", images=images)
    spec = parse_train_spec("gan", {"dataset": str(tmp_path / "labelled.npz"), "image_size": 16}, {})
    split = labelled_data(EvalContext.local(b"", spec, step=0))
    assert (len(split.train_images), len(split.test_images)) == (40, 10) and split.sizes == (3,)
    assert (
        labelled_data(EvalContext.local(b"", spec, step=0)).test_labels.tolist() == split.test_labels.tolist()
    )
    plain = parse_train_spec("gan", {"dataset": str(tmp_path / "plain.npz"), "image_size": 16}, {})
    with pytest.raises(InvalidInput) as info:
        labelled_data(EvalContext.local(b"", plain, step=0))
    assert info.value.field == "dataset" and "labels" in info.value.message


def test_a_conditional_dcgan_checkpoint_gets_every_score(tmp_path: Path) -> None:
    """The evaluators on a real (barely trained) checkpoint: each value in its range, cas = gan_train."""
    from gantry.worker.gan.loop import Callbacks, train

    spec = parse_train_spec(
        "dcgan",
        {"dataset": "digits", "image_size": 16, "steps": 2, "batch_size": 8, "checkpoint_every": 2},
        {"labels": "digit", "ngf": "8", "ndf": "8", "nz": "8"},
    )
    written: dict[int, bytes] = {}
    callbacks = Callbacks(
        progress=lambda step, m: None,
        should_stop=lambda: False,
        checkpoint=lambda step, data: written.__setitem__(step, data),
        samples=lambda step, png: None,
    )
    data: Any = labelled_data(EvalContext.local(b"", spec, step=0))  # only to check the split loads
    assert data.sizes == (10,)
    from gantry.worker.data import load_dataset

    train(spec, load_dataset("digits", image_size=16, split="train"), callbacks=callbacks, device="cpu")
    ctx = EvalContext.local(written[2], spec, step=2)
    ctx.samples = 500
    values = evaluate(["cas", "gan_train", "gan_test", "fd_classifier"], ctx)
    assert values["cas"] == values["gan_train"]
    for name in ("cas", "gan_test", "real_classifier_accuracy"):
        assert 0.0 <= values[name] <= 1.0
    assert values["real_classifier_accuracy"] > 0.9
    assert values["fd_classifier"] > 0.0
    # The samples' labels follow the real labels' proportions (a prior of one class: all of it).
    from gantry.worker.metrics.classifier import conditional_samples

    images, labels = conditional_samples(ctx, 300, np.full((5, 1), 7))
    assert images.shape[0] == 300 and labels.tolist() == [[7]] * 300
    skewed = np.array([[3]] * 90 + [[5]] * 10)
    _, labels = conditional_samples(ctx, 2000, skewed)
    assert 0.85 < float(np.mean(labels == 3)) < 0.95


def test_accuracy_gives_no_credit_for_always_naming_the_commonest_class() -> None:
    truth = np.array([[0]] * 90 + [[1]] * 10)
    always_zero = np.zeros_like(truth)
    assert lc.balanced_accuracy(always_zero, truth) == [0.5]  # plain accuracy: 0.9
    assert lc.balanced_accuracy(truth, truth) == [1.0]
    balanced = np.array([[0]] * 50 + [[1]] * 50)
    half_right = np.array([[0]] * 50 + [[0]] * 25 + [[1]] * 25)
    assert lc.balanced_accuracy(half_right, balanced) == [0.75]  # equal classes: the plain share
