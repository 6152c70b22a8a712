"""On a CUDA machine: the loop trains on the GPU and a checkpoint made there samples on the CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import ImageData
from gantry.worker.gan.loop import Callbacks, train
from gantry.worker.gan.sampler import sample

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_dcgan_trains_on_cuda_and_samples_anywhere(precision: str) -> None:
    spec = parse_train_spec(
        "dcgan", {"image_size": 32, "steps": 20, "checkpoint_every": 20}, {"precision": precision}
    )
    images = np.random.default_rng(0).integers(0, 256, size=(256, 32, 32, 3), dtype=np.uint8)
    seen: dict[str, float] = {}
    checkpoints: list[bytes] = []
    callbacks = Callbacks(
        progress=lambda step, m: seen.update(m),
        should_stop=lambda: False,
        checkpoint=lambda step, data: checkpoints.append(data),
        samples=lambda step, png: None,
    )
    outcome = train(spec, ImageData(images=images), callbacks=callbacks, device=torch.device("cuda"))
    assert outcome.step == 20 and all(math.isfinite(v) for v in seen.values())
    on_gpu = sample(checkpoints[-1], count=4, seed=1, device="cuda")
    on_cpu = sample(checkpoints[-1], count=4, seed=1, device="cpu")
    assert len(on_gpu.images) == len(on_cpu.images) == 4
