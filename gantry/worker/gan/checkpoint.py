"""One checkpoint file per save: state_dicts plus plain data in a single `torch.save`.

Loaded with `torch.load(..., weights_only=True)`, so the file holds only tensors, dicts, lists,
tuples, numbers and strings: no pickled modules (the weak spot of stylegan2-ada's snapshots),
no numpy arrays. The spec is stored as JSON-ready data, so the file alone rebuilds the model.

Layout (a plain dict):

    format   int   CHECKPOINT_FORMAT
    step     int   training steps completed
    spec     dict  spec.model_dump(mode="json")
    channels int   image channels of the training data
    G, D, opt_G, opt_D   state_dicts
    G_ema    state_dict  only with the `ema` option: the moving average of G's weights, which
             sampling uses (`generator_weights`); G is what training continues from
    rng      dict  torch_cpu: ByteTensor, torch_cuda: [ByteTensor per device], batches: ByteTensor
    fixed_z  Tensor  the latents of the sample grid
    metrics  dict[str, float]  the last metrics reported
    extra    dict  the model's `extra_state()` (e.g. text2img's text encoder); {} for most models

`load_generator` is the one way to get G back out to sample from: like stylegan2-ada-pytorch's
`legacy.load_network_pkl`, every sampler, evaluator and the SR upscaler goes through it. It builds
G alone (`registry.build_generator`: no D, optimizers or loss) and loads the weights sampling uses.
"""

from __future__ import annotations

import copy
import io
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gantry.jobs.specs import TrainSpecBase, load_train_spec
from gantry.worker.gan.fast import eager_state
from gantry.worker.gan.infogan import CodedLatents
from gantry.worker.gan.registry import GANModel, LatentSampler, Renderer, build_generator, draw_latents

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


# A checkpoint as callers hand it around: its file's bytes, or (the run that wrote it, once it has
# ended) the dict they were written from.
Checkpoint = bytes | dict[str, Any]


def checkpoint_state(
    *,
    model: GANModel,
    step: int,
    spec: TrainSpecBase,
    channels: int,
    batch_generator: torch.Generator,
    fixed_z: torch.Tensor,
    metrics: dict[str, float],
    G_ema: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Everything needed to resume bit-for-bit, or to sample from G: the dict a checkpoint file holds
    (`checkpoint_file` writes it). Its tensors are the model's own, not copies: it stands for the
    file only while the weights stay as they are."""
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "spec": spec.model_dump(mode="json"),
        "channels": channels,
        "G": model.G.state_dict(),
        "D": model.D.state_dict() if model.D is not None else {},  # {}: a model without D
        # As an eager run records them (gantry.worker.gan.fast: a graph's optimizers are capturable).
        "opt_G": eager_state(model.opt_G.state_dict()),
        "opt_D": eager_state(model.opt_D.state_dict()) if model.opt_D is not None else {},
        "rng": {
            "torch_cpu": torch.get_rng_state(),
            "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "batches": batch_generator.get_state(),
        },
        "fixed_z": fixed_z.cpu(),
        "metrics": dict(metrics),
        "extra": model.extra_state() if model.extra_state is not None else {},  # e.g. a text encoder
    }
    if G_ema is not None:
        state["G_ema"] = G_ema.state_dict()
    return state


def state_copy(state: Any) -> Any:
    """A copy of a checkpoint's dict (`checkpoint_state`) that shares no tensor with it: its tensors
    cloned where they are, its dicts and lists copied, anything else deep-copied. What a rollback
    keeps of the state a run starts from (copy.deepcopy's general machinery took ~4 ms for a small
    model's 60 tensors; this ~0.6)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        copied = copy.copy(state)  # its type and attributes kept (a state_dict's `_metadata`)
        for key, value in copied.items():
            copied[key] = state_copy(value)
        return copied
    if isinstance(state, list):
        return [state_copy(value) for value in state]
    if state is None or isinstance(state, (str, int, float, bool)):
        return state
    return copy.deepcopy(state)


def checkpoint_file(state: dict[str, Any]) -> bytes:
    """A checkpoint's dict (`checkpoint_state`) as file bytes."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_checkpoint(data: Checkpoint, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Checkpoint bytes -> the dict `checkpoint_file` wrote (tensors on `map_location`). A dict
    (`checkpoint_state`'s, of a run that has ended) is that already: it comes back as it is, its
    tensors where the run left them (what reads it copies them: `load_state_dict`)."""
    if isinstance(data, dict):
        return data
    state: dict[str, Any] = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unsupported checkpoint format {state.get('format')!r}")
    return state


def generator_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The G weights to sample with: the moving average where the run kept one, else G's own."""
    weights: dict[str, torch.Tensor] = state.get("G_ema") or state["G"]
    return weights


def restore_training_state(state: dict[str, Any], model: GANModel, batch_generator: torch.Generator) -> None:
    """Load weights, optimizer moments and RNG streams from a loaded checkpoint, in place.

    `state` must have been loaded with map_location="cpu": RNG states are CPU byte tensors.
    `load_state_dict` copies the weights onto whatever device the model is on.
    """
    model.G.load_state_dict(state["G"])
    model.opt_G.load_state_dict(state["opt_G"])
    if model.D is not None and model.opt_D is not None:
        model.D.load_state_dict(state["D"])
        model.opt_D.load_state_dict(state["opt_D"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        if len(rng["torch_cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["torch_cuda"])
        else:
            log.warning("checkpoint has CUDA RNG states for %d devices: not restored", len(rng["torch_cuda"]))
    batch_generator.set_state(rng["batches"])


@dataclass(eq=False)
class LoadedGenerator:
    """A checkpoint's G, ready to sample from, and what drawing from it needs."""

    G: nn.Module  # in eval mode, on `device`: the moving average's weights where the run kept one
    spec: TrainSpecBase  # the train spec the checkpoint was written by
    step: int  # training steps completed
    channels: int  # image channels of the training data
    latent_shape: tuple[int, ...]  # one z
    latent_sampler: LatentSampler | None  # None: z ~ N(0, I); else as the model draws z in training
    render: Renderer | None  # G(z) -> files when they are not images (the MLP GAN's 2-D points)
    extra: dict[str, Any]  # the checkpoint's `extra` (e.g. text2img's text encoder); {} for most models
    device: torch.device

    @property
    def codes(self) -> CodedLatents | None:
        """InfoGAN's and AC-GAN's coded latents where the model has them (they know where each code
        sits: `switch`, `with_labels`); None for plain Gaussian z."""
        return self.latent_sampler if isinstance(self.latent_sampler, CodedLatents) else None

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, *latent_shape) latents drawn on the CPU as training and sample jobs draw them, so a
        seed means the same z on any device."""
        return draw_latents(self.latent_shape, self.latent_sampler, n, generator)


def load_generator(checkpoint: Checkpoint, *, device: torch.device | str) -> LoadedGenerator:
    """G of a checkpoint (its bytes, or the dict `load_checkpoint` returned) on `device`, built alone
    (no D, optimizers or loss) with the weights sampling uses (`generator_weights`).

    Building initialises weights from the global RNG; they are overwritten at once, and the fork
    keeps the caller's RNG stream as it was."""
    state = load_checkpoint(checkpoint, map_location="cpu")
    spec = load_train_spec(state["spec"])
    device = torch.device(device)
    extra: dict[str, Any] = state.get("extra") or {}
    with torch.random.fork_rng(devices=[]):
        parts = build_generator(spec, channels=state["channels"], device=device, extra=extra)
    parts.G.load_state_dict(generator_weights(state))
    return LoadedGenerator(
        G=parts.G.eval(),
        spec=spec,
        step=state["step"],
        channels=state["channels"],
        latent_shape=parts.latent_shape,
        latent_sampler=parts.latent_sampler,
        render=parts.render,
        extra=extra,
        device=device,
    )
