"""A short CPU training of text2img on `shapes`: after about a minute, G already draws the colour the
prompt asks for far more often than chance (1 in 8), read by the attribute classifier."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from gantry.jobs.specs import Text2ImgOptions, Text2ImgTrainSpec
from gantry.worker.data import load_dataset
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.metrics import EvalContext, evaluate


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """One thread: the run's numbers do not depend on the machine's core count (and the CPU is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_text2img_learns_colours_in_a_minute(classifier_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANTRY_HOME", str(classifier_home))  # the classifier's cache, shared
    spec = Text2ImgTrainSpec(
        image_size=16,
        batch_size=32,
        steps=2500,  # about a minute on one idle core
        checkpoint_every=10**6,
        sample_every=10**6,
        options=Text2ImgOptions(nz=32, ngf=16, ndf=16, embed_dim=32, vocab_size=128, lr=1e-3),
    )
    data = load_dataset("shapes", image_size=16, seed=0)
    checkpoints: list[bytes] = []
    started = time.perf_counter()
    callbacks = Callbacks(
        lambda *a: None, lambda: False, lambda step, b: checkpoints.append(b), lambda *a: None
    )
    train(spec, data, callbacks=callbacks, device="cpu")
    seconds = time.perf_counter() - started
    values = evaluate(["caption_faithfulness"], EvalContext.local(checkpoints[-1], spec, step=spec.steps))
    # The classifier reads colour perfectly at 16 px (shape is harder there: small shapes are 4 px).
    assert values["shapes_classifier_accuracy"] > 0.5
    # Chance is 1 in 8; this run measured 0.42 (2026-11-26). Twice chance is "clearly above".
    assert values["colour_faithfulness"] > 0.25, (values, seconds)
