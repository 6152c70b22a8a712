"""The submit form (/new): what it shows for a model, and its posted fields turned into the service's
submit calls. Values go to the service as typed (strings), so the job specs validate them and the
form shows the same messages, naming the same fields, as the CLI and the JSON API."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData

from gantry.api.schemas import JobView
from gantry.api.service import Service
from gantry.jobs.datasets import DATASETS
from gantry.jobs.specs import MODELS, option_help

TRAIN_FIELDS = ("dataset", "steps", "batch_size", "image_size", "seed", "sample_every", "checkpoint_every")
SAMPLE_FIELDS = ("checkpoint", "count", "seed", "interpolate")
OPTION = "set."  # an option's input is named `set.<name>`, as the spec's errors name it
_WORD = re.compile(r"[A-Za-z0-9_.+-]+")

# The service's name for a field -> the input that shows its error.
_FIELD_OF = {"job_id": "parent_job_id", "parent": "parent_job_id"}


@dataclass(frozen=True)
class OptionInput:
    name: str  # the input's name: set.<option>
    label: str
    default: str
    allowed: str
    meaning: str
    section: str
    choices: list[str]  # a select's values; empty: a text input


def model_or_default(model: str | None) -> str:
    return model if model in MODELS else "dcgan"


def train_defaults(model: str) -> dict[str, str]:
    fields = MODELS[model].model_fields
    return {name: str(fields[name].default) for name in TRAIN_FIELDS}


def option_inputs(model: str) -> list[OptionInput]:
    rows = []
    for row in option_help(model):
        parts = row.allowed.split(", ") if row.allowed else []
        # "transposed, nearest" or "true, false" is a choice; "> 0, <= 1" or "1 to 1024" a bound.
        choices = parts if len(parts) > 1 and all(_WORD.fullmatch(p) for p in parts) else []
        rows.append(
            OptionInput(
                OPTION + row.name, row.name, row.default, row.allowed, row.meaning, row.section, choices
            )
        )
    return rows


def option_sections(model: str) -> list[tuple[str, list[OptionInput]]]:
    """The options by section, in `gantry options` order (architecture first, schedule last)."""
    sections: dict[str, list[OptionInput]] = {}
    for row in option_inputs(model):
        sections.setdefault(row.section, []).append(row)
    return list(sections.items())


def datasets() -> list[str]:
    return sorted(DATASETS)


def field_of(service_field: str) -> str:
    return _FIELD_OF.get(service_field, service_field)


def submit(svc: Service, form: FormData) -> JobView:
    """Submit the posted form as a train or sample job (InvalidInput, naming the field, when bad)."""
    values = {k: v.strip() for k, v in form.multi_items() if isinstance(v, str)}
    if values.get("kind") == "sample":
        fields: dict[str, Any] = {k: values[k] for k in SAMPLE_FIELDS if values.get(k)}
        prompts = [line.strip() for line in values.get("prompts", "").splitlines() if line.strip()]
        if prompts:
            fields["prompts"] = prompts
        return svc.submit_sample(values.get("parent_job_id", ""), **fields)
    model = values.get("model", "")
    fields = {k: values[k] for k in TRAIN_FIELDS if values.get(k)}
    # Only options changed from their defaults: the spec's defaults stay the spec's.
    defaults = {o.name: o.default for o in option_inputs(model)} if model in MODELS else {}
    options = {
        name[len(OPTION) :]: value
        for name, value in values.items()
        if name.startswith(OPTION) and value != defaults.get(name)
    }
    return svc.submit_train(model, options=options, **fields)
