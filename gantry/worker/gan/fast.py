"""The training step as a CUDA graph (`--set compile=graph`), and which step a run uses.

At DCGAN's sizes an eager step on a GPU is bound by kernel launches, not by the GPU: the same step
captured once as a CUDA graph and replayed ran 3.5x faster at batch 64 on an H200 (bench/RESULTS.md).
A graph replays the very kernels the eager step launched, on the same tensors, so its losses are
the eager step's (torch.compile's kernels are not: see bench/RESULTS.md, "DCGAN training speed").

`GraphStep` wraps the loop's step (every phase: zero the phase's gradients, accumulate them, step its
optimizer). Each call copies the step's minibatch (drawn on the CPU from the seed's stream, as
always, and sent to the GPU without waiting: `losses.on_device`) into tensors that stay put, then:
- its first `WARMUP` calls run the step eagerly on a side stream (PyTorch's recipe: libraries
  allocate their workspaces before a capture); they are real steps of the run;
- the next one captures the step as a graph, then replays it (a capture records kernels, it runs
  none); every later call replays it, one launch for the whole step.
The stats it returns (losses, D's outputs) are the graph's output tensors, overwritten by the next
replay: the loop adds them into its window before the next step, as it does with eager stats.
The moving average of G (`ema`) is updated after the replay, as after an eager step: a foreach
lerp whose weight changes every step (torch takes that weight as a Python number only, so a graph
would need another formula, and an eager run's numbers would change with it).

A learning rate is not baked in: the capture reads each optimizer's from a float32 tensor on the
GPU (fused Adam takes one), which a replay refills when the loop changed it (`lr_decay=linear`
every step of the second half): one small fill, never a new capture. For
that to compute what an eager step computes, a fused optimizer's learning rates are float32
values (`optimizer_mode`, `float32_lr`): the kernel reads a tensor's as a float32 widened to a
double, a Python float as the double it is. A minibatch of another shape (none in a run) makes a
new capture. A rollback or a resume replaces the optimizer's state, so the loop calls `reset` then.

A step a graph cannot hold (one that waits for the GPU in the middle: a mask's rows picked, a value
read back) fails its capture; no kernel of it ran, so the run goes on with that step, and every later
one, eager, with a warning that says why: an option the graph does not cover costs speed, never the
job.

The optimizers (`optimizer_mode`): on CUDA, eager or graph, Adam runs fused (one kernel for all of
an optimizer's tensors, its step counters on the GPU): fewer launches, and the very kernel a graph
replays, so that a graph step computes what an eager one does (tests/gpu compares their losses).
The multi-tensor Adam would not: its bias corrections are float64 on the CPU when eager and float32
on the GPU when captured, a relative 1e-7 apart, and a GAN's steps grow such a difference fast (on
the CPU, an lr 1e-7 larger moved a dcgan's losses by 2.6e-3 within 10 steps, 0.37 by step 200).
A graph also needs `capturable=True`.
Checkpoints record the optimizers as an eager CPU run would (`eager_state`), so any run resumes
from any other's, on any device.

Where it applies: CUDA, every model and option. Elsewhere `graph` falls back to the eager step with
a warning. `auto` picks eager for now: the graph has not yet been measured on a GPU with
gantry's loop (tests/gpu checks it; bench/dcgan_speed.py measures it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from gantry.worker.gan.losses import Minibatch

log = logging.getLogger(__name__)

WARMUP = 3  # eager steps on a side stream before the capture

Step = Callable[[Minibatch], dict[str, torch.Tensor]]


def choose_step(option: str, device: torch.device) -> str:
    """ "graph" or "eager": what `compile=option` runs on `device` (see the module)."""
    if option == "eager":
        return "eager"
    if device.type != "cuda":
        if option == "graph":
            log.warning(
                "compile=graph: a CUDA graph needs a GPU; this run is on the %s; the steps run eagerly",
                device.type,
            )
        return "eager"
    return "graph" if option == "graph" else "eager"  # auto: eager until measured on a GPU


class GraphStep:
    """`step` captured once as a CUDA graph and replayed (see the module). `capture=False` (tests on
    the CPU) runs the same code without CUDA: the warm-ups, then in place of the capture and its
    replays the step on the same static tensors, reading the fused optimizers' learning rates from
    the same tensors. The optimizers must be in graph mode (`optimizer_mode(..., capturable=True)`),
    again after their state is replaced."""

    def __init__(self, step: Step, optimizers: Sequence[torch.optim.Optimizer], *, capture: bool = True):
        self.step = step
        self.optimizers = list(optimizers)
        self.capture = capture
        self.static: Minibatch | None = None
        self.stats: dict[str, torch.Tensor] = {}
        self.graph: Any = None  # torch.cuda.CUDAGraph once captured (`_InPlace` without capture)
        self.lr_tensors: list[torch.Tensor] = []  # the fused groups' lrs, as the graph reads them
        self.lrs: list[float] = []  # what they hold
        self.baked: list[float] = []  # the other groups' lrs, baked into the graph
        self.warmups = 0
        self.failed: str | None = None  # why the step could not be captured: every call runs eagerly

    def reset(self) -> None:
        """Capture again at the next call (the optimizers' state was replaced: a rollback, a resume)."""
        self.graph, self.warmups = None, 0

    def __call__(self, batch: Minibatch) -> dict[str, torch.Tensor]:
        if self.failed is not None:
            return self.step(batch)
        self._take(batch)
        fused, other = self._groups()
        if self.graph is not None and [group["lr"] for group in other] != self.baked:
            self.reset()
        if self.graph is not None:
            self._refill([group["lr"] for group in fused])
            self.graph.replay()
            return self.stats
        if self.warmups < WARMUP:
            self.warmups += 1
            return self._side(lambda: self.step(self._static()))
        self.lr_tensors = [
            torch.tensor(group["lr"], dtype=torch.float32, device=group["params"][0].device)
            for group in fused
        ]
        self.lrs = [group["lr"] for group in fused]
        try:
            graph = self._capture() if self.capture else _InPlace(self)
        except Exception as exc:  # a capture runs no kernel: the step is still to do
            # What the step did (the capture's end then fails too, in the middle of handling it).
            cause = exc.__context__ if exc.__context__ is not None else exc
            first = next(iter(str(cause).strip().splitlines()), "")  # CUDA's errors run on for lines
            self.failed = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
            log.warning(
                "compile=graph: the step could not be captured as a CUDA graph (%s); the steps run eagerly",
                self.failed,
            )
            for opt in self.optimizers:  # the failed capture's gradient tensors, and their memory, go
                opt.zero_grad(set_to_none=True)
            return self.step(self._static())
        self.graph, self.baked = graph, [group["lr"] for group in other]
        graph.replay()  # the captured step has not run yet
        return self.stats

    def _groups(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The optimizers' param groups: those stepped by fused Adam, whose lr a graph reads from a
        tensor, and the others (none on CUDA, where every optimizer is fused), whose lr it bakes in."""
        groups = [group for opt in self.optimizers for group in opt.param_groups]
        return [g for g in groups if g.get("fused")], [g for g in groups if not g.get("fused")]

    def _refill(self, lrs: list[float]) -> None:
        """Set the lr tensors the graph reads to `lrs` where the loop changed them (queued on the
        stream before the replay: no wait)."""
        if lrs != self.lrs:
            for tensor, lr, was in zip(self.lr_tensors, lrs, self.lrs, strict=True):
                if lr != was:
                    tensor.fill_(lr)
            self.lrs = lrs

    def _stepping(self) -> dict[str, torch.Tensor]:
        """The step on the static minibatch with each fused group's lr read from its tensor (as the
        capture records it); the groups hold their float lrs again after it."""
        fused, _ = self._groups()
        floats = [group["lr"] for group in fused]
        try:
            for group, tensor in zip(fused, self.lr_tensors, strict=True):
                group["lr"] = tensor
            return self.step(self._static())
        finally:
            for group, lr in zip(fused, floats, strict=True):
                group["lr"] = lr

    def _capture(self) -> Any:
        """The step captured as a CUDA graph (its outputs in `stats`); none of its kernels runs. On a
        stream of its own, which stops being the current one whether or not the capture succeeds
        (`torch.cuda.graph` leaves its stream current when the capture's end fails)."""
        graph = torch.cuda.CUDAGraph()
        for opt in self.optimizers:  # the graph's backward makes the gradients, in its own memory
            opt.zero_grad(set_to_none=True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            graph.capture_begin()
            try:
                self.stats = self._stepping()
            finally:
                graph.capture_end()
        torch.cuda.current_stream().wait_stream(side)
        return graph

    def _static(self) -> Minibatch:
        assert self.static is not None
        return self.static

    def _take(self, batch: Minibatch) -> None:
        """Copy `batch` into the static minibatch (made on the first call, or when a shape changes)."""
        tensors = {f.name: getattr(batch, f.name) for f in fields(Minibatch)}
        static = self.static
        same = static is not None and all(
            (value is None) == (getattr(static, name) is None)
            and (value is None or value.shape == getattr(static, name).shape)
            for name, value in tensors.items()
        )
        if not same:
            self.static = Minibatch(**{n: None if v is None else v.clone() for n, v in tensors.items()})
            self.graph, self.warmups = None, 0
            return
        assert static is not None
        for name, value in tensors.items():
            if value is not None:
                getattr(static, name).copy_(value, non_blocking=True)

    def _side(self, run: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """`run()` on a side stream, as a capture's warm-up wants (without a capture: as it is)."""
        if not self.capture:
            return run()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            stats = run()
        torch.cuda.current_stream().wait_stream(side)
        return stats


class _InPlace:
    """`GraphStep(capture=False)`'s stand-in for a captured graph (tests on the CPU): each `replay`
    runs the step on the static minibatch, the fused groups' lrs read from the step's tensors."""

    def __init__(self, owner: GraphStep) -> None:
        self.owner = owner

    def replay(self) -> None:
        self.owner.stats = self.owner._stepping()


def float32_lr(lr: float) -> float:
    """`lr` rounded to the nearest float32 (see the module: what a fused optimizer's lr holds)."""
    return float(np.float32(lr))


def fused_for(device: torch.device) -> bool:
    """Whether a run's Adam steps fused on `device` (see the module): on CUDA. On the CPU the
    unfused step stays, whose numbers every CPU figure and pinned digest was made with."""
    return device.type == "cuda"


def optimizer_mode(opt: torch.optim.Optimizer, *, fused: bool, capturable: bool) -> None:
    """Set how `opt` steps (see the module): `fused`, and `capturable` (a CUDA graph may capture its
    step), with its step counters moved where that mode keeps them: on its parameters' device when
    fused or capturable, else on the CPU. For a new optimizer and again after `load_state_dict`,
    which takes the flags a checkpoint recorded. An optimizer without these options is left as is.
    A fused optimizer's learning rates become float32 values (`float32_lr`; see the module)."""
    for group in opt.param_groups:
        if "fused" in group:
            group["fused"] = True if fused else None  # None: torch's default, the unfused step
        if group.get("fused"):
            for name in ("lr", "initial_lr"):  # initial_lr: the loop's schedule's base, once set
                if name in group:
                    group[name] = float32_lr(group[name])
        if "capturable" in group:
            group["capturable"] = capturable
        on_device = bool(group.get("fused")) or bool(group.get("capturable"))
        for param in group["params"]:
            state = opt.state.get(param, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor):
                state["step"] = step.to(param.device if on_device else "cpu", dtype=torch.float32)


def eager_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer's `state_dict()` as an eager CPU run's would be (neither fused nor capturable,
    step counters on the CPU), for a checkpoint: any run resumes from it, on any device. Such a
    run's, unchanged."""
    if not any(group.get("capturable") or group.get("fused") for group in state["param_groups"]):
        return state
    groups = [
        {
            **group,
            **({"capturable": False} if "capturable" in group else {}),
            **({"fused": None} if "fused" in group else {}),
        }
        for group in state["param_groups"]
    ]
    moments = {
        key: {
            name: value.cpu() if name == "step" and isinstance(value, torch.Tensor) else value
            for name, value in entry.items()
        }
        for key, entry in state["state"].items()
    }
    return {**state, "param_groups": groups, "state": moments}
