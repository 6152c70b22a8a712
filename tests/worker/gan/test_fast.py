"""`compile=`: which step a run uses, and the graph step's plumbing on the CPU (gantry.worker.gan.fast).

A CUDA graph itself needs a GPU (tests/gpu/test_cuda_training.py checks its losses against eager
ones); here `GraphStep(capture=False)` runs the same code without the capture: each minibatch is
copied into tensors that stay put, and the step runs on those. It must train exactly as the eager
step does."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

import numpy as np
import pytest
import torch

from gantry.jobs.specs import parse_train_spec
from gantry.worker.data import ImageData
from gantry.worker.gan.checkpoint import checkpoint_file, checkpoint_state, load_checkpoint
from gantry.worker.gan.fast import (
    GraphStep,
    choose_step,
    eager_state,
    float32_lr,
    fused_for,
    optimizer_mode,
)
from gantry.worker.gan.loop import _image_batches, linear_decay, set_lr_factor
from gantry.worker.gan.losses import Minibatch
from gantry.worker.gan.registry import build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device name needs no GPU


def _spec(**options: object):  # type: ignore[no-untyped-def]
    return parse_train_spec(
        "dcgan",
        {"image_size": 16, "batch_size": 8, "steps": 12},
        {"nz": 16, "ngf": 8, "ndf": 8, "minibatch_discrimination": True, **options},
    )


def test_compile_picks_the_graph_only_where_one_applies(caplog: pytest.LogCaptureFixture) -> None:
    assert choose_step("eager", CUDA) == "eager"
    assert choose_step("graph", CUDA) == "graph"
    assert choose_step("auto", CUDA) == "eager"  # until the graph is measured on a GPU
    assert choose_step("auto", CPU) == "eager"
    assert not caplog.text
    with caplog.at_level(logging.WARNING):
        assert choose_step("graph", CPU) == "eager"
    assert "a CUDA graph needs a GPU; this run is on the cpu; the steps run eagerly" in caplog.text
    assert parse_train_spec("dcgan", {"image_size": 16}, {}).options.compile == "auto"


def _run(
    graph: type[GraphStep] | None,
    steps: int = 6,
    *,
    fused: bool = False,
    lr_factor: Callable[[int], float] | None = None,
    steps_seen: list[GraphStep] | None = None,
) -> tuple[list[dict[str, float]], torch.nn.Module]:
    """A tiny dcgan's stats at each of `steps` steps, and its G, with its step wrapped in `graph`
    (capture=False for GraphStep itself) or eager (None). `fused`: Adam as a CUDA run steps it (the
    CPU's fused kernel standing in); `lr_factor(i)`: the lr factor of step i, set as the loop sets
    it; `steps_seen` gets the graph step."""
    spec = _spec()
    torch.manual_seed(spec.seed)
    model = build_model(spec, channels=3, device=CPU)
    if fused:
        for opt in (model.opt_D, model.opt_G):
            optimizer_mode(opt, fused=True, capturable=False)
    images = np.random.default_rng(0).integers(0, 256, size=(64, 16, 16, 3), dtype=np.uint8)
    data = ImageData(images=images)
    make_batch = _image_batches(spec, data, model, CPU)
    batches = torch.Generator().manual_seed(spec.seed)
    phases = [("D", model.opt_D), ("G", model.opt_G)]

    def one_step(batch: Minibatch) -> dict[str, torch.Tensor]:
        stats: dict[str, torch.Tensor] = {}
        for phase, opt in phases:
            model.D.requires_grad_(phase == "D")
            opt.zero_grad(set_to_none=graph is None)  # as the loop: a graph keeps its gradient tensors
            stats.update(model.loss.accumulate_gradients(phase, batch))
            opt.step()
        return stats

    optimizers = [opt for _, opt in phases]
    step = one_step if graph is None else graph(one_step, optimizers, capture=graph is not GraphStep)
    if steps_seen is not None and isinstance(step, GraphStep):
        steps_seen.append(step)
    seen = []
    for i in range(steps):
        if lr_factor is not None:
            set_lr_factor(optimizers, lr_factor(i))
        stats = step(make_batch(data, spec.batch_size, batches, CPU))
        seen.append({name: value.item() for name, value in stats.items()})
    return seen, model.G


def test_the_graph_steps_plumbing_trains_exactly_as_the_eager_step() -> None:
    eager, G_eager = _run(None)
    graph, G_graph = _run(GraphStep)
    assert graph == eager  # each minibatch reached the static tensors: the same losses, bit for bit
    assert len({round(s["loss_D"], 6) for s in eager}) > 1  # and the batches were not all one
    for mine, theirs in zip(G_graph.state_dict().values(), G_eager.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)


def test_a_graph_step_follows_a_changing_learning_rate_without_a_new_capture() -> None:
    """lr_decay=linear changes the lr every step of the second half (here, with a halving on top):
    the graph reads the fused optimizers' lrs from tensors that each call refills, so the steps are
    the eager step's, bit for bit, from one capture. (Bit for bit because a fused optimizer's lrs
    are float32 values: from a tensor the kernel reads the float32, from the loop the double it is
    given.)"""

    def factor(i: int) -> float:
        return linear_decay(i, 16) * (0.5 if i >= 12 else 1.0)  # halved from step 12

    eager, G_eager = _run(None, steps=16, fused=True, lr_factor=factor)
    graphs: list[GraphStep] = []
    graph, G_graph = _run(GraphStep, steps=16, fused=True, lr_factor=factor, steps_seen=graphs)
    assert graph == eager
    for mine, theirs in zip(G_graph.state_dict().values(), G_eager.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)
    (step,) = graphs
    fused, _ = step._groups()
    assert [t.item() for t in step.lr_tensors] == [group["lr"] for group in fused]  # the last step's
    assert all(isinstance(group["lr"], float) for group in fused)  # what a checkpoint records
    assert len({group["lr"] for group in fused}) == 1 and fused[0]["lr"] == float32_lr(2e-4 * factor(15))


def test_a_fused_optimizers_learning_rates_are_float32_values() -> None:
    """What the test above stands on: set once (`optimizer_mode`) and at every change (the loop's
    `set_lr_factor`); an unfused optimizer (every CPU run's) keeps the lr it was given."""
    model = build_model(_spec(), channels=3, device=CPU)
    optimizer_mode(model.opt_G, fused=True, capturable=False)
    set_lr_factor([model.opt_G, model.opt_D], 0.3)
    assert {group["lr"] for group in model.opt_G.param_groups} == {float32_lr(float32_lr(2e-4) * 0.3)}
    assert float32_lr(2e-4) != 2e-4
    assert {group["lr"] for group in model.opt_D.param_groups} == {2e-4 * 0.3}


class _CaptureFails(GraphStep):
    """A graph step whose capture fails, as CUDA fails one that waits for the GPU in the middle (a
    mask's rows picked); its warm-ups run in place (the CPU has no side stream)."""

    captures = 0

    def _side(self, run):  # type: ignore[no-untyped-def]
        return run()

    def _capture(self) -> None:
        type(self).captures += 1
        for opt in self.optimizers:  # as a capture leaves them: gradient tensors of its own memory
            for p in (q for group in opt.param_groups for q in group["params"]):
                p.grad = torch.full_like(p, float("nan"))
        try:  # what the step did; then the capture's end fails too
            raise RuntimeError(
                "CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ..."
            )
        except RuntimeError:
            raise RuntimeError(
                "CUDA error: operation failed due to a previous error during capture"
            ) from None


def test_a_step_the_graph_cannot_hold_runs_eagerly_and_trains_as_the_eager_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    eager, G_eager = _run(None, steps=8)
    _CaptureFails.captures = 0
    with caplog.at_level(logging.WARNING, logger="gantry.worker.gan.fast"):
        fallen, G_fallen = _run(_CaptureFails, steps=8)
    assert _CaptureFails.captures == 1  # tried once, after the warm-ups; never again in the run
    assert fallen == eager  # no step lost or done twice, nothing of the failed capture kept
    for mine, theirs in zip(G_fallen.state_dict().values(), G_eager.state_dict().values(), strict=True):
        assert torch.equal(mine, theirs)
    assert [r.getMessage() for r in caplog.records] == [
        "compile=graph: the step could not be captured as a CUDA graph (RuntimeError: CUDA error: "
        "operation not permitted when stream is capturing); the steps run eagerly"
    ]


def test_a_checkpoint_of_a_capturable_optimizer_resumes_in_an_eager_run() -> None:
    spec = _spec()
    torch.manual_seed(0)
    model = build_model(spec, channels=3, device=CPU)
    for opt in (model.opt_G, model.opt_D):
        opt.zero_grad()
        for p in (q for group in opt.param_groups for q in group["params"]):
            p.grad = torch.ones_like(p)
        opt.step()  # state with a step counter
    eager = model.opt_G.state_dict()
    assert eager_state(eager) is eager  # an eager run's state is written as it is
    optimizer_mode(model.opt_G, fused=True, capturable=True)  # as a graph run on CUDA holds it
    state = eager_state(model.opt_G.state_dict())
    assert all(group["capturable"] is False and group["fused"] is None for group in state["param_groups"])
    assert all(entry["step"].device.type == "cpu" for entry in state["state"].values())
    # Written into a checkpoint and read back by an eager run, it steps as an eager optimizer.
    data = checkpoint_file(
        checkpoint_state(
            model=model,
            step=1,
            spec=spec,
            channels=3,
            batch_generator=torch.Generator(),
            fixed_z=torch.zeros(1),
            metrics={},
        )
    )
    loaded = load_checkpoint(data, map_location="cpu")
    torch.manual_seed(0)
    other = build_model(spec, channels=3, device=CPU)
    other.opt_G.load_state_dict(loaded["opt_G"])
    assert all(group["capturable"] is False and not group["fused"] for group in other.opt_G.param_groups)
    params = [p for group in other.opt_G.param_groups for p in group["params"]]
    for p in params:
        p.grad = torch.ones_like(p)
    other.opt_G.step()  # an eager Adam refuses a capturable state on the CPU; this one steps on
    assert all(other.opt_G.state[p]["step"].item() == 2 for p in params)


def test_a_fused_optimizer_resumes_fused_from_a_checkpoint_in_the_eager_form() -> None:
    """On CUDA a run's Adam steps fused (the kernel a graph replays); a checkpoint records it in the
    eager form, and a run that loads it and sets its mode again steps on as the first would have.
    (The CPU's fused Adam stands in for CUDA's here; a CPU run itself keeps the unfused step.)"""
    assert fused_for(CUDA) and not fused_for(CPU)
    spec = _spec()

    def adam() -> torch.optim.Optimizer:
        torch.manual_seed(0)
        opt = build_model(spec, channels=3, device=CPU).opt_G
        optimizer_mode(opt, fused=True, capturable=False)
        return opt

    def step(opt: torch.optim.Optimizer) -> None:
        for p in _params(opt):
            p.grad = torch.full_like(p, 0.5) + p.detach() * 0.1  # gradients that vary with the weights
        opt.step()

    first = adam()
    step(first)
    step(first)
    assert all(group["fused"] is True for group in first.param_groups)
    buffer = io.BytesIO()
    torch.save(eager_state(first.state_dict()), buffer)  # as a checkpoint holds it
    saved = torch.load(io.BytesIO(buffer.getvalue()))
    assert all(group["fused"] is None for group in saved["param_groups"])
    other = adam()
    with torch.no_grad():  # the checkpoint's weights
        for mine, theirs in zip(_params(other), _params(first), strict=True):
            mine.copy_(theirs)
    other.load_state_dict(saved)
    assert all(group["fused"] is None for group in other.param_groups)  # as the checkpoint recorded
    optimizer_mode(other, fused=True, capturable=False)  # what the loop does after loading
    step(first)
    step(other)
    assert [other.state[p]["step"].item() for p in _params(other)] == [3] * len(_params(other))
    for mine, theirs in zip(_params(other), _params(first), strict=True):
        assert torch.equal(mine, theirs)


def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in opt.param_groups for p in group["params"]]
