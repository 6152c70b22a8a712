"""PacGAN's mode-collapse metrics on hand-made samples, the digit classifier that reads stacked
digits, the registry, and an evaluation of a stacked-digits checkpoint that reports and stops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gantry.jobs.specs import load_train_spec, parse_train_spec
from gantry.worker.data import load_dataset
from gantry.worker.data.points import grid25, ring8
from gantry.worker.errors import Stopped
from gantry.worker.gan.checkpoint import load_checkpoint
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.metrics import EVALUATORS, EvalContext, evaluate
from gantry.worker.metrics.digits import digit_classifier
from gantry.worker.metrics.modes import CHUNK, STACKED_SAMPLES, point_metrics, stacked_metrics

# --- metrics on hand-made samples ----------------------------------------------------------------------


def test_2d_metrics_all_points_on_one_mode() -> None:
    ring = ring8()
    points = ring.means[3] + 0.005 * np.random.default_rng(0).standard_normal((2500, 2))
    values = point_metrics(points, ring)
    assert values["modes"] == 1 and values["high_quality"] == 1.0
    assert values["reverse_kl"] == pytest.approx(math.log(8))


def test_2d_metrics_uniform_over_all_modes() -> None:
    grid = grid25()
    points = np.repeat(grid.means, 100, axis=0) + 0.01 * np.random.default_rng(0).standard_normal((2500, 2))
    assert point_metrics(points, grid) == pytest.approx({"modes": 25, "high_quality": 1.0, "reverse_kl": 0.0})


def test_2d_metrics_points_off_every_mode() -> None:
    ring = ring8()
    points = np.zeros((2500, 2))  # the ring's centre: 1 away from every mode, far beyond 3 std
    values = point_metrics(points, ring)
    assert values["modes"] == 0 and values["high_quality"] == 0.0
    assert values["reverse_kl"] == pytest.approx(math.log(8))


def test_2d_metrics_count_only_high_quality_samples() -> None:
    ring = ring8()
    on_modes = np.repeat(ring.means[:4], 500, axis=0)  # 4 modes, evenly
    between = np.tile([[0.5, 0.5]], (500, 1))  # near no mode
    values = point_metrics(np.concatenate([on_modes, between]), ring)
    assert values["modes"] == 4 and values["high_quality"] == pytest.approx(0.8)
    assert values["reverse_kl"] == pytest.approx(math.log(2))  # uniform over half of the modes


def test_stacked_metrics_one_mode_and_all_modes() -> None:
    one = stacked_metrics(np.tile([[3, 1, 4]], (26_000, 1)))
    assert one == pytest.approx({"modes": 1, "kl_uniform": math.log(1000)})
    every = np.array([[i // 100, i // 10 % 10, i % 10] for i in range(1000)] * 26)
    assert stacked_metrics(every) == pytest.approx({"modes": 1000, "kl_uniform": 0.0})


def test_digit_classifier_held_out_accuracy() -> None:
    classifier = digit_classifier(32)
    assert classifier.accuracy >= 0.97
    assert digit_classifier(32) is classifier  # cached: trained once per process and size


def test_metrics_are_registered_for_evaluate_and_the_end_of_training() -> None:
    assert set(EVALUATORS) >= {"modes_2d", "modes_stacked"}
    assert "modes_2d" in parse_train_spec("gan", {"dataset": "ring8"}, {}).metric_names(auto=True)
    stacked = parse_train_spec("dcgan", {"dataset": "stacked-digits"}, {})
    assert "modes_stacked" in stacked.metric_names(auto=True)
    assert "modes_2d" not in parse_train_spec("gan", {"dataset": "digits"}, {}).metric_names()


# --- an evaluation that reports its progress and honours a stop --------------------------------------


@pytest.fixture(scope="module")
def stacked_checkpoint() -> bytes:
    """A dcgan on stacked-digits at 16 px after one step: what it draws does not matter here."""
    spec = parse_train_spec(
        "dcgan",
        {"dataset": "stacked-digits", "image_size": 16, "steps": 1, "batch_size": 8, "sample_every": 10**6},
        {"ngf": "8", "ndf": "8"},
    )
    out: list[bytes] = []
    callbacks = Callbacks(
        lambda *a: None, lambda: False, lambda step, data: out.append(data), lambda *a: None
    )
    train(spec, load_dataset("stacked-digits", image_size=16, seed=0), callbacks=callbacks, device="cpu")
    return out[-1]


def test_a_stacked_evaluation_reports_each_chunk_and_stops_when_asked(stacked_checkpoint: bytes) -> None:
    spec = load_train_spec(load_checkpoint(stacked_checkpoint)["spec"])
    ctx = EvalContext.local(stacked_checkpoint, spec, step=1)
    reports: list[tuple[int, int]] = []
    ctx.progress = lambda done, total: reports.append((done, total))
    ctx.should_stop = lambda: len(reports) >= 2  # a cancel lands during the second chunk
    with pytest.raises(Stopped):
        evaluate(["modes_stacked"], ctx)
    # It ended at the first check after the cancel, not after all 26,000 samples.
    assert reports == [(CHUNK, STACKED_SAMPLES), (2 * CHUNK, STACKED_SAMPLES)]
