from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from gantry.jobs import keys
from gantry.jobs.datasets import BUILTIN_LABELS, DATASETS
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs import (
    METRICS,
    MODELS,
    SECTIONS,
    DCGANOptions,
    SampleSpec,
    load_train_spec,
    option_help,
    options_class,
    parse_evaluate_spec,
    parse_sample_spec,
    parse_train_spec,
)


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


def test_a_checkpoint_is_latest_best_or_a_step() -> None:
    for parse in (parse_sample_spec, parse_evaluate_spec):
        assert parse({"checkpoint": "best"}).checkpoint == "best"  # whether the job has one: at submit
        with pytest.raises(InvalidInput) as info:
            parse({"checkpoint": "bestest"})
        assert (
            info.value.field == "checkpoint" and info.value.message == "must be latest, best or a step number"
        )


# --- what a model can do: declared on its spec ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "sample", "field", "words"),
    [
        (
            "gan",
            {},
            {"interpolate": "1:2"},
            "interpolate",
            "gan jobs do not take --interpolate; they take only",
        ),
        ("srresnet", {}, {"count": 4}, "input", "srresnet jobs super-resolve images: pass --input"),
        ("srgan", {}, {"input": "x.png", "prompts": ["a"]}, "prompts", "they take input"),
        ("dcgan", {}, {"interpolate": "1:2", "arithmetic": "1 - 2"}, "arithmetic", "not both"),
        ("dcgan", {}, {"code_walk": "blend"}, "code_walk", "use it with --interpolate or --arithmetic"),
        ("dcgan", {}, {"interpolate": "1:2", "code_walk": "switch"}, "code_walk", "latent_codes or labels"),
        ("gan", {}, {"code_walk": "switch", "count": 2}, "code_walk", "use it with --interpolate"),
        ("text2img", {}, {"count": 4}, "prompts", "pass --prompt TEXT"),
        ("text2img", {}, {"arithmetic": "1 - 2 + 3", "prompts": ["a", "b"]}, "prompts", "one fixed text"),
        ("gan", {}, {"count": 4, "format": "npz"}, "format", "points.npy"),
    ],
)
def test_a_train_spec_says_how_its_checkpoint_samples(model, fields, sample, field, words) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_train_spec(model, fields, {}).check_sample(parse_sample_spec(sample))
    assert info.value.field == field and words in info.value.message, info.value.message


def test_capabilities_are_declared_on_the_spec_classes() -> None:
    takes = {model: spec.sample_modes for model, spec in MODELS.items()}
    assert takes["gan"] == frozenset() and takes["srgan"] == {"input"}
    assert {"interpolate", "arithmetic", "prompts"} <= takes["dcgan"] & takes["text2img"]
    assert [m for m, spec in MODELS.items() if spec.reads_codes] == ["dcgan", "text2img"]
    assert {m: spec.prompted_by for m, spec in MODELS.items() if spec.prompted_by} == {
        "dcgan": "labels",
        "text2img": "captions",
    }
    for spec in MODELS.values():  # every declared metric exists
        assert set(spec.metrics) <= set(METRICS)
    parse_train_spec("srresnet", {}, {}).check_sample(parse_sample_spec({"input": "x.png"}))
    parse_train_spec("gan", {}, {}).check_sample(parse_sample_spec({"count": 3}))


def test_code_walk_readings_are_asked_of_the_train_spec() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_train_spec("gan", {}, {}).check_code_walk("switch")
    assert info.value.field == "code_walk" and "reads a dcgan or text2img job's codes" in info.value.message
    coded = parse_train_spec(
        "text2img", {}, {"labels": "shape,size", "free_label_codes": "true", "code_words": "true"}
    )
    coded.check_code_walk("switch")
    with pytest.raises(InvalidInput, match="generator=layered"):
        coded.check_code_walk("slide")


# --- metrics: the spec's declared metrics that the data set fits -------------------------------------


def test_metrics_apply_where_the_model_declares_them_and_the_data_fits() -> None:
    assert parse_train_spec("gan", {"dataset": "ring8"}, {}).metric_names() == ["modes_2d"]
    inception = [
        "fid",
        "kid",
        "inception_score",
        "precision_recall",
    ]  # image data, any model that makes images
    assert parse_train_spec("gan", {"dataset": "stacked-digits"}, {}).metric_names() == [
        "modes_stacked",
        "fd_classifier",
        *inception,
    ]
    assert parse_train_spec("srgan", {}, {}).metric_names(auto=True) == ["psnr", "ssim"]
    shapes = parse_train_spec("text2img", {"dataset": "shapes"}, {})
    assert shapes.metric_names(auto=True) == []
    assert shapes.resolve_metrics([]) == [
        "caption_faithfulness",
        "prompt_diversity",
        "arithmetic_accuracy",
        "interpolation_validity",
        "fd_classifier",  # its samples drawn for the data's captions
    ]
    with pytest.raises(InvalidInput, match="sample_validity does not apply to text2img on shapes"):
        shapes.resolve_metrics(["sample_validity"])
    with pytest.raises(InvalidInput, match="unknown metric 'fjd'"):
        shapes.resolve_metrics(["fjd"])
    # Without GANTRY_INCEPTION_WEIGHTS the Inception metrics are refused, and left out of "all".
    with pytest.raises(InvalidInput, match="fid needs the Inception weights: set GANTRY_INCEPTION_WEIGHTS"):
        shapes.resolve_metrics(["fid"])
    assert shapes.resolve_metrics(["fid"], inception_weights=True) == ["fid"]
    # The user's pictures: fd_classifier (their sub-folders are checked when they are read) and the
    # Inception ones, which need the weights.
    captioned = parse_train_spec("text2img", {"dataset": "/data/mine"}, {})
    assert captioned.resolve_metrics([]) == ["fd_classifier"]
    assert captioned.resolve_metrics([], inception_weights=True) == ["fd_classifier", *inception]
    # The user's data may have labels (checked when loaded): fd_classifier needs no weights.
    mine = parse_train_spec("dcgan", {"dataset": "/data/mine"}, {})
    assert mine.resolve_metrics([]) == ["fd_classifier"]
    assert mine.resolve_metrics([], inception_weights=True) == ["fd_classifier", *inception]


def test_label_metrics_need_labelled_images_and_the_conditional_ones_a_model_given_labels() -> None:
    # fd_classifier: any image model on labelled data (the user's data: its labels are checked when loaded).
    assert parse_train_spec("gan", {"dataset": "digits", "image_size": 8}, {}).resolve_metrics([]) == [
        "fd_classifier"
    ]
    assert parse_train_spec("dcgan", {"dataset": "/data/mine.npz"}, {}).resolve_metrics([]) == [
        "fd_classifier"
    ]
    assert "fd_classifier" not in parse_train_spec("gan", {"dataset": "ring8"}, {}).metric_names()
    # cas, gan_train, gan_test: a model conditioned on the data's labels.
    unconditioned = parse_train_spec("dcgan", {"dataset": "digits"}, {})
    with pytest.raises(InvalidInput, match="cas does not apply to dcgan on digits"):
        unconditioned.resolve_metrics(["cas"])
    conditioned = parse_train_spec("dcgan", {"dataset": "digits"}, {"labels": "digit"})
    assert conditioned.resolve_metrics([]) == ["cas", "gan_train", "gan_test", "fd_classifier"]
    assert [METRICS[n].better for n in ("cas", "gan_train", "gan_test", "fd_classifier")] == [
        "higher",
        "higher",
        "higher",
        "lower",
    ]
    assert METRICS["fd_classifier"].improves(1.0, 2.0) and not METRICS["cas"].improves(0.5, 0.6)


def test_eval_every_tracks_a_metric_chosen_at_submit() -> None:
    def spec(model: str, fields: dict, options: dict) -> Any:
        return parse_train_spec(model, {"dataset": "digits", "image_size": 16, **fields}, options)

    # Unset, eval_metric is chosen when the spec is validated, and stored with it.
    conditioned = spec("dcgan", {}, {"labels": "digit", "eval_every": "100"})
    assert conditioned.options.eval_metric == "cas"
    assert conditioned.model_dump()["options"]["eval_metric"] == "cas"
    assert spec("dcgan", {}, {"eval_every": "100"}).options.eval_metric == "fd_classifier"
    assert (
        spec(
            "dcgan", {}, {"labels": "digit", "eval_every": "9", "eval_metric": "gan_test"}
        ).options.eval_metric
        == "gan_test"
    )
    refused = [
        (
            "gan",
            {"dataset": "ring8"},
            {"eval_every": "10"},
            "set.eval_every",
            "no metric that can be tracked",
        ),
        ("dcgan", {}, {"eval_every": "10", "eval_metric": "cas"}, "set.eval_metric", "cas does not apply"),
        ("dcgan", {}, {"eval_every": "10", "eval_metric": "nosuch"}, "set.eval_metric", "is not a metric"),
        ("dcgan", {}, {"eval_metric": "fd_classifier"}, "set.eval_metric", "set eval_every=N"),
        ("dcgan", {}, {"eval_every": "10", "eval_samples": "5"}, "set.eval_samples", "greater than or equal"),
    ]
    for model, fields, options, field, words in refused:
        with pytest.raises(InvalidInput) as info:
            spec(model, fields, options)
        assert info.value.field == field and words in info.value.message, info.value


def test_eval_every_tracks_an_inception_metric_only_with_the_weights() -> None:
    def spec(metric: str) -> Any:
        return parse_train_spec("dcgan", {"dataset": "digits"}, {"eval_every": "100", "eval_metric": metric})

    assert [METRICS[n].better for n in ("fid", "kid", "inception_score", "precision_recall")] == [
        "lower",
        "lower",
        "higher",
        None,  # two figures that trade against each other: no best by it
    ]
    with pytest.raises(InvalidInput, match="precision_recall has no direction to track"):
        spec("precision_recall")
    # The spec cannot see GANTRY_INCEPTION_WEIGHTS: whoever has the settings (service, worker) asks.
    fid = spec("fid")
    assert fid.options.eval_metric == "fid"
    fid.check_inception_weights(True)
    with pytest.raises(
        InvalidInput, match="fid needs the Inception weights: set GANTRY_INCEPTION_WEIGHTS"
    ) as info:
        fid.check_inception_weights(False)
    assert info.value.field == "set.eval_metric"
    spec("fd_classifier").check_inception_weights(False)  # needs no weights
    # The default never needs them, so eval_every alone works on any machine.
    assert parse_train_spec("dcgan", {"dataset": "/data/mine"}, {"eval_every": "5"}).options.eval_metric == (
        "fd_classifier"
    )


def test_metrics_declare_their_keys_and_which_a_reading_renames() -> None:
    walk = METRICS["interpolation_validity"]
    assert walk.reading_key("interpolation_validity_ends", "slide") == "interpolation_validity_ends_slide"
    assert walk.reading_key("shapes_classifier_accuracy", "slide") == "shapes_classifier_accuracy"
    assert walk.reading_key("interpolation_validity", None) == "interpolation_validity"
    assert (
        METRICS["arithmetic_accuracy"].reading_key("arithmetic_trials", "switch")
        == "arithmetic_trials_switch"
    )
    for info in METRICS.values():
        assert set(info.walk_keys) <= set(info.keys)
    assert not METRICS["sample_validity"].walk_keys


# --- the data-set table -----------------------------------------------------------------------------


def test_one_table_of_data_set_facts() -> None:
    assert {n for n, d in DATASETS.items() if d.kind == "points"} == {"ring8", "grid25"}
    assert [n for n, d in DATASETS.items() if d.captions] == ["shapes"]
    assert DATASETS["digits"].channels == 1 and DATASETS["photos"].kind == "photos"
    assert {n: d.labels for n, d in DATASETS.items() if d.labels} == BUILTIN_LABELS
    assert list(BUILTIN_LABELS["stacked-digits"]) == ["red", "green", "blue"]
    for info in DATASETS.values():
        assert info.splits == ("train", "test") and info.description


# --- cross-field rules: model validators, whatever the order -----------------------------------------


@pytest.mark.parametrize(
    ("model", "options", "field", "words"),
    [
        ("dcgan", {"code_walk": "switch", "nz": "8"}, "set.code_walk", "needs latent_codes or labels"),
        (
            "dcgan",
            {"virtual_batch_norm": "true", "latent_codes": "4"},
            "set.virtual_batch_norm",
            "cannot be combined",
        ),
        ("dcgan", {"mbd_kernels": "7", "lr": "1e-3"}, "set.mbd_kernels", "only applies with minibatch"),
        ("gan", {"loss": "minimax", "feature_matching": "true"}, "set.feature_matching", "replaces G's loss"),
        ("text2img", {"code_walk": "switch", "labels": "size"}, "set.code_walk", "needs code_words=true"),
        ("text2img", {"code_words": "true", "labels": "size"}, "set.code_words", "needs free_label_codes"),
        (
            "text2img",
            {"code_walk": "slide", "code_words": "true", "free_label_codes": "true", "labels": "size"},
            "set.code_walk",
            "needs generator=layered",
        ),
        (
            "text2img",
            {"free_label_codes": "true", "code_walk": "switch"},
            "set.free_label_codes",
            "needs labels",
        ),
        ("srresnet", {"content_loss": "vgg54", "blocks": "4"}, "set.vgg_weights", "needs VGG19 weights"),
    ],
)
def test_cross_field_rules_name_the_field_whatever_the_order(model, options, field, words) -> None:
    errors = set()
    for order in itertools.permutations(options.items()):
        with pytest.raises(InvalidInput) as info:
            parse_train_spec(model, {}, dict(order))
        errors.add((info.value.field, info.value.message))
    assert len(errors) == 1, errors  # the same error for every order the options come in
    ((got_field, message),) = errors
    assert got_field == field and words in message, message


def test_cross_field_rules_hold_for_the_options_classes_alone() -> None:
    with pytest.raises(ValidationError, match="needs latent_codes or labels"):
        DCGANOptions(code_walk="switch")
    assert DCGANOptions(labels=("shape",), code_walk="switch").code_walk == "switch"
    with pytest.raises(InvalidInput) as info:  # labels are checked against the data set, at the spec
        parse_train_spec("dcgan", {"dataset": "digits"}, {"labels": "shape"})
    assert info.value.field == "set.labels"


# --- gantry options MODEL -----------------------------------------------------------------------------


def test_options_are_listed_architecture_first_with_defaults_bounds_and_one_line() -> None:
    rows = {model: option_help(model) for model in MODELS}
    dcgan = [row.name for row in rows["dcgan"]]
    assert dcgan[:5] == ["nz", "ngf", "ndf", "upsample", "d_norm"]
    assert (
        dcgan.index("lr")
        < dcgan.index("minibatch_discrimination")
        < dcgan.index("labels")
        < dcgan.index("ema")
    )
    assert dcgan[-7:] == [
        "lr_decay", "ema", "precision", "compile", "eval_every", "eval_samples", "eval_metric",
    ]  # fmt: skip
    by_name = {row.name: row for row in rows["dcgan"]}
    assert (by_name["nz"].default, by_name["nz"].allowed) == ("100", "1 to 1024")
    assert by_name["lr"].allowed == "> 0, <= 1" and by_name["ema"].allowed == ">= 0, < 1"
    assert by_name["upsample"].allowed == "transposed, nearest"
    assert (by_name["compile"].default, by_name["compile"].allowed) == ("auto", "auto, graph, eager")
    assert by_name["labels"].default == "none" and by_name["feature_matching"].default == "false"
    assert {row.name: row.allowed for row in rows["srresnet"]}["scale"] == "2, 4, 8"
    for model, listed in rows.items():
        assert {row.name for row in listed} == set(options_class(model).model_fields)
        assert [SECTIONS.index(row.section) for row in listed] == sorted(
            SECTIONS.index(r.section) for r in listed
        )
        for row in listed:
            assert row.meaning and "\n" not in row.meaning and len(row.meaning) <= 130, (model, row.name)


# --- keys and the manifest --------------------------------------------------------------------------


def test_object_keys_follow_the_documented_layout() -> None:
    assert keys.checkpoint_key("abc", 1200, attempt=2) == "jobs/abc/checkpoints/step-00001200-attempt-0002.pt"
    assert keys.manifest_key("abc") == "jobs/abc/checkpoints/latest.json"
    assert keys.samples_key("abc", 5) == "jobs/abc/samples/step-00000005.png"
    assert keys.image_key("abc", "grid.png") == "jobs/abc/images/grid.png"
    assert keys.eval_key("abc", "x.png") == "jobs/abc/eval/x.png"
    assert keys.metrics_key("abc") == "jobs/abc/metrics.jsonl"
    assert keys.spec_key("abc") == "jobs/abc/spec.json"
    assert keys.checkpoint_key("abc", 7, attempt=1).startswith(keys.job_prefix("abc") + "/")


def test_a_steps_checkpoints_are_found_by_listing_newest_attempt_first() -> None:
    # Each attempt writes its own key; one written before keys carried the attempt still counts.
    at_20 = [keys.checkpoint_key("abc", 20, attempt=a) for a in (2, 11, 1)]
    listed = [
        keys.legacy_checkpoint_key("abc", 20),
        *at_20,
        keys.checkpoint_key("abc", 200, attempt=3),  # another step whose digits start alike
        keys.checkpoint_key("abcd", 20, attempt=4),  # another job
        keys.manifest_key("abc"),
    ]
    assert keys.checkpoints_at(listed, "abc", 20) == [
        keys.checkpoint_key("abc", 20, attempt=11),
        keys.checkpoint_key("abc", 20, attempt=2),
        keys.checkpoint_key("abc", 20, attempt=1),
        keys.legacy_checkpoint_key("abc", 20),
    ]
    assert keys.checkpoints_at(listed, "abc", 30) == []
    assert keys.newest_first([keys.legacy_checkpoint_key("abc", 30), *at_20])[
        0
    ] == keys.legacy_checkpoint_key("abc", 30)


def test_the_manifest_carries_the_step_and_old_manifests_still_read() -> None:
    # What gantry wrote before the manifest was a model: json.dumps of a dict, time in isoformat.
    old = b'{"step": 40, "key": "jobs/a/checkpoints/step-00000040.pt", "uri": "file:///x", "bytes": 9, "time": "2025-01-02T03:04:05.123456+00:00"}'
    manifest = keys.Manifest.parse(old)
    assert manifest.step == 40 and manifest.key.endswith("step-00000040.pt")
    renamed = manifest.model_copy(update={"key": "jobs/a/checkpoints/elsewhere.pt"})
    assert keys.Manifest.parse(renamed.dump()) == renamed  # the step never comes from the key
    assert manifest.best is None  # written before eval_every


def test_the_manifest_names_its_best_among_its_checkpoints_in_step_order() -> None:
    def entry(step: int) -> keys.CheckpointEntry:
        return keys.CheckpointEntry(step=step, key=keys.checkpoint_key("a", step, attempt=1), bytes=step)

    best = keys.BestCheckpoint(**entry(20).model_dump(), metric="cas", value=0.8)
    manifest = keys.Manifest(
        step=50,
        key=entry(50).key,
        uri="file:///x",
        bytes=50,
        time="2025-01-02T03:04:05+00:00",
        history=(entry(40),),
        best=best,
    )
    assert [e.step for e in manifest.checkpoints()] == [50, 40, 20]
    assert keys.Manifest.parse(manifest.dump()).best == best
    kept_too = manifest.model_copy(update={"history": (entry(40), entry(20))})
    assert [e.step for e in kept_too.checkpoints()] == [50, 40, 20]  # named once


# --- a folder of pictures: the data options and labels=folder ---------------------------------------


def test_the_data_options_read_a_folder_and_are_listed_in_their_section() -> None:
    spec = parse_train_spec(
        "dcgan",
        {"dataset": "s3://bucket/pets.zip"},
        {
            "labels": "folder",
            "background": "#FFF",
            "fit": "pad",
            "bad_files": "refuse",
            "captions_file": "c.csv",
        },
    )
    assert spec.options.labels == ("folder",) and spec.options.background == "#fff"
    assert load_train_spec(spec.model_dump(mode="json")) == spec
    for model in ("gan", "dcgan", "text2img"):
        data = [row.name for row in option_help(model) if row.section == "data"]
        assert data == ["background", "fit", "bad_files", "captions_file"], model
    assert not [row for row in option_help("srgan") if row.section == "data"]


@pytest.mark.parametrize(
    ("model", "fields", "options", "field", "words"),
    [
        ("dcgan", {"dataset": "shapes"}, {"labels": "folder"}, "set.labels", "needs a folder or .zip"),
        ("dcgan", {"dataset": "/data/pets.npz"}, {"labels": "folder"}, "set.labels", "an .npz has none"),
        ("dcgan", {"dataset": "/data/pets"}, {"labels": "folder,shape"}, "set.labels", "give it alone"),
        (
            "text2img",
            {"dataset": "/data/pets"},
            {"labels": "folder"},
            "set.labels",
            "labels=folder is for dcgan",
        ),
        ("dcgan", {"dataset": "shapes"}, {"fit": "pad"}, "set.fit", "shapes is built in"),
        ("dcgan", {"dataset": "/data/pets"}, {"background": "#12345"}, "set.background", "#rrggbb"),
        ("dcgan", {"dataset": "/data/pets"}, {"fit": "stretch"}, "set.fit", "crop"),
        (
            "dcgan",
            {"dataset": "/data/pets"},
            {"captions_file": "../secrets.csv"},
            "set.captions_file",
            "inside",
        ),
    ],
)
def test_bad_data_options_name_the_option(
    model: str, fields: dict, options: dict, field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_train_spec(model, fields, options)
    assert info.value.field == field and words in info.value.message


def test_prompts_name_a_folder_class_however_it_is_spelt() -> None:
    from gantry.jobs.specs.prompts import parse_label_prompt

    known = {"folder": ["Smileys-and-Emotion", "animals_and_nature", "flags"]}
    assert parse_label_prompt("smileys and emotion", "/data/emoji", ["folder"], known) == {"folder": 0}
    assert parse_label_prompt("an Animals-and-Nature", "/data/emoji", ["folder"], known) == {"folder": 1}
    assert parse_label_prompt("folder=flags", "/data/emoji", ["folder"], known) == {"folder": 2}
    with pytest.raises(InvalidInput, match="'food' names no label value"):
        parse_label_prompt("food", "/data/emoji", ["folder"], known)
    # At submit the classes are unknown (they are in the checkpoint): the sample job checks them.
    spec = parse_train_spec("dcgan", {"dataset": "/data/emoji"}, {"labels": "folder"})
    spec.check_sample(parse_sample_spec({"prompts": ["whatever"]}))
