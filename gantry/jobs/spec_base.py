"""What every job spec shares: strict pydantic models, the seed bound, the built-in data sets, the
learning-rate schedule and the train spec's common fields. Torch-free, like all of `gantry.jobs`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

JobKind = Literal["train", "sample", "evaluate"]

# How G reads z's one-hot codes between two values (a train option of dcgan with codes or labels,
# blend or switch, and of text2img with code_words; and `--code-walk` of sample and evaluate jobs,
# which read the same checkpoint another way).
CodeWalk = Literal["blend", "switch", "slide"]

# Data sets that ship with gantry (nothing is downloaded). Anything else is a path or URI.
BUILTIN_DATASETS: dict[str, str] = {
    "shapes": "procedural coloured shapes (circle, square, triangle, cross) with attribute labels and captions",
    "digits": "scikit-learn's 8x8 handwritten digits, upscaled, 1 channel",
    "ring8": "2-D points: 8 Gaussians on the unit circle, variance 1e-4 (PacGAN's ring; model gan)",
    "grid25": "2-D points: 25 Gaussians at (-4+2i, -4+2j), variance 0.0025 (PacGAN's grid; model gan)",
    "stacked-digits": "three independent digits as the R, G, B channels: 1000 modes, labels = the 3 digits",
    "photos": "scikit-image's and scikit-learn's sample photographs at full size, RGB, for super-resolution "
    "(14 train, 4 validation)",
}

# The label attributes of the built-in data sets that have them, in the column order of their
# labels, with the names of their values (what `--set labels=...` may name; the worker's loaders
# give the same columns and values, and a unit test keeps the two in sync).
_DIGITS = [str(d) for d in range(10)]
BUILTIN_LABELS: dict[str, dict[str, list[str]]] = {
    "shapes": {
        "shape": ["circle", "square", "triangle", "cross"],
        "colour": ["red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"],
        "size": ["small", "large"],
        "position": [
            "top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right"
        ],
        "background": ["black", "grey", "navy"],
    },
    "digits": {"digit": _DIGITS},
    "stacked-digits": {"red": _DIGITS, "green": _DIGITS, "blue": _DIGITS},
}  # fmt: skip

MAX_SEED = 2**31 - 1


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class LRSchedule(Strict):
    """The learning-rate schedule, the average of G's weights and the numeric precision: options of every
    model."""

    lr_decay: Literal["none", "linear"] = Field(
        "none",
        description="linear: keep lr for the first half of the steps, then decay it linearly to 0 "
        "(CycleGAN's schedule, arXiv 1703.10593); samples settle instead of jittering around the data",
    )
    ema: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="decay of an exponential moving average of G's weights, which sample grids, sample "
        "and evaluate jobs then use (Yazici et al. 2019, arXiv 1806.04498; 0: off, 0.999 is usual)",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="bf16: train under bfloat16 autocast (convolutions and matrix products in bf16; weights, "
        "optimizer state, batch-norm statistics and losses in fp32); auto: bf16 on a CPU with native bfloat16 "
        "(AVX512-BF16 or AMX), where steps took 0.6-0.8x the time, else fp32 (on a GPU gantry's small "
        "networks gained nothing from it)",
    )


class TrainSpecBase(Strict):
    kind: Literal["train"] = "train"
    dataset: str = Field("shapes", min_length=1, description="built-in name, path or URI")
    steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(64, ge=1, le=4096)
    image_size: int = Field(32, ge=8, le=256, description="a power of two")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    checkpoint_every: int = Field(500, ge=1, le=10_000_000)
    sample_every: int = Field(500, ge=1, le=10_000_000)

    @field_validator("image_size")
    @classmethod
    def _image_size_power_of_two(cls, value: int) -> int:
        if not power_of_two(value):
            raise ValueError("must be a power of two from 8 to 256")
        return value
