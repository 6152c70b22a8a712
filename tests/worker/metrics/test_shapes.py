"""sample_validity on hand-made image sets (real shapes, noise, a collapsed generator), and
interpolation_validity on a hand-made generator with blank walk ends, with the figure of what it
rejected; the walks report their progress and stop when the job is cancelled."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gantry.jobs.specs import DCGANTrainSpec
from gantry.worker.data import shapes
from gantry.worker.errors import Stopped
from gantry.worker.gan import figures
from gantry.worker.gan.latent import LatentDecoder
from gantry.worker.metrics import EvalContext, evaluate
from gantry.worker.metrics import shapes as shapes_metrics
from gantry.worker.metrics.shapes import validity
from gantry.worker.metrics.shapes_classifier import ShapesClassifier, attribute_classifier


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


class _BlankEnds(nn.Module):
    """A hand-made G for 8-frame walks: a real shape in every frame but the first and the last of each
    walk (a batch of frames), which are an empty background: as if the seeds' own samples were unclear
    and everything between them a clean shape."""

    def __init__(self, shape: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("shape", torch.tensor(shape, dtype=torch.float32).permute(2, 0, 1) / 127.5 - 1)
        self.unused = nn.Parameter(torch.zeros(()))  # so that G has a device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images = self.shape.expand(len(z), -1, -1, -1).clone()
        images[[0, -1]] = -1.0  # black, no shape
        return images


def _red(png: bytes) -> np.ndarray:
    """bool (H, W): the pixels of a figure drawn in its outline colour."""
    return (np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) == figures.MARK).all(-1)


@pytest.fixture
def blank_ends(
    classifier: ShapesClassifier, classifier_home: Path, monkeypatch: pytest.MonkeyPatch
) -> LatentDecoder:
    """Evaluations in this test read the hand-made `_BlankEnds` G, whatever their checkpoint."""
    monkeypatch.setenv("GANTRY_HOME", str(classifier_home))  # the classifier's cache, shared
    real = shapes.generate(16, seed=7, split="train", count=64).images
    shape = next(image for image in real if validity(image[None], classifier)["sample_validity"] == 1.0)
    gaussian = lambda n, generator: torch.randn((n, 4, 1, 1), generator=generator)  # noqa: E731
    decoder = LatentDecoder("dcgan", _BlankEnds(shape), (4, 1, 1), torch.device("cpu"), gaussian)
    monkeypatch.setattr(shapes_metrics, "load_decoder", lambda checkpoint, **_: decoder)
    return decoder


@pytest.mark.usefixtures("blank_ends")
def test_interpolation_validity_splits_the_walks_ends_from_the_frames_between() -> None:
    saved: dict[str, bytes] = {}
    ctx = EvalContext.local(b"", DCGANTrainSpec(image_size=16), step=1200)
    ctx.save = saved.__setitem__
    values = evaluate(["interpolation_validity"], ctx)
    assert values["interpolation_validity_ends"] == 0.0
    assert values["interpolation_validity_inner"] == 1.0
    assert values["interpolation_validity"] == pytest.approx(1 - 2 / shapes_metrics.FRAMES)

    # The figure of the walks: one row per walk, the blank ends (rejected) outlined, nothing else.
    assert list(saved) == ["interpolation-step-00001200.png"]
    red = _red(saved["interpolation-step-00001200.png"])
    cell = figures.MIN_CELL + figures.PADDING  # 16-pixel frames are scaled up to 48
    assert red.shape[0] == figures.PADDING + shapes_metrics.WALKS * cell
    columns = np.flatnonzero(red.any(0))
    width = red.shape[1]
    assert columns.min() < width - shapes_metrics.FRAMES * cell  # the first frame's outline
    assert columns.max() == width - 1  # the last frame's
    middle = red[:, width - (shapes_metrics.FRAMES - 1) * cell + 4 : width - cell - 4]
    assert not middle.any()  # the frames between were valid
    rows_outlined = np.flatnonzero(red.any(1))
    assert rows_outlined.min() == 0 and rows_outlined.max() == red.shape[0] - 1  # every walk


@pytest.mark.usefixtures("blank_ends")
def test_the_walks_report_each_walk_and_stop_when_the_job_is_cancelled() -> None:
    saved: dict[str, bytes] = {}
    ctx = EvalContext.local(b"", DCGANTrainSpec(image_size=16), step=1200)
    ctx.save = saved.__setitem__
    reports: list[tuple[int, int]] = []
    ctx.progress = lambda done, total: reports.append((done, total))
    ctx.should_stop = lambda: len(reports) >= 3  # cancelled while the third walk is read
    with pytest.raises(Stopped):
        evaluate(["interpolation_validity"], ctx)
    assert reports == [(1, shapes_metrics.WALKS), (2, shapes_metrics.WALKS), (3, shapes_metrics.WALKS)]
    assert saved == {}  # no figure of walks it did not finish


def test_figure_outlines_only_the_marked_images() -> None:
    image = np.full((16, 16, 3), 128, np.uint8)
    plain = figures.labelled_rows([("", [image] * 3)])
    marked = figures.labelled_rows([("", [image] * 3)], marked={(0, 1)})
    assert not _red(plain).any()
    red = _red(marked)
    columns = np.flatnonzero(red.any(0))
    cell = figures.MIN_CELL + figures.PADDING
    # Only around the second image: from the padding before it to the padding after it.
    assert (columns.min(), columns.max()) == (cell, 2 * cell + figures.PADDING - 1)
