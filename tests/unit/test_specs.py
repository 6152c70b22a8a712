from __future__ import annotations

import pytest

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import SampleSpec, load_train_spec, parse_sample_spec, parse_train_spec


def test_defaults_and_string_options_are_coerced() -> None:
    spec = parse_train_spec("dcgan", {"steps": 10}, {"lr": "1e-3", "ngf": "32"})
    assert spec.steps == 10 and spec.image_size == 32 and spec.batch_size == 64
    assert spec.options.lr == pytest.approx(1e-3) and spec.options.ngf == 32
    assert load_train_spec(spec.model_dump(mode="json")) == spec


@pytest.mark.parametrize(
    ("model", "fields", "options", "field", "words"),
    [
        ("stylegan", {}, {}, "model", "dcgan"),
        ("dcgan", {"image_size": 48}, {}, "image_size", "power of two"),
        ("dcgan", {"image_size": 256}, {}, "image_size", "16, 32, 64 and 128"),
        ("dcgan", {"steps": 0}, {}, "steps", "greater than or equal to 1"),
        ("dcgan", {"batch_size": 10**6}, {}, "batch_size", "less than or equal"),
        ("dcgan", {"seed": -1}, {}, "seed", "greater than or equal to 0"),
        ("dcgan", {}, {"minibatch": "true"}, "set.minibatch", "ngf"),
        ("dcgan", {}, {"lr": "fast"}, "set.lr", "number"),
        ("dcgan", {}, {"lr": "0"}, "set.lr", "greater than 0"),
        ("dcgan", {}, {"upsample": "bilinear"}, "set.upsample", "'transposed' or 'nearest'"),
        (
            "text2img",
            {"dataset": "shapes"},
            {"mode_seeking": "-1"},
            "set.mode_seeking",
            "greater than or equal to 0",
        ),
    ],
)
def test_bad_input_names_the_field_and_what_is_allowed(model, fields, options, field, words) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_train_spec(model, fields, options)
    assert info.value.field == field
    assert words in info.value.message


def test_sample_spec_checkpoint_reference() -> None:
    assert parse_sample_spec({"checkpoint": "1200"}).checkpoint == "1200"
    assert SampleSpec().checkpoint == "latest"
    with pytest.raises(InvalidInput) as info:
        parse_sample_spec({"checkpoint": "newest"})
    assert info.value.field == "checkpoint"
    with pytest.raises(InvalidInput) as info:
        parse_sample_spec({"count": 0})
    assert info.value.field == "count"
