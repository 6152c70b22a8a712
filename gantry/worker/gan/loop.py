"""The one training loop that every GAN variant shares (stylegan2-ada's training_loop, in small).

A variant brings its networks, optimizers and loss through `registry.build_model`; the loop
draws minibatches, runs phase D then phase G each step, and talks to the job system only
through `Callbacks` (progress, stop requests, checkpoints, sample grids).

Reproducibility: everything random comes from `spec.seed`. The global torch RNG (weight
init, and anything a variant draws from it) is seeded once; minibatch indices, latents and the
fixed sample-grid latents come from one CPU `torch.Generator`, so a seed means the same batches
on any device. A checkpoint stores both streams, so N steps + resume + N steps gives the same
weights as 2N steps straight (on the same device and thread count).

Non-finite losses: every log interval the loop reads the window's summed stats (the one GPU sync it
makes anyway), and before a checkpoint or sample grid it also checks the weights, so nothing
non-finite is ever handed out. What it does then is `spec.options.on_nonfinite`: `fail` raises
`TrainingDiverged` at once; `rollback` restores the last checkpoint it wrote (kept in memory, or the
state the run started from), halves the lr from there on, and goes on, up to `MAX_ROLLBACKS` times.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gantry.jobs.errors import JobFailed
from gantry.jobs.specs import TrainSpec
from gantry.jobs.specs.base import FOLDER_LABELS
from gantry.worker.gan.checkpoint import (
    Checkpoint,
    checkpoint_file,
    checkpoint_state,
    generator_weights,
    load_checkpoint,
    restore_training_state,
    state_copy,
)
from gantry.worker.gan.fast import GraphStep, choose_step, float32_lr, fused_for, optimizer_mode
from gantry.worker.gan.images import grid_png, resident_images, scaled
from gantry.worker.gan.losses import Minibatch, Phase, on_device
from gantry.worker.gan.registry import BatchMaker, GANModel, build_model
from gantry.worker.gan.sampler import default_device, generate, generate_outputs

if TYPE_CHECKING:
    from gantry.worker.data import ImageData

log = logging.getLogger(__name__)

GRID_SIDE = 8  # the fixed-noise sample grid is 8 x 8 = 64 images
MAX_ROLLBACKS = 3  # on_nonfinite=rollback: the next non-finite loss after this many fails the run


class TrainingDiverged(JobFailed):
    """A loss or the weights turned non-finite and `on_nonfinite` gave up (or is `fail`): the job's
    own failure, recorded with this reason and not retried."""


@dataclass
class Callbacks:
    # (step, metrics): loss_D, loss_G, D_x, D_G_z averaged since the last call, and images_per_sec
    # (and `rollbacks` once the run has rolled back from a non-finite loss). Called every `log_every`
    # steps, at the last step, on stop, and at a rollback (then at the step it went back to, with
    # `rollbacks` alone).
    progress: Callable[[int, dict[str, float]], None]
    # Polled after every step (the caller throttles its own reads). True: checkpoint and return.
    should_stop: Callable[[], bool]
    # (step, checkpoint file bytes): every spec.checkpoint_every steps, at the end and on stop.
    checkpoint: Callable[[int, bytes], None]
    # (step, PNG of the fixed-noise grid): every spec.sample_every steps and at the end.
    samples: Callable[[int, bytes], None]
    # (step, checkpoint file bytes) every `eval_every` steps and at the end (with eval_every set):
    # measures the eval metric on them; True when it wrote them as a checkpoint (a new best), which
    # then stands for this step's checkpoint.
    evaluate: Callable[[int, bytes], bool] | None = None


@dataclass
class TrainOutcome:
    step: int  # steps completed
    stopped: bool  # True: should_stop ended the run before spec.steps
    final_metrics: dict[str, float]
    # The final checkpoint as the dict it was written from (its tensors the run's own, which no step
    # changes any more): what the end-of-training metrics read, without loading the bytes back.
    # None when the run stopped, or wrote no checkpoint (resumed from its final one).
    final_state: dict[str, Any] | None = None


class _MetricWindow:
    """Averages the per-step stats between progress reports, and the training throughput.

    Stats stay tensors until `flush`, so a GPU is synchronised once per report, not per step.
    Time spent in callbacks (uploads, PNG encoding) is excluded from images_per_sec.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.images = 0
        self.started = time.perf_counter()
        self.paused = 0.0

    def add(self, stats: dict[str, torch.Tensor], images: int) -> None:
        for name, value in stats.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1
        self.images += images

    def exclude(self, since: float) -> None:
        """Leave the time from `since` (or from this window's start, if later) out of the rate."""
        self.paused += time.perf_counter() - max(since, self.started)

    def nonfinite(self) -> str | None:
        """Which summed stat is nan or inf (e.g. "loss_D was nan"); None when all are finite."""
        if not self.sums:
            return None
        sums = list(self.sums.values())
        if bool(torch.stack([torch.isfinite(total).all() for total in sums]).all()):
            return None
        return first_nonfinite({name: total.item() for name, total in self.sums.items()})

    def flush(self) -> dict[str, float]:
        metrics = {name: total.item() / self.steps for name, total in self.sums.items()}
        elapsed = time.perf_counter() - self.started - self.paused
        metrics["images_per_sec"] = self.images / max(elapsed, 1e-9)
        self.reset()
        return metrics


def cpu_has_bf16() -> bool:
    """Whether this CPU does bfloat16 natively (AVX512-BF16 or AMX), as oneDNN sees it."""
    try:  # a private torch API: treat its absence in another torch version as "no"
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def mixed_precision(
    precision: str, device: torch.device, *, cache: bool = True
) -> Callable[[], contextlib.AbstractContextManager]:
    """The context the training steps run in: bfloat16 autocast for `precision="bf16"`, else none.

    bf16 keeps fp32's exponent range, so unlike fp16 it needs no loss scaling; the weights, the
    optimizer moments and the EMA of G stay fp32 (autocast casts per op), as do batch norm's running
    statistics and the losses (autocast's fp32 list). Checkpoints and sampling are therefore unchanged.
    `cache=False` for a step captured as a CUDA graph (autocast's cache of cast weights must not
    outlive a capture).

    "auto" picks bf16 only on a CPU that has it natively: there the demo's steps take about 20% less
    time at the same sample quality (bench/RESULTS.md); on an H200, DCGAN at 64x64 trained at 0.82-0.92x
    fp32's images per second in bf16 (too small to gain from its tensor cores; the casts cost more).
    """
    native_cpu_bf16 = device.type == "cpu" and cpu_has_bf16()
    if precision == "auto":
        precision = "bf16" if native_cpu_bf16 else "fp32"
        log.info("precision=auto: training in %s on %s", precision, device.type)
    if precision != "bf16":
        return contextlib.nullcontext
    if device.type == "cpu" and not native_cpu_bf16:
        log.warning(
            "precision=bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); steps will be slower"
        )
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)


def channels_last_for(model: GANModel, device: torch.device) -> bool:
    """Whether the run keeps its networks' 4-D weights and its default image batches channels-last:
    on the CPU, for the models that gain from it there (`channels_last_on_cpu`). On a GPU not yet:
    bench/dcgan_speed.py --channels-last measures it there before `auto` may pick it."""
    return model.channels_last_on_cpu and device.type == "cpu" and model.make_batch is None


def images_to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W) in [-1, 1] on `device` (sent as `on_device` sends a
    minibatch: super-resolution's crops are one)."""
    return scaled(
        on_device(torch.from_numpy(np.ascontiguousarray(images)), device).permute(0, 3, 1, 2)
    ).contiguous()


def start_from(model: Any, state: dict[str, Any]) -> None:
    """Load another run's weights (`init_from`, fine-tuning): G's that sampling uses and D's when
    both have one (an srresnet run has none: srgan's D then starts fresh). The optimizers start
    fresh. Shapes that differ are refused at submit; one that slips through fails here, named."""
    try:
        model.G.load_state_dict(generator_weights(state))
        took_D = model.D is not None and bool(state.get("D"))
        if took_D:
            model.D.load_state_dict(state["D"])
    except RuntimeError as exc:
        detail = str(exc).splitlines()[1:2] or [str(exc)]
        raise ValueError(
            f"init_from: that run's weights do not fit this model ({detail[0].strip()})"
        ) from None
    log.info("G%s initialised from another run's checkpoint", " and D" if took_D else "")


def train(
    spec: TrainSpec,
    data: ImageData,
    *,
    callbacks: Callbacks,
    resume: bytes | None = None,
    init: bytes | None = None,
    device: torch.device | str | None = None,
    log_every: int = 10,
) -> TrainOutcome:
    """Train `spec.model` on `data` for `spec.steps` steps, or continue from `resume` bytes.

    `init`: another run's checkpoint whose G (and D, when it has one) weights this run starts from
    when it does not resume
    (SRGAN starts from a trained SRResNet, Ledig et al. 2016 §3.2, arXiv 1609.04802).
    """
    device = torch.device(device) if device is not None else default_device()
    channels = data.channels

    # --- Model and RNG streams, from the seed or from the checkpoint ---------------------------
    # Like stylegan2-ada's training_loop, this seeds the process-wide RNG: a worker runs one
    # job at a time, and a variant that draws from it (dropout, say) stays reproducible. On the CPU
    # only the CPU's: torch.manual_seed also queues a seed for each accelerator torch has not started,
    # with a stack trace each (2-3 ms of a tiny job in a worker).
    if device.type == "cpu":
        torch.random.default_generator.manual_seed(spec.seed)
    else:
        torch.manual_seed(spec.seed)
    # labels=folder: the classes are the data's sub-folders, known once it is read.
    label_values = data.attributes if FOLDER_LABELS in getattr(spec.options, "labels", ()) else None
    model = build_model(spec, channels=channels, device=device, label_values=label_values)
    channels_last = channels_last_for(model, device)
    if channels_last:  # values unchanged; only the layout of the 4-D weights (and, below, the images)
        for net in (model.G, model.D):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    batches = torch.Generator().manual_seed(spec.seed)  # minibatch indices and latents
    make_batch = model.make_batch or _image_batches(spec, data, model, device, channels_last=channels_last)
    fixed_cond: torch.Tensor | None = None  # the grid's conditioning (e.g. captions), if any
    if model.make_batch is None:
        fixed_z = model.sample_latents(GRID_SIDE * GRID_SIDE, batches)  # the sample grid's latents
    else:  # the grid shows G on a fixed batch of its inputs (e.g. LR crops, captions)
        fixed = make_batch(data, GRID_SIDE * GRID_SIDE, batches, device)
        # Drawn from the seed's stream before any resume, so a resumed run has the same one.
        fixed_z, fixed_cond = fixed.z.cpu(), fixed.cond
    step, metrics = 0, {}
    if init is not None and resume is None:
        start_from(model, load_checkpoint(init, map_location="cpu"))
    ema = spec.options.ema
    G_ema = copy.deepcopy(model.G).eval().requires_grad_(False) if ema else None
    if resume is not None:
        state = load_checkpoint(resume, map_location="cpu")
        if state["spec"]["model"] != spec.model or state["channels"] != channels:
            raise ValueError("the checkpoint was written for another model or channel count")
        restore_training_state(state, model, batches)
        if G_ema is not None:
            G_ema.load_state_dict(generator_weights(state))
        step, fixed_z, metrics = state["step"], state["fixed_z"], state["metrics"]
        log.info("resuming at step %d of %d", step, spec.steps)
    G_sample = G_ema if G_ema is not None else model.G  # what grids show and checkpoints serve

    window = _MetricWindow()
    last_checkpoint = step if resume is not None else -1
    last_samples = -1

    # --- Non-finite losses: the state to roll back to, and how often the run already did ---------
    on_nonfinite = spec.options.on_nonfinite
    # Carried in the reported metrics, hence in checkpoints: a resumed run keeps its halved lr.
    rollbacks = int(metrics.get("rollbacks", 0))

    final_state: dict[str, Any] | None = None  # the last step's checkpoint, once written

    def state_now() -> dict[str, Any]:
        """The checkpoint of this step as a dict: the model's own tensors, not copies."""
        return checkpoint_state(
            model=model,
            step=step,
            spec=spec,
            channels=channels,
            batch_generator=batches,
            fixed_z=fixed_z,
            metrics=metrics,
            G_ema=G_ema,
        )

    def snapshot() -> bytes:
        nonlocal final_state
        state = state_now()
        if step == spec.steps:  # no step changes these weights any more: the dict stands for the file
            final_state = state
        return checkpoint_file(state)

    # What a rollback restores (weights, optimizer moments, RNG streams): the last checkpoint this run
    # wrote or resumed from, as its bytes; before the first, the state the run starts from, copied in
    # memory (on a GPU it stays there: no file to write before the first step).
    good: Checkpoint | None = None
    if resume is not None:
        good = resume
    elif on_nonfinite == "rollback":
        good = state_copy(state_now())
    nets = {"G": model.G, "D": model.D, "G_ema": G_ema}

    def nonfinite_state() -> str | None:
        """What is non-finite before a checkpoint or grid is handed out: a stat not yet reported, or
        a network's weights (one GPU sync for all of them); None when all is finite."""
        if (stat := window.nonfinite()) is not None:
            return stat
        tensors = {
            name: [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
            for name, net in nets.items()
            if net is not None
        }
        flags = [torch.isfinite(t).all() for ts in tensors.values() for t in ts]
        if not flags or bool(torch.stack(flags).all()):
            return None
        bad = next(name for name, ts in tensors.items() if not all(bool(torch.isfinite(t).all()) for t in ts))
        return f"{bad}'s weights were not finite"

    def roll_back(trouble: str) -> None:
        """Fail (on_nonfinite=fail, or after MAX_ROLLBACKS) or restore `good` with the lr halved."""
        nonlocal step, metrics, rollbacks
        lrs = ", ".join(f"{opt.param_groups[0]['lr']:.3g} ({phase})" for phase, opt in phases)
        if on_nonfinite == "fail":
            raise TrainingDiverged(f"{trouble} at step {step} (on_nonfinite=fail; lr {lrs})")
        if rollbacks >= MAX_ROLLBACKS:
            raise TrainingDiverged(f"{trouble} at step {step} after {rollbacks} rollbacks (lr now {lrs})")
        assert good is not None, "on_nonfinite=rollback keeps a state to roll back to"
        # A copy of the start, so that the run's own steps never change the one kept.
        state = state_copy(good) if isinstance(good, dict) else load_checkpoint(good, map_location="cpu")
        restore_training_state(state, model, batches)
        set_optimizer_mode()  # loading took the flags the checkpoint recorded
        if how == "graph":
            graph_step.reset()  # the optimizers' state was replaced: capture again
        if G_ema is not None:
            G_ema.load_state_dict(generator_weights(state))
        window.reset()
        log.warning(
            "%s at step %d: rolled back to step %d with the lr halved (rollback %d of %d)",
            trouble,
            step,
            state["step"],
            rollbacks + 1,
            MAX_ROLLBACKS,
        )
        rollbacks += 1
        step = state["step"]
        metrics = {**state["metrics"], "rollbacks": float(rollbacks)}
        callbacks.progress(step, {"rollbacks": float(rollbacks)})

    def emit_checkpoint() -> None:
        nonlocal last_checkpoint, good
        payload = snapshot()
        callbacks.checkpoint(step, payload)
        last_checkpoint = step
        if on_nonfinite == "rollback":
            good = payload

    def emit_evaluation() -> None:
        """Measure the eval metric on this step's weights; a new best is written as its checkpoint."""
        nonlocal last_checkpoint, good
        assert callbacks.evaluate is not None
        payload = snapshot()
        if callbacks.evaluate(step, payload):
            last_checkpoint = step
            if on_nonfinite == "rollback":
                good = payload

    def emit_samples() -> None:
        nonlocal last_samples
        if model.render is not None:  # outputs that are not images (2-D points): the model's plot
            png = model.render(generate_outputs(G_sample, fixed_z, device=device)).grid
            assert png is not None, "a model's render hook must make a grid for the sample PNGs"
            callbacks.samples(step, png)
            last_samples = step
            return
        # generate() runs G in eval mode: the running statistics stay put.
        grid = generate(G_sample, fixed_z, cond=fixed_cond, device=device)
        callbacks.samples(step, grid_png(grid, nrow=GRID_SIDE))
        last_samples = step

    def report() -> str | None:
        """Hand the window's averages to `progress`; a non-finite one is not reported but returned."""
        nonlocal metrics
        flushed = window.flush()
        if (trouble := first_nonfinite(flushed)) is not None:
            return trouble
        if rollbacks:
            flushed["rollbacks"] = float(rollbacks)
        metrics = flushed
        callbacks.progress(step, metrics)
        return None

    # --- Training: phase D, then phase G (the model's phases), on the same minibatch ---------
    optimizers = {"D": model.opt_D, "G": model.opt_G}
    phases: list[tuple[Phase, torch.optim.Optimizer]] = []
    for phase in model.phases:
        opt = optimizers[phase]
        if opt is None:
            raise ValueError(f"{spec.model} has a phase {phase} but no optimizer for it")
        phases.append((phase, opt))
    lr_decay = spec.options.lr_decay
    how = choose_step(spec.options.compile, device)  # "graph" or "eager" (gantry.worker.gan.fast)
    autocast = mixed_precision(spec.options.precision, device, cache=how != "graph")

    def set_optimizer_mode() -> None:
        """Fused Adam on CUDA, capturable for a graph (gantry.worker.gan.fast.optimizer_mode)."""
        for _, opt in phases:
            optimizer_mode(opt, fused=fused_for(device), capturable=how == "graph")

    set_optimizer_mode()

    def one_step(batch: Minibatch) -> dict[str, torch.Tensor]:
        """Phase D, then phase G (the model's phases), on the same minibatch."""
        stats: dict[str, torch.Tensor] = {}
        for phase, opt in phases:
            # D's weights are frozen in phase G, so its backward only computes input gradients.
            # G's stay trainable in phase D, which lets a loss keep G(z)'s graph for phase G.
            if model.D is not None:
                model.D.requires_grad_(phase == "D")
            opt.zero_grad(set_to_none=how != "graph")  # a graph keeps its gradient tensors (zeroed)
            with autocast():  # backward too: its ops run in the dtypes autocast chose for the forward
                stats.update(model.loss.accumulate_gradients(phase, batch))
            opt.step()
        return stats

    run_step: Callable[[Minibatch], dict[str, torch.Tensor]] = one_step
    if how == "graph":
        run_step = graph_step = GraphStep(one_step, [opt for _, opt in phases])
        log.info("compile=%s: the step runs as a CUDA graph", spec.options.compile)
    eval_every = spec.options.eval_every if callbacks.evaluate is not None else 0
    last_evaluation = step if resume is not None else -1  # a resume's step was measured before it
    while step < spec.steps:
        # Each rollback halves the lr for good: a factor on the schedule's, which starts from the base lr.
        if lr_decay == "linear" or rollbacks:
            schedule = linear_decay(step, spec.steps) if lr_decay == "linear" else 1.0
            set_lr_factor([opt for _, opt in phases], schedule * 0.5**rollbacks)
        batch = make_batch(data, spec.batch_size, batches, device)
        stats = run_step(batch)
        if G_ema is not None:
            update_average(G_ema, model.G, min(ema, (1 + step) / (10 + step)))
        step += 1
        window.add(stats, spec.batch_size)

        # --- Callbacks (their time is not counted in images_per_sec) ---------------------------
        callbacks_started = time.perf_counter()
        last = step == spec.steps
        checkpoint_due = step % spec.checkpoint_every == 0 or last
        samples_due = step % spec.sample_every == 0 or last
        evaluation_due = eval_every > 0 and (step % eval_every == 0 or last)
        trouble = report() if step % log_every == 0 or last else None
        if trouble is None and (checkpoint_due or samples_due or evaluation_due):
            trouble = nonfinite_state()  # nothing non-finite is handed out
        if trouble is not None:
            roll_back(trouble)  # raises, or goes back to the last good checkpoint
            continue
        if evaluation_due:  # first: a new best is written as this step's checkpoint
            emit_evaluation()
            last_evaluation = step
        if checkpoint_due and last_checkpoint != step:
            emit_checkpoint()
        if samples_due:
            emit_samples()
        if not last and callbacks.should_stop():
            trouble = report() if window.steps else None
            if trouble is None and last_checkpoint != step:
                trouble = nonfinite_state()
                if trouble is None:
                    emit_checkpoint()
            if trouble is not None:
                roll_back(trouble)  # back at the last checkpoint written, which a resume starts from
            log.info("stop requested: stopped at step %d of %d", step, spec.steps)
            return TrainOutcome(step=step, stopped=True, final_metrics=metrics)
        window.exclude(since=callbacks_started)

    # A run resumed from its final checkpoint (its worker died after saving it) does no step;
    # it still hands back the end-of-run artifacts, which the caller writes idempotently.
    if eval_every and last_evaluation != step:
        if (trouble := nonfinite_state()) is not None:
            raise TrainingDiverged(f"{trouble} at step {step}")
        emit_evaluation()
    if last_checkpoint != step:
        if (trouble := nonfinite_state()) is not None:
            raise TrainingDiverged(f"{trouble} at step {step}")
        emit_checkpoint()
    if last_samples != step:
        emit_samples()
    return TrainOutcome(step=step, stopped=False, final_metrics=metrics, final_state=final_state)


def first_nonfinite(values: dict[str, float]) -> str | None:
    """The first nan or inf of `values`, as "loss_D was nan"; None when all are finite."""
    for name, value in values.items():
        if not math.isfinite(value):
            return f"{name} was {value}"
    return None


@torch.no_grad()
def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay x average + (1 - decay) x model, parameter by parameter; buffers (batch-norm
    running statistics) are copied, as StyleGAN's G_ema does. The loop ramps `decay` up from 0.1
    over the first steps (TensorFlow's ExponentialMovingAverage with num_updates), so the average
    does not start out dragged back towards the initial weights."""
    torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), 1.0 - decay)
    # One copy per dtype (float statistics, int64 counts), not one a buffer: a GPU step is bound by
    # launches, and a foreach copy takes its fast path only where all its tensors share a dtype.
    by_dtype: dict[torch.dtype, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for mine, theirs in zip(average.buffers(), model.buffers(), strict=True):
        to, source = by_dtype.setdefault(mine.dtype, ([], []))
        to.append(mine)
        source.append(theirs)
    for to, source in by_dtype.values():
        torch._foreach_copy_(to, source)


def linear_decay(step: int, steps: int) -> float:
    """lr factor for step `step` (0-based) of `steps`: 1 for the first half, then linearly to 0."""
    return min(1.0, 2.0 * (steps - step) / steps)


def set_lr_factor(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    """lr = factor x the optimizer's initial lr (kept in its param groups, so it survives a resume);
    a float32 value in a fused optimizer (gantry.worker.gan.fast: a graph reads it from a tensor)."""
    for opt in optimizers:
        for group in opt.param_groups:
            lr = group.setdefault("initial_lr", group["lr"]) * factor
            group["lr"] = float32_lr(lr) if group.get("fused") else lr


def _image_batches(
    spec: TrainSpec,
    data: ImageData,
    model: GANModel,
    device: torch.device,
    *,
    channels_last: bool = False,
) -> BatchMaker:
    """The default minibatches: images of `data` (all spec.image_size square) and z ~ N(0, I)."""
    n, h, w, _ = data.images.shape
    if (h, w) != (spec.image_size, spec.image_size):
        raise ValueError(f"data images are {h}x{w}, the spec asks for {spec.image_size}x{spec.image_size}")
    x_all = resident_images(data.images, device, channels_last=channels_last)  # uint8 (N, C, H, W)
    labels_all = label_columns(data, model.labels).to(device) if model.labels else None

    def make_batch(
        data: ImageData, batch_size: int, generator: torch.Generator, device: torch.device
    ) -> Minibatch:
        # With replacement: no epoch bookkeeping, and a step's batch depends on the stream alone.
        index = torch.randint(n, (batch_size,), generator=generator)
        z = model.sample_latents(batch_size, generator)
        index = on_device(index, device)
        labels = labels_all[index] if labels_all is not None else None
        return Minibatch(real=scaled(x_all[index]), z=on_device(z, device), labels=labels)

    return make_batch


def label_columns(data: ImageData, names: tuple[str, ...]) -> torch.Tensor:
    """The columns of `data.labels` for the attributes `names`, (N, len(names)) int64; a data set
    with one label per image (digits) has one attribute."""
    if data.labels is None:
        raise ValueError("labels: this data set has no labels")
    if data.labels.ndim == 1:
        if len(names) != 1:
            raise ValueError(f"labels: this data set has one label per image, not {len(names)}")
        return torch.from_numpy(data.labels[:, None].copy())
    columns = list(data.attributes or {})
    missing = [name for name in names if name not in columns]
    if missing:
        raise ValueError(
            f"labels: the data set has no attribute {missing[0]!r} (it has {', '.join(columns)})"
        )
    return torch.from_numpy(data.labels[:, [columns.index(name) for name in names]].copy())
