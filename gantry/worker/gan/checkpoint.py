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
"""

from __future__ import annotations

import io
import logging
from typing import Any

import torch

from gantry.jobs.specs import TrainSpecBase
from gantry.worker.gan.registry import GANModel

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def save_checkpoint(
    *,
    model: GANModel,
    step: int,
    spec: TrainSpecBase,
    channels: int,
    batch_generator: torch.Generator,
    fixed_z: torch.Tensor,
    metrics: dict[str, float],
    G_ema: torch.nn.Module | None = None,
) -> bytes:
    """Everything needed to resume bit-for-bit, or to sample from G, as file bytes."""
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "spec": spec.model_dump(mode="json"),
        "channels": channels,
        "G": model.G.state_dict(),
        "D": model.D.state_dict() if model.D is not None else {},  # {}: a model without D
        "opt_G": model.opt_G.state_dict(),
        "opt_D": model.opt_D.state_dict() if model.opt_D is not None else {},
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
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_checkpoint(data: bytes, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Checkpoint bytes -> the dict `save_checkpoint` wrote (tensors on `map_location`)."""
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
