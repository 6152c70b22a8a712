"""The job contract: one pydantic spec per job kind and model, validated before anything is queued.

Adding a GAN variant touches its options class and one line in `TRAIN_SPECS` here, one module
under `gantry/worker/gan/models/` and one line in the worker's registry.
"""

from __future__ import annotations

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


class SampleSpec(_Strict):
    kind: Literal["sample"] = "sample"
    checkpoint: str = Field("latest", description="latest, best or a step number")
    count: int = Field(64, ge=1, le=10_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_ref(cls, value: str) -> str:
        if value not in ("latest", "best") and not value.isdigit():
            raise ValueError("must be latest, best or a step number")
        return value


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


def option_help(model: str) -> list[tuple[str, Any, str]]:
    """(name, default, description) for each `--set` option of a model."""
    options_cls = TRAIN_SPECS[model].model_fields["options"].annotation
    assert isinstance(options_cls, type) and issubclass(options_cls, BaseModel)
    return [(n, f.default, f.description or "") for n, f in options_cls.model_fields.items()]
