"""Non-finite losses (`on_nonfinite`): found within a log interval, never checkpointed, and either rolled
back to the last good checkpoint with the lr halved (at most MAX_ROLLBACKS times) or failed at once."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from gantry.api.service import Service
from gantry.jobs.settings import Settings
from gantry.jobs.specs import MODELS, load_train_spec, parse_train_spec
from gantry.worker.gan import loop
from gantry.worker.gan.checkpoint import load_checkpoint
from gantry.worker.gan.loop import MAX_ROLLBACKS, TrainingDiverged, train
from tests.worker.gan.test_loop import Recorder, tiny_data, tiny_spec

LR = 2e-4  # DCGAN's default lr


def poison(
    monkeypatch: pytest.MonkeyPatch, when: Callable[[int], bool], *, phase: str = "D", stats: bool = True
) -> None:
    """Make the models the loop builds diverge at the steps `when(n)` picks (n counts the phase's steps
    from 1, replays after a rollback included): the phase's network's gradients become nan, so its
    weights do after the optimizer step, and (`stats`) so does that step's loss."""
    real_build = loop.build_model

    def build(spec: Any, **kwargs: Any) -> Any:
        model = real_build(spec, **kwargs)
        accumulate, calls = model.loss.accumulate_gradients, itertools.count(1)

        def accumulate_poisoned(step_phase: str, batch: Any) -> dict[str, torch.Tensor]:
            out = accumulate(step_phase, batch)
            if step_phase == phase and when(next(calls)):
                for p in (model.D if phase == "D" else model.G).parameters():
                    p.grad.fill_(math.nan)
                if stats:
                    out[f"loss_{phase}"] = out[f"loss_{phase}"] * math.nan
            return out

        model.loss.accumulate_gradients = accumulate_poisoned
        return model

    monkeypatch.setattr(loop, "build_model", build)


def lrs(checkpoint: bytes) -> list[float]:
    state = load_checkpoint(checkpoint)
    return [group["lr"] for opt in ("opt_G", "opt_D") for group in state[opt]["param_groups"]]


def assert_all_finite(rec: Recorder) -> None:
    """No checkpoint the run handed out holds a non-finite weight, and no reported metric is."""
    for step, data in rec.checkpoints:
        state = load_checkpoint(data)
        for net in ("G", "D"):
            for name, tensor in state[net].items():
                if tensor.is_floating_point():
                    assert torch.isfinite(tensor).all(), f"checkpoint {step}: {net}.{name} is not finite"
    for step, metrics in rec.progress:
        assert all(math.isfinite(v) for v in metrics.values()), f"step {step} reported {metrics}"


def test_a_nan_loss_rolls_back_to_the_last_checkpoint_with_the_lr_halved(monkeypatch, caplog) -> None:
    poison(monkeypatch, lambda n: n == 6)
    rec = Recorder()
    caplog.set_level("WARNING")
    spec = tiny_spec(steps=12, checkpoint_every=4)
    outcome = train(spec, tiny_data(), callbacks=rec.callbacks(), log_every=3)

    assert (outcome.step, outcome.stopped) == (12, False)
    # Found at the report of step 6 (not reported: nan), rolled back to step 4, and on to the end.
    assert [step for step, _ in rec.progress] == [3, 4, 6, 9, 12]
    assert rec.progress[1] == (4, {"rollbacks": 1.0})
    assert [m.get("rollbacks") for _, m in rec.progress] == [None, 1.0, 1.0, 1.0, 1.0]
    assert outcome.final_metrics["rollbacks"] == 1.0
    assert [step for step, _ in rec.checkpoints] == [4, 8, 12]
    assert lrs(rec.checkpoints[0][1]) == [pytest.approx(LR)] * 2
    assert lrs(rec.checkpoints[-1][1]) == [pytest.approx(LR / 2)] * 2  # and it stays halved
    assert_all_finite(rec)
    assert (
        "loss_D was nan at step 6: rolled back to step 4 with the lr halved (rollback 1 of 3)" in caplog.text
    )


def test_the_rollback_restores_the_checkpoints_state_rng_included(monkeypatch) -> None:
    # A rolled-back run = a run resumed from that checkpoint with the lr halved from there on.
    spec = tiny_spec(steps=8, checkpoint_every=4)
    first = Recorder()
    train(spec, tiny_data(), callbacks=first.callbacks(), log_every=2)
    state = load_checkpoint(first.checkpoints[0][1])  # step 4, before the nan below
    state["metrics"]["rollbacks"] = 1.0  # what a checkpoint written after one rollback carries
    buffer = io.BytesIO()
    torch.save(state, buffer)
    resumed = Recorder()
    train(spec, tiny_data(), callbacks=resumed.callbacks(), resume=buffer.getvalue(), log_every=2)

    poison(monkeypatch, lambda n: n == 6)
    rolled = Recorder()
    train(spec, tiny_data(), callbacks=rolled.callbacks(), log_every=2)
    a, b = load_checkpoint(rolled.checkpoints[-1][1]), load_checkpoint(resumed.checkpoints[-1][1])
    assert a["step"] == b["step"] == 8 and lrs(rolled.checkpoints[-1][1]) == [pytest.approx(LR / 2)] * 2
    for net in ("G", "D", "opt_G", "opt_D"):
        assert_equal(a[net], b[net], net)


def assert_equal(a: Any, b: Any, where: str) -> None:
    """Nested state dicts hold equal tensors and values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where} differs"


def test_before_any_checkpoint_it_rolls_back_to_the_start(monkeypatch) -> None:
    poison(monkeypatch, lambda n: n == 2)
    rec = Recorder()
    outcome = train(tiny_spec(steps=6), tiny_data(), callbacks=rec.callbacks(), log_every=2)
    assert outcome.step == 6 and outcome.final_metrics["rollbacks"] == 1.0
    assert rec.progress[0] == (0, {"rollbacks": 1.0})
    assert [step for step, _ in rec.checkpoints] == [6]
    assert lrs(rec.checkpoints[0][1]) == [pytest.approx(LR / 2)] * 2
    assert_all_finite(rec)


def test_rolled_back_to_the_start_twice_it_is_a_run_from_the_start_at_a_quarter_of_the_lr(
    monkeypatch,
) -> None:
    # Before its first checkpoint a run rolls back to the start it keeps in memory: the steps after
    # the first rollback leave that start as it was for the second.
    clean = Recorder()
    train(tiny_spec(steps=6, options={"lr": LR / 4}), tiny_data(), callbacks=clean.callbacks(), log_every=2)
    poison(monkeypatch, lambda n: n in (2, 4))  # at step 2, then at step 2 of the replay
    rolled = Recorder()
    outcome = train(tiny_spec(steps=6), tiny_data(), callbacks=rolled.callbacks(), log_every=2)
    assert outcome.final_metrics["rollbacks"] == 2.0
    a, b = load_checkpoint(rolled.checkpoints[-1][1]), load_checkpoint(clean.checkpoints[-1][1])
    assert a["step"] == b["step"] == 6
    for part in ("G", "D", "rng", "fixed_z"):
        assert_equal(a[part], b[part], part)
    for opt in ("opt_G", "opt_D"):  # the moments; the lr (the rolled run's param groups also keep the base)
        assert_equal(a[opt]["state"], b[opt]["state"], opt)
    assert lrs(rolled.checkpoints[-1][1]) == lrs(clean.checkpoints[-1][1]) == [LR / 4] * 2


@pytest.mark.parametrize(
    ("phase", "stats", "found"),
    [("D", True, "loss_D was nan at step 8"), ("G", False, "G's weights were not finite at step 8")],
    ids=["loss not yet reported", "weights only"],
)
def test_a_checkpoint_due_before_the_next_report_is_not_written_from_a_nonfinite_state(
    monkeypatch, phase: str, stats: bool, found: str
) -> None:
    # Step 8 is due a checkpoint and a sample grid but no report (log_every=5); with stats=False the
    # step's loss is finite (computed before G's update) and only G's weights are nan.
    poison(monkeypatch, lambda n: n == 8, phase=phase, stats=stats)
    rec = Recorder()
    spec = tiny_spec(steps=12, checkpoint_every=4, sample_every=4, options={"on_nonfinite": "fail"})
    with pytest.raises(TrainingDiverged, match=found):
        train(spec, tiny_data(), callbacks=rec.callbacks(), log_every=5)
    assert [step for step, _ in rec.checkpoints] == [4]
    assert [step for step, _ in rec.samples] == [4]
    assert_all_finite(rec)


def test_a_stop_request_in_a_diverged_window_stops_at_the_last_good_checkpoint(monkeypatch) -> None:
    poison(monkeypatch, lambda n: n == 6)
    rec = Recorder(stop_at=6)  # asked to stop after step 6, whose window holds the nan
    outcome = train(
        tiny_spec(steps=12, checkpoint_every=4), tiny_data(), callbacks=rec.callbacks(), log_every=10
    )
    assert (outcome.step, outcome.stopped) == (4, True)  # where a resume will start
    assert [step for step, _ in rec.checkpoints] == [4]
    assert rec.progress == [(4, {"rollbacks": 1.0})]
    assert_all_finite(rec)


def test_on_nonfinite_fail_fails_at_once_naming_the_step_and_the_loss(monkeypatch) -> None:
    poison(monkeypatch, lambda n: n == 6)
    rec = Recorder()
    spec = tiny_spec(steps=12, checkpoint_every=4, options={"on_nonfinite": "fail"})
    with pytest.raises(TrainingDiverged, match=r"loss_D was nan at step 6 \(on_nonfinite=fail"):
        train(spec, tiny_data(), callbacks=rec.callbacks(), log_every=3)
    assert [step for step, _ in rec.progress] == [3]
    assert [step for step, _ in rec.checkpoints] == [4]


def test_a_run_that_keeps_diverging_fails_after_three_rollbacks(monkeypatch) -> None:
    poison(monkeypatch, lambda n: n >= 6)  # from step 6 on, and again on every replay
    rec = Recorder()
    spec = tiny_spec(steps=12, checkpoint_every=4)
    with pytest.raises(TrainingDiverged) as failed:
        train(spec, tiny_data(), callbacks=rec.callbacks(), log_every=3)
    assert MAX_ROLLBACKS == 3
    # The replays from step 4 diverge at their first step: found at the report of step 6 each time.
    assert str(failed.value) == "loss_D was nan at step 6 after 3 rollbacks (lr now 2.5e-05 (D), 2.5e-05 (G))"
    assert [m for _, m in rec.progress if set(m) == {"rollbacks"}] == [{"rollbacks": r} for r in (1, 2, 3)]
    assert [step for step, _ in rec.checkpoints] == [4]
    assert_all_finite(rec)


def test_the_halving_composes_with_linear_decay_and_survives_a_resume(monkeypatch) -> None:
    spec = tiny_spec(steps=8, checkpoint_every=2, options={"lr": 1e-3, "lr_decay": "linear"})
    poison(monkeypatch, lambda n: n == 3)
    rec = Recorder()
    train(spec, tiny_data(), callbacks=rec.callbacks(), log_every=1)
    lr = {step: lrs(data) for step, data in rec.checkpoints}
    # The lr of the last step before each checkpoint (the schedule's), halved after step 2's checkpoint.
    assert lr[2] == [pytest.approx(1e-3)] * 2
    assert lr[4] == [pytest.approx(1e-3 / 2)] * 2
    assert lr[6] == [pytest.approx(1e-3 * 0.75 / 2)] * 2
    assert lr[8] == [pytest.approx(1e-3 * 0.25 / 2)] * 2

    # A run resumed from a checkpoint after the rollback keeps the halving (and the count).
    monkeypatch.undo()
    resumed = Recorder()
    outcome = train(spec, tiny_data(), callbacks=resumed.callbacks(), resume=dict(rec.checkpoints)[4])
    assert outcome.final_metrics["rollbacks"] == 1.0
    assert lrs(resumed.checkpoints[-1][1]) == [pytest.approx(1e-3 * 0.25 / 2)] * 2
    a, b = load_checkpoint(rec.checkpoints[-1][1]), load_checkpoint(resumed.checkpoints[-1][1])
    for name, tensor in a["G"].items():
        assert torch.equal(tensor, b["G"][name]), f"G.{name} differs after the resume"


def test_every_model_takes_on_nonfinite_and_old_specs_load_without_it() -> None:
    for model in MODELS:
        spec = parse_train_spec(model, {}, {"on_nonfinite": "fail"})
        assert spec.options.on_nonfinite == "fail"
        stored = parse_train_spec(model, {}, {}).model_dump(mode="json")
        del stored["options"]["on_nonfinite"]  # a spec stored before the option existed
        assert load_train_spec(stored).options.on_nonfinite == "rollback"


# --- the job: recorded as its own failure, with the reason -------------------------------------------

TINY = {"dataset": "digits", "image_size": 16, "batch_size": 16, "steps": 24, "checkpoint_every": 10}
OPTS = {"ngf": "8", "ndf": "8"}


@pytest.mark.parametrize(
    ("on_nonfinite", "when", "error"),
    [
        ("fail", lambda n: n == 15, "TrainingDiverged: loss_D was nan at step 20 (on_nonfinite=fail"),
        ("rollback", lambda n: n >= 15, "TrainingDiverged: loss_D was nan at step 20 after 3 rollbacks"),
    ],
    ids=["fail", "rollbacks exhausted"],
)
def test_a_diverged_job_fails_with_the_reason(
    settings: Settings, monkeypatch, on_nonfinite, when, error
) -> None:
    poison(monkeypatch, when)
    svc = Service(settings)
    job = svc.submit_train("dcgan", options={**OPTS, "on_nonfinite": on_nonfinite}, **TINY)
    svc.run_embedded(job)
    job = svc.get(job.id)
    assert job.state == "failed" and job.attempt == 1
    assert job.error is not None and job.error.startswith(error)
    assert job.progress.step == 10  # its last good step


def test_a_job_that_rolled_back_succeeds_and_shows_the_count(settings: Settings, monkeypatch) -> None:
    poison(monkeypatch, lambda n: n == 15)
    svc = Service(settings)
    job = svc.submit_train("dcgan", options=OPTS, **TINY)
    svc.run_embedded(job)
    job = svc.get(job.id)
    assert job.state == "succeeded", job.error
    assert job.progress.step == 24 and job.metrics["rollbacks"] == 1.0
