"""On a CUDA machine: every model's train and sample jobs run through the embedded service, as a
GPU worker runs them (the worker picks `cuda` whenever torch sees a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.api.service import Service
from gantry.jobs.settings import Settings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

SHORT = {"steps": 3, "checkpoint_every": 3, "sample_every": 3}
# compile=graph: a capture after the warm-up steps (gantry.worker.gan.fast.WARMUP), then replays.
GRAPHED = {"steps": 6, "checkpoint_every": 6, "sample_every": 6}
RUNS = {
    "gan ring8, minibatch discrimination, lr_decay": (
        "gan",
        {"dataset": "ring8"},
        {"minibatch_discrimination": "true", "lr_decay": "linear"},
    ),
    "dcgan shapes, virtual batch norm, historical averaging, ema": (
        "dcgan",
        {"dataset": "shapes", "image_size": 16},
        {"virtual_batch_norm": "true", "historical_averaging": "0.1", "ema": "0.999", "ngf": "8", "ndf": "8"},
    ),
    "dcgan stacked-digits, minibatch discrimination, feature matching": (
        "dcgan",
        {"dataset": "stacked-digits", "image_size": 16},
        {"minibatch_discrimination": "true", "feature_matching": "true", "ngf": "8", "ndf": "8"},
    ),
    "text2img shapes, mode seeking, GAN-INT": (
        "text2img",
        {"dataset": "shapes", "image_size": 32},
        {"mode_seeking": "0.1", "gan_int": "true", "ngf": "8", "ndf": "8"},
    ),
    "text2img shapes, labels some captions leave free": (
        "text2img",
        {"dataset": "shapes", "image_size": 16},
        {"labels": "shape,colour,size", "ngf": "8", "ndf": "8"},
    ),
    "srresnet photos, lr_decay": (
        "srresnet",
        {"image_size": 32},
        {"blocks": "2", "channels": "16", "lr_decay": "linear"},
    ),
    "srgan photos": ("srgan", {"image_size": 32}, {"blocks": "2", "channels": "16"}),
}


@pytest.mark.parametrize("compile", ["auto", "graph"])
@pytest.mark.parametrize("name", list(RUNS))
def test_every_model_trains_and_samples_on_cuda(
    name: str, compile: str, settings: Settings, tmp_path: Path
) -> None:
    """With `compile=graph`, each model's step, with the options of its run, is captured and
    replayed: none falls back to eager steps (gantry.worker.gan.fast says when one would)."""
    model, fields, options = RUNS[name]
    svc = Service(settings)
    schedule = SHORT if compile == "auto" else GRAPHED
    train = svc.submit_train(model, options={**options, "compile": compile}, **schedule, **fields)
    svc.run_embedded(train)
    done = svc.get(train.id)
    assert done.state == "succeeded", done.error
    assert done.metrics and all(np.isfinite(v) for v in done.metrics.values())
    if compile == "graph":
        lines = [line.message for line in svc.logs(train.id)]
        assert any("the step runs as a CUDA graph" in line for line in lines), lines
        assert not any("could not be captured" in line for line in lines), lines

    extra: dict[str, object] = {}
    if model in ("srresnet", "srgan"):
        photo = tmp_path / "small.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(photo)
        extra["input"] = str(photo)
    if model == "text2img":
        extra["prompts"] = ["a small red circle"]
    sample = svc.submit_sample(train.id, count=4, seed=1, **extra)
    svc.run_embedded(sample)
    sampled = svc.get(sample.id)
    assert sampled.state == "succeeded", sampled.error
    assert any(a.key.endswith(".png") for a in sampled.artifacts)
