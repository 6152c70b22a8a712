"""The job contract: one pydantic spec per job kind and model, validated before anything is queued.

Adding a GAN variant touches its options class and one line in `TRAIN_SPECS` here, one module
under `gantry/worker/gan/models/` and one line in the worker's registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gantry.jobs.errors import InvalidInput

JobKind = Literal["train", "sample", "evaluate"]

# Data sets that ship with gantry (nothing is downloaded). Anything else is a path or URI.
BUILTIN_DATASETS: dict[str, str] = {
    "shapes": "procedural coloured shapes (circle, square, triangle, cross) with attribute labels and captions",
    "digits": "scikit-learn's 8x8 handwritten digits, upscaled, 1 channel",
}

MAX_SEED = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class DCGANOptions(_Strict):
    """DCGAN (Radford et al. 2015, arXiv 1511.06434): widths, latent size and Adam settings."""

    nz: int = Field(100, ge=1, le=1024, description="latent dimension (z)")
    ngf: int = Field(64, ge=4, le=1024, description="G width: channels before the last layer")
    ndf: int = Field(64, ge=4, le=1024, description="D width: channels after the first layer")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate, G and D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (the paper uses 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")


class TrainSpecBase(_Strict):
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
        if not _power_of_two(value):
            raise ValueError("must be a power of two from 8 to 256")
        return value


class DCGANTrainSpec(TrainSpecBase):
    model: Literal["dcgan"] = "dcgan"
    options: DCGANOptions = DCGANOptions()

    @field_validator("image_size")
    @classmethod
    def _dcgan_sizes(cls, value: int) -> int:
        if not 16 <= value <= 128:
            raise ValueError("dcgan supports 16, 32, 64 and 128")
        return value


# model name -> its train spec class. One line per GAN variant.
TRAIN_SPECS: dict[str, type[TrainSpecBase]] = {
    "dcgan": DCGANTrainSpec,
}


# Which sampling modes each model takes (beyond plain `--count` images). One line per model.
SAMPLE_MODES: dict[str, set[str]] = {
    "dcgan": {"interpolate", "arithmetic"},
}
# Models whose sample jobs need an `--input` (super-resolution) instead of latents.
INPUT_MODELS: set[str] = set()


@dataclass(frozen=True)
class MetricInfo:
    """An evaluation metric `gantry evaluate` can compute (the worker's registry has the code)."""

    description: str
    models: tuple[str, ...]
    datasets: tuple[str, ...] | None = None  # None: any data set
    auto: bool = False  # also computed at the end of training

    def applies(self, model: str, dataset: str) -> bool:
        return model in self.models and (self.datasets is None or dataset in self.datasets)


# metric name -> what it is and where it applies. One line per metric.
METRICS: dict[str, MetricInfo] = {}

_SEEDS_TERM = re.compile(r"^\d+(\s*,\s*\d+)*$")


def parse_arithmetic(expression: str) -> list[tuple[int, list[int]]]:
    """`"3,17,42 - 5,8 + 11,12"` -> [(+1, [3, 17, 42]), (-1, [5, 8]), (+1, [11, 12])].

    Each term is a comma-separated list of seeds whose latents are averaged (DCGAN paper, sec. 6.3).
    """
    tokens = re.split(r"\s*([+-])\s*", expression.strip())
    if tokens and tokens[0] == "":
        raise InvalidInput("arithmetic", "must start with a term of seeds, e.g. \"3,17,42 - 5,8 + 11,12\"")
    terms: list[tuple[int, list[int]]] = []
    sign = 1
    for i, token in enumerate(tokens):
        if i % 2 == 1:
            sign = 1 if token == "+" else -1
            continue
        if not _SEEDS_TERM.match(token):
            what = f"term {token!r}" if token else "an empty term"
            raise InvalidInput("arithmetic", f"{what} is not a comma-separated list of seeds (e.g. 3,17,42)")
        seeds = [int(part) for part in token.split(",")]
        if any(seed > MAX_SEED for seed in seeds):
            raise InvalidInput("arithmetic", f"seeds go from 0 to {MAX_SEED}")
        terms.append((sign, seeds))
    if len(terms) < 2:
        raise InvalidInput("arithmetic", "needs at least two terms joined by + or -")
    return terms


class SampleSpec(_Strict):
    kind: Literal["sample"] = "sample"
    checkpoint: str = Field("latest", description="latest, best or a step number")
    count: int = Field(64, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    interpolate: str | None = Field(None, description="SEED_A:SEED_B")
    frames: int = Field(8, ge=2, le=256)
    interpolation: Literal["slerp", "linear"] = "slerp"
    arithmetic: str | None = None
    prompts: list[str] = Field(default_factory=list, max_length=64)
    input: str | None = Field(None, min_length=1, description="an image, folder or prefix (path or URI)")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_ref(cls, value: str) -> str:
        if value not in ("latest", "best") and not value.isdigit():
            raise ValueError("must be latest, best or a step number")
        return value

    @field_validator("interpolate")
    @classmethod
    def _seed_pair(cls, value: str | None) -> str | None:
        if value is not None:
            a, sep, b = value.partition(":")
            if not (sep and a.strip().isdigit() and b.strip().isdigit()):
                raise ValueError("must be SEED_A:SEED_B, e.g. 3:17")
            if max(int(a), int(b)) > MAX_SEED:
                raise ValueError(f"seeds go from 0 to {MAX_SEED}")
            value = f"{int(a)}:{int(b)}"
        return value

    @field_validator("arithmetic")
    @classmethod
    def _arithmetic(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_arithmetic(value)
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: list[str]) -> list[str]:
        cleaned = [p.strip() for p in value]
        if any(not p or len(p) > 300 for p in cleaned):
            raise ValueError("each prompt must have 1 to 300 characters")
        return cleaned

    @property
    def modes(self) -> set[str]:
        """The sampling modes this spec asks for."""
        asked = {"interpolate": self.interpolate, "arithmetic": self.arithmetic, "prompts": self.prompts}
        return {mode for mode, value in asked.items() if value} | ({"input"} if self.input else set())

    def check_model(self, model: str) -> None:
        """Raise InvalidInput when the model cannot sample this way."""
        if model in INPUT_MODELS and not self.input:
            raise InvalidInput("input", f"{model} jobs super-resolve images: pass --input PATH_OR_URI")
        allowed = SAMPLE_MODES.get(model, set()) | ({"input"} if model in INPUT_MODELS else set())
        for mode in sorted(self.modes - allowed):
            takes = ", ".join(sorted(allowed)) or "only --count and --seed"
            raise InvalidInput(mode, f"{model} jobs do not take --{mode.rstrip('s')}; they take {takes}")
        if self.interpolate and self.arithmetic:
            raise InvalidInput("arithmetic", "choose --interpolate or --arithmetic, not both")


class EvaluateSpec(_Strict):
    kind: Literal["evaluate"] = "evaluate"
    checkpoint: str = Field("latest", description="latest, best or a step number")
    metrics: list[str] = Field(default_factory=list, description="empty: every metric that applies")
    seed: int = Field(0, ge=0, le=MAX_SEED)

    _checkpoint_ref = field_validator("checkpoint")(SampleSpec._checkpoint_ref.__func__)  # type: ignore[attr-defined]

    def resolve_metrics(self, model: str, dataset: str) -> list[str]:
        """The metrics to compute for a train job of `model` on `dataset`; InvalidInput if none."""
        applicable = [name for name, info in METRICS.items() if info.applies(model, dataset)]
        for name in self.metrics:
            if name not in METRICS:
                known = ", ".join(sorted(METRICS)) or "none yet"
                raise InvalidInput("metric", f"unknown metric {name!r}; known: {known}")
            if name not in applicable:
                raise InvalidInput(
                    "metric", f"{name} does not apply to {model} on {dataset}; these do: {', '.join(applicable) or 'none'}"
                )
        chosen = list(dict.fromkeys(self.metrics)) or applicable
        if not chosen:
            raise InvalidInput("metric", f"no evaluation metric applies to {model} on {dataset}")
        return chosen


def _first_error(exc: ValidationError, prefix: str = "") -> InvalidInput:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    # The discriminated-union tag shows up in loc; users know the field by its own name.
    loc = [p for p in loc if p not in TRAIN_SPECS]
    if loc[:1] == ["options"]:
        loc = loc[1:]
    field = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "spec"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown option"
    message = message.removeprefix("Value error, ")
    return InvalidInput(field, message)


def parse_train_spec(model: str, fields: dict[str, Any], options: dict[str, Any]) -> TrainSpecBase:
    """Validate a train job. `options` are the model's `--set` values (strings are coerced)."""
    spec_cls = TRAIN_SPECS.get(model)
    if spec_cls is None:
        raise InvalidInput(
            "model", f"unknown model {model!r}; choose one of {', '.join(sorted(TRAIN_SPECS))}"
        )
    options_cls = spec_cls.model_fields["options"].annotation
    assert isinstance(options_cls, type) and issubclass(options_cls, BaseModel)
    unknown = sorted(set(options) - set(options_cls.model_fields))
    if unknown:
        allowed = ", ".join(options_cls.model_fields)
        raise InvalidInput(
            f"set.{unknown[0]}", f"{model} has no option {unknown[0]!r}; its options are {allowed}"
        )
    try:
        opts = options_cls.model_validate(options)
    except ValidationError as exc:
        raise _first_error(exc, prefix="set.") from None
    try:
        return spec_cls.model_validate({**fields, "model": model, "options": opts})
    except ValidationError as exc:
        raise _first_error(exc) from None


def load_train_spec(data: dict[str, Any]) -> TrainSpecBase:
    """Re-read a stored spec (already validated at submit time)."""
    return TRAIN_SPECS[data["model"]].model_validate(data)


def parse_sample_spec(fields: dict[str, Any]) -> SampleSpec:
    try:
        return SampleSpec.model_validate(fields)
    except ValidationError as exc:
        raise _first_error(exc) from None


def parse_evaluate_spec(fields: dict[str, Any]) -> EvaluateSpec:
    try:
        return EvaluateSpec.model_validate(fields)
    except ValidationError as exc:
        raise _first_error(exc) from None


def option_help(model: str) -> list[tuple[str, Any, str]]:
    """(name, default, description) for each `--set` option of a model."""
    options_cls = TRAIN_SPECS[model].model_fields["options"].annotation
    assert isinstance(options_cls, type) and issubclass(options_cls, BaseModel)
    return [(n, f.default, f.description or "") for n, f in options_cls.model_fields.items()]
