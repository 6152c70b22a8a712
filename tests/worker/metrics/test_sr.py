"""`psnr` and `ssim`: one pass over the validation photos when both are asked, each the same values
as when asked alone; the pass reports every photo and stops when the job is cancelled."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gantry.jobs.specs import load_train_spec, parse_train_spec
from gantry.worker.data import load_dataset
from gantry.worker.data.photos import VALIDATION
from gantry.worker.errors import Stopped
from gantry.worker.gan.checkpoint import load_checkpoint
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.metrics import EvalContext, evaluate, sr


@pytest.fixture(scope="module")
def tiny_checkpoint() -> bytes:
    """An srresnet at 2x, 2 blocks x 8 channels, after 2 steps on 16-pixel crops."""
    spec = parse_train_spec(
        "srresnet",
        {"image_size": 16, "batch_size": 2, "steps": 2, "checkpoint_every": 10**6, "sample_every": 10**6},
        {"blocks": 2, "channels": 8, "scale": 2},
    )
    out: list[bytes] = []
    callbacks = Callbacks(
        lambda *a: None, lambda: False, lambda step, data: out.append(data), lambda *a: None
    )
    data = load_dataset("photos", image_size=spec.image_size, full_size=True)
    train(spec, data, callbacks=callbacks, device="cpu")
    return out[-1]


@pytest.fixture
def super_resolved(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shape of every image the SR metrics super-resolve, in order."""
    calls: list[tuple[int, ...]] = []
    real = sr.super_resolve

    def spy(G: Any, image: np.ndarray, **kwargs: Any) -> np.ndarray:
        calls.append(image.shape)
        return real(G, image, **kwargs)

    monkeypatch.setattr(sr, "super_resolve", spy)
    return calls


def _context(checkpoint: bytes) -> EvalContext:
    return EvalContext.local(checkpoint, load_train_spec(load_checkpoint(checkpoint)["spec"]), step=2)


def test_psnr_and_ssim_together_are_one_pass_with_the_values_of_each_alone(
    tiny_checkpoint: bytes, super_resolved: list[tuple[int, ...]]
) -> None:
    psnr = evaluate(["psnr"], _context(tiny_checkpoint))
    ssim = evaluate(["ssim"], _context(tiny_checkpoint))
    assert set(psnr) == {"psnr", "psnr_bicubic"} and set(ssim) == {"ssim", "ssim_bicubic"}
    assert len(super_resolved) == 2 * len(VALIDATION)  # one pass each
    one_pass = super_resolved[: len(VALIDATION)]

    super_resolved.clear()
    both = evaluate(["psnr", "ssim"], _context(tiny_checkpoint))
    assert both == {**psnr, **ssim}  # exactly, not approximately
    assert super_resolved == one_pass  # every validation photo once


def test_the_pass_reports_every_photo_and_stops_when_the_job_is_cancelled(
    tiny_checkpoint: bytes, super_resolved: list[tuple[int, ...]]
) -> None:
    ctx = _context(tiny_checkpoint)
    reports: list[tuple[int, int]] = []
    ctx.progress = lambda done, total: reports.append((done, total))
    assert set(evaluate(["ssim"], ctx)) == {"ssim", "ssim_bicubic"}
    assert reports == [(i + 1, len(VALIDATION)) for i in range(len(VALIDATION))]

    reports.clear()
    super_resolved.clear()
    ctx.should_stop = lambda: bool(reports)  # cancelled while the first photo was super-resolved
    with pytest.raises(Stopped):
        evaluate(["psnr", "ssim"], ctx)
    assert reports == [(1, len(VALIDATION))] and len(super_resolved) == 1
