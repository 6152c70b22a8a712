"""Mode collapse: the 2-D and stacked-digits data sets, the MLP GAN's 2-D sample files, and one real
training run that must cover ring8 (PacGAN's metrics themselves: tests/worker/metrics/test_modes.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import load_dataset
from gantry.worker.data.points import PointData, grid25, ring8
from gantry.worker.data.stacked import generate as stacked_digits
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.sampler import sample
from gantry.worker.metrics.digits import digit_classifier
from gantry.worker.metrics.modes import point_metrics, points_metrics_from_checkpoint

# --- data sets -----------------------------------------------------------------------------------------


def test_ring8_and_grid25_follow_pacgans_layouts() -> None:
    ring, grid = ring8(), grid25()
    np.testing.assert_allclose(np.linalg.norm(ring.means, axis=1), 1.0)
    np.testing.assert_allclose(ring.std**2, 1e-4)
    assert sorted(map(tuple, grid.means)) == [
        (-4.0 + 2 * i, -4.0 + 2 * j) for i in range(5) for j in range(5)
    ]
    np.testing.assert_allclose(grid.std**2, 0.0025)
    data = load_dataset("ring8", image_size=32, seed=3)
    assert isinstance(data, PointData) and data.points.shape == (100_000, 2) and data.channels == 2
    # Points lie around the mode they were drawn from, with the layout's spread.
    offsets = data.points - ring.means[data.labels]
    assert abs(offsets.std() - 0.01) < 0.001
    assert np.bincount(data.labels).min() > 100_000 / 8 * 0.95
    np.testing.assert_array_equal(load_dataset("ring8", image_size=8, seed=3).points, data.points)
    assert not np.array_equal(load_dataset("ring8", image_size=8, seed=4).points, data.points)


def test_stacked_digits_channels_are_the_labelled_digits() -> None:
    data = stacked_digits(16, seed=1, count=600, split="test")
    assert data.images.shape == (600, 16, 16, 3) and data.labels is not None and data.labels.shape == (600, 3)
    assert data.attributes is not None and list(data.attributes) == ["red", "green", "blue"]
    # The three channels are independent: many different triples even in a small sample.
    assert len({tuple(row) for row in data.labels}) > 400
    classifier = digit_classifier(16)
    channels = data.images.transpose(0, 3, 1, 2).reshape(-1, 16, 16)
    agreement = (classifier.predict(channels) == data.labels.reshape(-1)).mean()
    assert agreement >= 0.97


# --- one real training run (the CI test of the issue) ----------------------------------------------------

# MLP GAN + minibatch discrimination on ring8, the fixed seed, the CPU: the configuration of
# bench/mode_collapse.py (10 kernels rather than the paper's 100, for CPU time).
CI_RUN = {
    "dataset": "ring8",
    "steps": 2000,
    "batch_size": 128,
    "seed": 0,
    "checkpoint_every": 10_000,
    "sample_every": 10_000,
}
CI_OPTIONS = {"minibatch_discrimination": "true", "mbd_kernels": "10"}


@pytest.fixture(scope="module")
def ring8_run() -> dict[str, object]:
    torch.set_num_threads(1)  # deterministic and fair on a shared CI machine
    spec = parse_train_spec("gan", CI_RUN, CI_OPTIONS)
    checkpoints: list[bytes] = []
    samples: list[bytes] = []
    train(
        spec,
        load_dataset("ring8", image_size=spec.image_size, seed=spec.seed),
        callbacks=Callbacks(
            progress=lambda step, metrics: None,
            should_stop=lambda: False,
            checkpoint=lambda step, data: checkpoints.append(data),
            samples=lambda step, png: samples.append(png),
        ),
        device="cpu",
    )
    return {"checkpoint": checkpoints[-1], "samples": samples}


@pytest.mark.slow
def test_mlp_gan_with_minibatch_discrimination_covers_ring8(ring8_run: dict[str, object]) -> None:
    values = points_metrics_from_checkpoint(ring8_run["checkpoint"], seed=0)  # type: ignore[arg-type]
    assert values["modes"] >= 7, values
    assert values["high_quality"] >= 0.80, values


@pytest.mark.slow
def test_2d_sample_job_writes_points_and_a_scatter_plot(ring8_run: dict[str, object]) -> None:
    result = sample(ring8_run["checkpoint"], count=2500, seed=5, device="cpu")  # type: ignore[arg-type]
    points = np.load(io.BytesIO(result.extra["points.npy"]))
    assert points.dtype == np.float32 and points.shape == (2500, 2)
    assert point_metrics(points, ring8())["modes"] >= 7  # the same G as the metrics saw
    scatter = Image.open(io.BytesIO(result.extra["scatter.png"]))
    assert scatter.size == (512, 512) and result.grid == result.extra["scatter.png"] and result.images == []
    # True modes are marked in red, samples in blue.
    pixels = np.asarray(scatter.convert("RGB")).reshape(-1, 3)
    assert ((pixels == (214, 39, 40)).all(1)).sum() > 100 and ((pixels == (31, 119, 180)).all(1)).sum() > 100
    # The fixed-noise samples written during training are scatter plots too.
    assert Image.open(io.BytesIO(ring8_run["samples"][-1])).size == (512, 512)  # type: ignore[index]
    # Same seed, same points.
    again = sample(ring8_run["checkpoint"], count=2500, seed=5, device="cpu")  # type: ignore[arg-type]
    assert again.extra["points.npy"] == result.extra["points.npy"]
