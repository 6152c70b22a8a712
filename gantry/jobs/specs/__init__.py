"""The job contract: one pydantic spec per job kind and model, validated before anything is queued.

`MODELS` is the registry of train specs, one line per model; each model's module (`gan`, `dcgan`,
`text2img`, `sr`) declares its options and what it can do. Sample and evaluate jobs are in `jobs`,
the metrics in `metrics`, label prompts in `prompts`, the shared option groups in `options`.
Import specs from here.

Adding a model touches its spec module here, one line in `MODELS`, its module under
`gantry/worker/gan/models/` (found by the model's name) and a test.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from gantry.jobs.datasets import (
    BUILTIN_DATASETS,
    BUILTIN_LABELS,
    CAPTIONED_DATASETS,
    DATASETS,
    POINT_DATASETS,
    DatasetInfo,
)
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs.base import (
    MAX_SEED,
    SECTIONS,
    CodeWalk,
    Conflict,
    JobKind,
    ModelOptions,
    OptionGroup,
    Recipe,
    SampleMode,
    Strict,
    TrainSpec,
)
from gantry.jobs.specs.dcgan import DEMO, DCGANOptions, DCGANTrainSpec
from gantry.jobs.specs.gan import GANOptions, GANTrainSpec
from gantry.jobs.specs.jobs import EvaluateSpec, SampleSpec, parse_arithmetic
from gantry.jobs.specs.metrics import METRICS, MetricInfo
from gantry.jobs.specs.options import Adam, Codes, ConvNets, GeneratorLoss, ImprovedTechniques
from gantry.jobs.specs.sr import SRGANOptions, SRGANTrainSpec, SRResNetOptions, SRResNetTrainSpec
from gantry.jobs.specs.text2img import Text2ImgOptions, Text2ImgTrainSpec

# model name -> its train spec. One line per model.
MODELS: dict[str, type[TrainSpec]] = {
    "gan": GANTrainSpec,
    "dcgan": DCGANTrainSpec,
    "srresnet": SRResNetTrainSpec,
    "srgan": SRGANTrainSpec,
    "text2img": Text2ImgTrainSpec,
}
TRAIN_SPECS = MODELS
TrainSpecBase = TrainSpec  # the name the worker's modules import

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_LABELS",
    "CAPTIONED_DATASETS",
    "DATASETS",
    "DEMO",
    "MAX_SEED",
    "METRICS",
    "MODELS",
    "POINT_DATASETS",
    "SECTIONS",
    "TRAIN_SPECS",
    "Adam",
    "CodeWalk",
    "Codes",
    "Conflict",
    "ConvNets",
    "DCGANOptions",
    "DCGANTrainSpec",
    "DatasetInfo",
    "EvaluateSpec",
    "GANOptions",
    "GANTrainSpec",
    "GeneratorLoss",
    "ImprovedTechniques",
    "JobKind",
    "MetricInfo",
    "ModelOptions",
    "OptionGroup",
    "OptionHelp",
    "Recipe",
    "SRGANOptions",
    "SRGANTrainSpec",
    "SRResNetOptions",
    "SRResNetTrainSpec",
    "SampleMode",
    "SampleSpec",
    "Strict",
    "Text2ImgOptions",
    "Text2ImgTrainSpec",
    "TrainSpec",
    "TrainSpecBase",
    "load_train_spec",
    "option_help",
    "option_section",
    "options_class",
    "parse_arithmetic",
    "parse_evaluate_spec",
    "parse_sample_spec",
    "parse_train_spec",
]


def first_error(exc: ValidationError, prefix: str = "") -> InvalidInput:
    """The first of pydantic's errors as InvalidInput, naming the field as the CLI spells it: a
    model's options as `set.NAME`."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Conflict):  # a cross-field rule: the validator names the field
        loc += cause.field.split(".")
    if loc[:1] == ["options"]:
        loc, prefix = loc[1:], "set."
    field = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "spec"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown option"
    message = message.removeprefix("Value error, ")
    return InvalidInput(field, message)


def options_class(model: str) -> type[ModelOptions]:
    """The `--set` options of a model."""
    options = MODELS[model].model_fields["options"].annotation
    assert isinstance(options, type) and issubclass(options, ModelOptions)
    return options


def parse_train_spec(model: str, fields: dict[str, Any], options: dict[str, Any]) -> TrainSpec:
    """Validate a train job. `options` are the model's `--set` values (strings are coerced)."""
    spec_cls = MODELS.get(model)
    if spec_cls is None:
        raise InvalidInput("model", f"unknown model {model!r}; choose one of {', '.join(sorted(MODELS))}")
    options_cls = options_class(model)
    unknown = sorted(set(options) - set(options_cls.model_fields))
    if unknown:
        allowed = ", ".join(row.name for row in option_help(model))
        raise InvalidInput(
            f"set.{unknown[0]}", f"{model} has no option {unknown[0]!r}; its options are {allowed}"
        )
    try:
        opts = options_cls.model_validate(options)
    except ValidationError as exc:
        raise first_error(exc, prefix="set.") from None
    try:
        return spec_cls.model_validate({**fields, "model": model, "options": opts})
    except ValidationError as exc:
        raise first_error(exc) from None


def load_train_spec(data: dict[str, Any]) -> TrainSpec:
    """Re-read a stored spec (already validated at submit time)."""
    return MODELS[data["model"]].model_validate(data)


def parse_sample_spec(fields: dict[str, Any]) -> SampleSpec:
    try:
        return SampleSpec.model_validate(fields)
    except ValidationError as exc:
        raise first_error(exc) from None


def parse_evaluate_spec(fields: dict[str, Any]) -> EvaluateSpec:
    try:
        return EvaluateSpec.model_validate(fields)
    except ValidationError as exc:
        raise first_error(exc) from None


# --- gantry options MODEL ------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionHelp:
    name: str
    default: str
    allowed: str  # bounds or choices; "" when the meaning says it
    meaning: str
    section: str


def option_help(model: str) -> list[OptionHelp]:
    """Each `--set` option of a model, grouped by section (architecture first, schedule last)."""
    options = options_class(model)
    rows = [
        OptionHelp(
            name, _show(field.default), _allowed(field), field.description or "", _section(options, name)
        )
        for name, field in options.model_fields.items()
    ]
    return sorted(rows, key=lambda row: SECTIONS.index(row.section))  # stable: declaration order within


def option_section(options: type[BaseModel], name: str) -> str:
    """The section (`gantry options`) of option `name` of a model's options class."""
    return _section(options, name)


def _section(options: type[BaseModel], name: str) -> str:
    """The section of the option group that introduced field `name` (the base-most class declaring it)."""
    for cls in reversed(options.__mro__):
        if issubclass(cls, OptionGroup) and name in inspect.get_annotations(cls):
            return cls.section
    raise AssertionError(f"option {name} belongs to no option group")


def _show(value: Any) -> str:
    if value is None or value == ():  # what `--set NAME=none` gives
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _allowed(field: FieldInfo) -> str:
    annotation = field.annotation
    extra = field.json_schema_extra
    choices = extra.get("choices") if isinstance(extra, dict) else None
    if isinstance(choices, list):
        return ", ".join(str(choice) for choice in choices)
    if get_origin(annotation) is Literal:
        return ", ".join(str(choice) for choice in get_args(annotation))
    if annotation is bool:
        return "true, false"
    low = high = ""
    for bound in field.metadata:
        if isinstance(bound, annotated_types.Ge):
            low = f">= {bound.ge}"
        elif isinstance(bound, annotated_types.Gt):
            low = f"> {bound.gt}"
        elif isinstance(bound, annotated_types.Le):
            high = f"<= {bound.le}"
        elif isinstance(bound, annotated_types.Lt):
            high = f"< {bound.lt}"
        elif isinstance(bound, annotated_types.MaxLen):
            high = f"up to {bound.max_length} values"
    if low.startswith(">=") and high.startswith("<="):
        return f"{low[3:]} to {high[3:]}"
    return ", ".join(p for p in (low, high) if p)
