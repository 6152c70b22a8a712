from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gantry.jobs.specs import DCGANOptions, DCGANTrainSpec
from gantry.worker.data import ImageData
from gantry.worker.gan.checkpoint import generator_weights, load_checkpoint
from gantry.worker.gan.images import resident_images, scaled
from gantry.worker.gan.loop import Callbacks, cpu_has_bf16, images_to_tensor, train, update_average

METRICS = {"loss_D", "loss_G", "D_x", "D_G_z", "images_per_sec"}


def tiny_spec(options: dict[str, Any] | None = None, **fields: Any) -> DCGANTrainSpec:
    fields = {
        "image_size": 16,
        "batch_size": 8,
        "steps": 6,
        "checkpoint_every": 1000,
        "sample_every": 1000,
        **fields,
    }
    return DCGANTrainSpec(**fields, options=DCGANOptions(nz=16, ngf=8, ndf=8, **(options or {})))


def tiny_data(channels: int = 3) -> ImageData:
    rng = np.random.default_rng(0)
    return ImageData(images=rng.integers(0, 256, (24, 16, 16, channels), dtype=np.uint8))


@dataclass
class Recorder:
    """Callbacks that record what the loop hands out; `stop_at` makes should_stop True from that poll."""

    stop_at: int | None = None
    progress: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[tuple[int, bytes]] = field(default_factory=list)
    samples: list[tuple[int, bytes]] = field(default_factory=list)
    polls: int = 0

    def should_stop(self) -> bool:
        self.polls += 1
        return self.stop_at is not None and self.polls >= self.stop_at

    def callbacks(self) -> Callbacks:
        return Callbacks(
            progress=lambda step, metrics: self.progress.append((step, metrics)),
            should_stop=self.should_stop,
            checkpoint=lambda step, data: self.checkpoints.append((step, data)),
            samples=lambda step, png: self.samples.append((step, png)),
        )


def test_reports_metrics_checkpoints_and_grids_on_schedule() -> None:
    rec = Recorder()
    spec = tiny_spec(steps=7, checkpoint_every=5, sample_every=4)
    outcome = train(spec, tiny_data(), callbacks=rec.callbacks(), log_every=3)

    assert (outcome.step, outcome.stopped) == (7, False)
    assert [step for step, _ in rec.progress] == [3, 6, 7]
    for _, metrics in rec.progress:
        assert set(metrics) == METRICS
        assert all(math.isfinite(v) for v in metrics.values())
        assert 0 < metrics["D_x"] < 1 and 0 < metrics["D_G_z"] < 1
        assert metrics["images_per_sec"] > 0
    assert outcome.final_metrics == rec.progress[-1][1]
    assert [step for step, _ in rec.checkpoints] == [5, 7]
    assert [step for step, _ in rec.samples] == [4, 7]
    grid = Image.open(io.BytesIO(rec.samples[-1][1]))
    assert grid.size == (8 * 18 + 2, 8 * 18 + 2) and grid.mode == "RGB"  # 8 x 8 images, 2-pixel padding


def test_should_stop_checkpoints_at_that_step_and_returns() -> None:
    rec = Recorder(stop_at=3)
    outcome = train(tiny_spec(steps=50), tiny_data(), callbacks=rec.callbacks(), log_every=10)

    assert (outcome.step, outcome.stopped) == (3, True)
    assert [step for step, _ in rec.checkpoints] == [3]
    assert load_checkpoint(rec.checkpoints[0][1])["step"] == 3
    assert [step for step, _ in rec.progress] == [3]  # the partial window is reported on stop
    assert rec.samples == []


def test_checkpoint_is_plain_data_that_rebuilds_the_run() -> None:
    rec = Recorder()
    spec = tiny_spec(steps=2)
    train(spec, tiny_data(channels=1), callbacks=rec.callbacks())
    data = rec.checkpoints[-1][1]
    # weights_only: no pickled objects, so a checkpoint from storage cannot run code when loaded.
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["channels"] == 1
    assert state["spec"] == spec.model_dump(mode="json")
    assert state["fixed_z"].shape == (64, 16, 1, 1)


def _final_state(rec: Recorder) -> dict[str, Any]:
    return load_checkpoint(rec.checkpoints[-1][1])


# Spectral norm keeps state of its own (the power iteration's vectors), and InfoGAN's code head is
# a part of D with its own optimizer state: a resume must restore both.
@pytest.mark.parametrize(
    "options",
    [{}, {"d_norm": "spectral"}, {"latent_codes": (4, 3)}, {"precision": "bf16"}],
    ids=["default", "spectral-norm D", "latent codes", "bf16"],
)
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(options: dict[str, Any]) -> None:
    spec = tiny_spec(options, steps=6, sample_every=6)
    straight = Recorder()
    train(spec, tiny_data(), callbacks=straight.callbacks())

    first = Recorder(stop_at=3)
    assert train(spec, tiny_data(), callbacks=first.callbacks()).step == 3
    second = Recorder()
    outcome = train(spec, tiny_data(), callbacks=second.callbacks(), resume=first.checkpoints[-1][1])

    assert (outcome.step, outcome.stopped) == (6, False)
    assert [step for step, _ in second.progress] == [6]
    a, b = _final_state(straight), _final_state(second)
    for net in ("G", "D"):
        for name, tensor in a[net].items():
            assert torch.equal(tensor, b[net][name]), f"{net}.{name} differs after resume"
    for opt in ("opt_G", "opt_D"):
        for index, moments in a[opt]["state"].items():
            for name, tensor in moments.items():
                assert torch.equal(tensor, b[opt]["state"][index][name]), f"{opt} {index} {name} differs"
    assert straight.samples[-1] == second.samples[-1]  # the same grid PNG, byte for byte


# auto: bf16 on a CPU with native bfloat16 (this machine's AVX512-BF16), fp32 on one without.
AUTO = torch.bfloat16 if cpu_has_bf16() else torch.float32


@pytest.mark.parametrize(
    ("precision", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16), ("auto", AUTO)]
)
def test_precision_sets_the_dtype_of_the_convolutions_and_weights_stay_fp32(
    precision: str, dtype: torch.dtype
) -> None:
    conv_outputs: set[torch.dtype] = set()

    def record(module: torch.nn.Module, _: Any, output: Any) -> None:
        if isinstance(module, torch.nn.modules.conv._ConvNd) and module.training:  # not the grid's G
            conv_outputs.add(output.dtype)

    rec = Recorder()
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        train(tiny_spec({"precision": precision}, steps=3), tiny_data(), callbacks=rec.callbacks())
    finally:
        handle.remove()
    assert conv_outputs == {dtype}
    assert all(math.isfinite(rec.progress[-1][1][name]) for name in ("loss_D", "loss_G"))
    state = _final_state(rec)
    assert {tensor.dtype for tensor in state["G"].values() if tensor.is_floating_point()} == {torch.float32}
    grid = Image.open(io.BytesIO(rec.samples[-1][1]))
    colours = np.unique(np.asarray(grid).reshape(-1, 3), axis=0)
    assert grid.mode == "RGB" and len(colours) > 1  # a picture, not one colour


def test_resuming_a_finished_run_trains_no_further() -> None:
    done = Recorder()
    spec = tiny_spec(steps=2)
    train(spec, tiny_data(), callbacks=done.callbacks())
    again = Recorder()
    outcome = train(spec, tiny_data(), callbacks=again.callbacks(), resume=done.checkpoints[-1][1])
    assert (outcome.step, outcome.stopped) == (2, False)
    assert again.progress == [] and again.checkpoints == []
    assert [png for _, png in again.samples] == [done.samples[-1][1]]
    assert outcome.final_metrics == done.progress[-1][1]


def test_the_seed_fixes_the_run() -> None:
    grids = []
    for seed in (0, 0, 1):
        rec = Recorder()
        train(tiny_spec(steps=2, seed=seed), tiny_data(), callbacks=rec.callbacks())
        grids.append(rec.samples[-1][1])
    assert grids[0] == grids[1]
    assert grids[0] != grids[2]


def test_images_at_another_size_are_refused() -> None:
    with pytest.raises(ValueError, match="16x16"):
        train(tiny_spec(image_size=32), tiny_data(), callbacks=Recorder().callbacks())


def test_linear_lr_decay_holds_for_half_the_run_then_falls_and_survives_a_resume() -> None:
    options = DCGANOptions(nz=16, ngf=8, ndf=8, lr=1e-3, lr_decay="linear")
    spec = DCGANTrainSpec(
        image_size=16, batch_size=8, steps=8, checkpoint_every=2, sample_every=1000, options=options
    )
    straight = Recorder()
    train(spec, tiny_data(), callbacks=straight.callbacks())
    lr = {
        step: [load_checkpoint(data)[opt]["param_groups"][0]["lr"] for opt in ("opt_G", "opt_D")]
        for step, data in straight.checkpoints
    }
    # The lr of the last step before each checkpoint: steps 0-4 at full lr, then 2 x (8 - k) / 8.
    assert lr[2] == lr[4] == [pytest.approx(1e-3)] * 2
    assert lr[6] == [pytest.approx(1e-3 * 0.75)] * 2
    assert lr[8] == [pytest.approx(1e-3 * 0.25)] * 2

    first = Recorder(stop_at=5)  # stops at step 5, in the decaying half
    assert train(spec, tiny_data(), callbacks=first.callbacks()).step == 5
    second = Recorder()
    train(spec, tiny_data(), callbacks=second.callbacks(), resume=first.checkpoints[-1][1])
    a, b = _final_state(straight), _final_state(second)
    assert b["opt_G"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 0.25)
    for name, tensor in a["G"].items():
        assert torch.equal(tensor, b["G"][name]), f"G.{name} differs after a resume mid-decay"


def test_without_lr_decay_the_lr_stays_put() -> None:
    rec = Recorder()
    train(tiny_spec(steps=4, checkpoint_every=4), tiny_data(), callbacks=rec.callbacks())
    assert load_checkpoint(rec.checkpoints[-1][1])["opt_G"]["param_groups"][0]["lr"] == pytest.approx(2e-4)


def test_update_average_moves_parameters_by_one_minus_decay_and_copies_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
    before = [p.clone() for p in average.parameters()]
    update_average(average, model, 0.75)
    for old, new in zip(before, average.parameters(), strict=True):
        assert torch.allclose(new, old + 0.25)  # a quarter of the way to the model's weights
    assert torch.equal(average[1].running_mean, torch.full((2,), 3.0))


def test_ema_keeps_an_average_of_g_that_grids_and_resumes_use() -> None:
    options = DCGANOptions(nz=16, ngf=8, ndf=8, lr=1e-3, ema=0.9)
    spec = DCGANTrainSpec(
        image_size=16, batch_size=8, steps=8, checkpoint_every=4, sample_every=8, options=options
    )
    straight = Recorder()
    train(spec, tiny_data(), callbacks=straight.callbacks())
    state = _final_state(straight)
    assert state["G_ema"].keys() == state["G"].keys()
    weight = next(name for name in state["G"] if name.endswith("weight"))
    assert not torch.allclose(state["G_ema"][weight], state["G"][weight])  # an average, not a copy
    assert generator_weights(state) is state["G_ema"]

    # The grid is drawn by the average: the same run without it draws another grid.
    no_ema = spec.model_copy(update={"options": options.model_copy(update={"ema": 0.0})})
    without = Recorder()
    train(no_ema, tiny_data(), callbacks=without.callbacks())
    assert "G_ema" not in _final_state(without)
    assert torch.equal(_final_state(without)["G"][weight], state["G"][weight])  # G trains the same
    assert straight.samples[-1][1] != without.samples[-1][1]

    # A resume restores the average too: stopped at 4 + resumed = 8 straight.
    first = Recorder(stop_at=4)
    train(spec, tiny_data(), callbacks=first.callbacks())
    second = Recorder()
    train(spec, tiny_data(), callbacks=second.callbacks(), resume=first.checkpoints[-1][1])
    for name, tensor in state["G_ema"].items():
        assert torch.equal(tensor, _final_state(second)["G_ema"][name]), (
            f"G_ema.{name} differs after a resume"
        )


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_training_images_stay_uint8_and_a_batch_is_scaled_as_a_float_copy_would_be(
    channels_last: bool,
) -> None:
    # Kept on the device as uint8 (a quarter of float's memory); a drawn minibatch is the very
    # values, and the layout, of the float images the loop once kept.
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    kept = resident_images(images, torch.device("cpu"), channels_last=channels_last)
    assert kept.dtype == torch.uint8 and kept.shape == (12, 3, 8, 8)
    index = torch.tensor([3, 0, 11, 3])
    batch = scaled(kept[index])
    as_floats = images_to_tensor(images, torch.device("cpu"))
    assert torch.equal(batch, as_floats[index]) and batch.min() >= -1 and batch.max() <= 1
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert batch.is_contiguous(memory_format=layout)
