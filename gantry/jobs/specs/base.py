"""What every job spec shares: strict pydantic models, the seed bound, the option groups' base, and
`TrainSpec`, which declares `model` and `options` and what a model can do (its capabilities).

Each model's spec (`specs/gan.py`, `dcgan.py`, `text2img.py`, `sr.py`) narrows `model` to its name
and `options` to its options class, and sets the capability ClassVars; the service and the worker ask
a train spec (`check_sample`, `check_code_walk`, `metric_names`) rather than tables of model names.
Torch-free, like all of `gantry.jobs`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gantry.jobs.datasets import DATASETS, DatasetKind
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs.metrics import EVAL_DEFAULTS, INCEPTION_WEIGHTS_HELP, METRICS

if TYPE_CHECKING:
    from gantry.jobs.specs.jobs import SampleSpec

JobKind = Literal["train", "sample", "evaluate"]

# How G reads z's one-hot codes between two values (a train option of dcgan with codes or labels,
# blend or switch, and of text2img with code_words; and `--code-walk` of sample and evaluate jobs,
# which read the same checkpoint another way).
CodeWalk = Literal["blend", "switch", "slide"]

# What a sample job may ask for beyond plain `--count` images from seeds.
SampleMode = Literal["interpolate", "arithmetic", "prompts", "input"]

MAX_SEED = 2**31 - 1

# `--set labels=folder`: each picture's class is the name of its sub-folder (a folder or .zip of pictures).
FOLDER_LABELS = "folder"

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

# Options outside the architecture and conditioning sections that add layers to G or D (their
# values must match to load another run's weights), and ones inside them that do not.
SHAPING_TECHNIQUES = ("minibatch_discrimination", "mbd_kernels", "mbd_kernel_dim", "virtual_batch_norm")
NOT_SHAPING = ("info_weight", "code_walk")
# Options that add layers when non-zero, whatever their value (a loss weight on a layer they add).
SHAPING_WHEN_ON = ("cond_aug",)

# The order `gantry options MODEL` lists option groups in.
SECTIONS = ("architecture", "optimiser", "loss", "techniques", "conditioning", "data", "schedule")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Conflict(ValueError):
    """A cross-field rule is broken. Raised by model validators, which see every field at once (so
    the rule does not depend on field order); `field` is the option to blame, which pydantic cannot
    know for a model-level error: `first_error` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class OptionGroup(Strict):
    """A group of `--set` options; `section` places it in `gantry options` (see SECTIONS)."""

    section: ClassVar[str] = "techniques"


class ModelOptions(OptionGroup):
    """The options of every model: which checkpoints to keep, what to do when the losses go
    non-finite, learning-rate schedule, weight average and numeric precision. A model's options
    class lists its groups first and this class last."""

    section: ClassVar[str] = "schedule"

    keep_checkpoints: int = Field(
        5,
        ge=0,
        le=1_000_000,
        description="how many of the newest checkpoints to keep (older ones are deleted once a newer "
        "one is written); 0: all",
    )
    keep_every: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="also keep every checkpoint whose step is a multiple of this (0: none)",
    )
    on_nonfinite: Literal["rollback", "fail"] = Field(
        "rollback",
        description="when a loss turns nan or inf: rollback (to the last checkpoint, lr halved; fails "
        "after 3) or fail at once",
    )
    lr_decay: Literal["none", "linear"] = Field(
        "none",
        description="linear: keep lr for the first half of the steps, then decay it linearly to 0 "
        "(CycleGAN's schedule, arXiv 1703.10593)",
    )
    ema: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="decay of a moving average of G's weights that samples and evaluations use "
        "(arXiv 1806.04498; 0: off, 0.999 is usual)",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="bf16: train under bfloat16 autocast (weights and losses stay fp32); auto: bf16 on a "
        "CPU with native bfloat16, else fp32",
    )
    compile: Literal["auto", "graph", "eager"] = Field(
        "auto",
        description="graph: each GPU step replayed as a CUDA graph; eager: op by op; "
        "auto: eager until graph is measured",
    )
    eval_every: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="measure eval_metric every N steps (0: never) and keep the best checkpoint by it "
        "(--checkpoint best)",
    )
    eval_samples: int = Field(
        2000, ge=100, le=100_000, description="with eval_every: samples drawn for each measurement"
    )
    eval_metric: str | None = Field(
        None,
        description="with eval_every: the metric to track, e.g. fd_classifier or fid; default: cas with "
        "labels, else fd_classifier",
    )

    def label_attributes(self) -> tuple[str, ...]:
        """The data set's label attributes the model is conditioned on (`labels`); () without."""
        return ()


class TrainSpec(Strict):
    """A train job. Subclasses narrow `model` and `options` and declare what the model can do."""

    kind: Literal["train"] = "train"
    dataset: str = Field("shapes", min_length=1, description="built-in name, path or URI")
    steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(64, ge=1, le=4096)
    image_size: int = Field(32, ge=8, le=256, description="a power of two")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    checkpoint_every: int = Field(500, ge=1, le=10_000_000)
    sample_every: int = Field(500, ge=1, le=10_000_000)
    init_from: str | None = Field(
        None,
        description="a train job whose G and D weights this run starts from (fine-tuning); its model and "
        "architecture options must match",
    )
    model: str
    options: ModelOptions

    # --- capabilities: what the model can do, declared by each model's spec -------------------
    # Sampling modes a sample job of this model may use besides `--count` and `--seed`.
    sample_modes: ClassVar[frozenset[SampleMode]] = frozenset()
    # What a prompt names: label values (a model conditioned on `labels`) or a caption; None: no prompts.
    prompted_by: ClassVar[Literal["labels", "captions"] | None] = None
    # Evaluation metrics that can apply (`specs.metrics.METRICS` says on which data sets).
    metrics: ClassVar[tuple[str, ...]] = ()
    # Whether `--code-walk` can read its checkpoints' codes another way than trained.
    reads_codes: ClassVar[bool] = False
    # Whether the model trains on whole images at their own sizes (super-resolution crops them).
    full_size_data: ClassVar[bool] = False
    # The models whose train jobs this one can start from (`init_from`); () : its own only.
    starts_from_models: ClassVar[tuple[str, ...]] = ()
    # Fields besides the options whose values shape the networks' weights (conv nets: image_size).
    shaping_fields: ClassVar[tuple[str, ...]] = ("image_size",)

    @field_validator("init_from")
    @classmethod
    def _init_from_job_id(cls, value: str | None) -> str | None:
        if value is not None and not JOB_ID.match(value):
            raise ValueError("must be a job id, e.g. 3f9c2a71b0de")
        return value

    @classmethod
    def name(cls) -> str:
        """The model name (`model`'s default in each model's spec)."""
        default = cls.model_fields["model"].default
        assert isinstance(default, str), f"{cls.__name__} must narrow model to its name"
        return default

    @field_validator("image_size")
    @classmethod
    def _image_size_power_of_two(cls, value: int) -> int:
        if not power_of_two(value):
            raise ValueError("must be a power of two from 8 to 256")
        return value

    @model_validator(mode="after")
    def _labels_the_data_set_has(self) -> TrainSpec:
        """`labels` must name attributes of the data set (its options alone cannot see the data set)."""
        wanted = self.options.label_attributes()
        if not wanted:
            return self
        if FOLDER_LABELS in wanted:
            return self._folder_labels(wanted)
        info = DATASETS.get(self.dataset)
        if info is None or not info.labels:
            with_labels = ", ".join(
                f"{name} ({', '.join(d.labels)})" for name, d in DATASETS.items() if d.labels
            )
            raise Conflict(
                "options.labels",
                f"{self.dataset} has no label attributes gantry knows; built-in data sets with labels: "
                f"{with_labels}",
            )
        for name in wanted:
            if name not in info.labels:
                raise Conflict(
                    "options.labels",
                    f"{self.dataset} has no label {name!r}; its labels are {', '.join(info.labels)}",
                )
        return self

    def _folder_labels(self, wanted: tuple[str, ...]) -> TrainSpec:
        if len(wanted) > 1:
            raise Conflict("options.labels", "labels=folder is a folder's one label: give it alone")
        if self.dataset in DATASETS:
            raise Conflict(
                "options.labels",
                f"labels=folder takes each picture's class from its sub-folder: it needs a folder or .zip "
                f"of pictures, not the built-in {self.dataset}",
            )
        if self.dataset.lower().endswith(".npz"):
            raise Conflict(
                "options.labels",
                "labels=folder takes each picture's class from its sub-folder: an .npz has none "
                "(its 'labels' array is for the metrics)",
            )
        return self

    @model_validator(mode="after")
    def _image_file_options_need_image_files(self) -> TrainSpec:
        """The `data` options read a folder or .zip of pictures: refused with a built-in data set."""
        from gantry.jobs.specs.options import ImageFiles  # options imports this module

        if isinstance(self.options, ImageFiles) and self.dataset in DATASETS:
            for name in ImageFiles.model_fields:
                if getattr(self.options, name) != ImageFiles.model_fields[name].default:
                    raise Conflict(
                        f"options.{name}",
                        f"{name} applies to a folder or .zip of pictures; {self.dataset} is built in",
                    )
        return self

    @model_validator(mode="after")
    def _eval_metric_applies(self) -> TrainSpec:
        """`eval_metric` must be a metric with a direction that applies to this job; unset, it is
        chosen here (EVAL_DEFAULTS) and written into the spec, so every attempt tracks the same one."""
        options = self.options
        if not options.eval_every:
            if options.eval_metric is not None:
                raise Conflict(
                    "options.eval_metric", "eval_metric is what eval_every measures: set eval_every=N"
                )
            return self
        trackable = [name for name in self.metric_names() if METRICS[name].better is not None]
        if options.eval_metric is None:
            chosen = next((name for name in EVAL_DEFAULTS if name in trackable), None)
            if chosen is None:
                raise Conflict(
                    "options.eval_every",
                    f"no metric that can be tracked applies to {self.model} on {self.dataset}"
                    + (f"; set eval_metric to one of {', '.join(trackable)}" if trackable else ""),
                )
            return self.model_copy(update={"options": options.model_copy(update={"eval_metric": chosen})})
        if options.eval_metric not in trackable:
            known = METRICS.get(options.eval_metric)
            why = "is not a metric" if known is None else "has no direction to track"
            if known is not None and known.better is not None:
                why = f"does not apply to {self.model} on {self.dataset}"
            raise Conflict(
                "options.eval_metric",
                f"{options.eval_metric} {why}; these can be tracked: {', '.join(trackable) or 'none'}",
            )
        return self

    def check_inception_weights(self, inception_weights: bool) -> None:
        """InvalidInput when `eval_every` tracks an Inception metric (eval_metric=fid, ...) and
        `inception_weights` (whether GANTRY_INCEPTION_WEIGHTS is set) is False. The validators above
        cannot see settings: the service calls this at submit and the worker before training."""
        name = self.options.eval_metric
        if self.options.eval_every and name is not None and METRICS[name].inception and not inception_weights:
            raise InvalidInput(
                "set.eval_metric", f"{name} needs the Inception weights: {INCEPTION_WEIGHTS_HELP}"
            )

    # --- sample jobs ---------------------------------------------------------------------------
    def check_sample(self, sample: SampleSpec) -> None:
        """InvalidInput (naming the field) unless this model's checkpoint can be sampled as asked."""
        model, allowed = self.model, self.sample_modes
        for mode in sorted(sample.modes - allowed):
            takes = ", ".join(sorted(allowed)) or "only --count and --seed"
            raise InvalidInput(mode, f"{model} jobs do not take --{mode.rstrip('s')}; they take {takes}")
        if sample.interpolate and sample.arithmetic:
            raise InvalidInput("arithmetic", "choose --interpolate or --arithmetic, not both")
        if sample.code_walk:
            if not (sample.interpolate or sample.arithmetic):
                raise InvalidInput(
                    "code_walk",
                    "--code-walk reads latents between codes: use it with --interpolate or --arithmetic",
                )
            self.check_code_walk(sample.code_walk)

    def check_code_walk(self, reading: str) -> None:
        """InvalidInput unless this job's checkpoint can be read with `--code-walk reading`."""
        if not self.reads_codes:
            readers = " or ".join(_model_names(lambda spec: spec.reads_codes))
            raise InvalidInput(
                "code_walk", f"--code-walk reads a {readers} job's codes; this is a {self.model} job"
            )
        try:
            type(self.options).model_validate({**self.options.model_dump(), "code_walk": reading})
        except ValidationError as exc:
            raise InvalidInput("code_walk", exc.errors()[0]["msg"].removeprefix("Value error, ")) from None

    # --- metrics -------------------------------------------------------------------------------
    def metric_names(self, *, auto: bool = False) -> list[str]:
        """The metrics that apply to this job (`auto`: those also computed at the end of training)."""
        conditioned = bool(self.options.label_attributes())
        return [
            name
            for name, info in METRICS.items()
            if name in self.metrics
            and info.fits(self.dataset)
            and (info.auto or not auto)
            and (conditioned or not info.conditional)
        ]

    def resolve_metrics(self, asked: Sequence[str], *, inception_weights: bool = False) -> list[str]:
        """The metrics an evaluate job computes: `asked`, or every one that applies; InvalidInput if
        one does not apply or none does. `inception_weights`: whether GANTRY_INCEPTION_WEIGHTS is set;
        without it an Inception metric asked for is refused, and none is among "every one"."""
        applicable = self.metric_names()
        for name in asked:
            if name not in METRICS:
                known = ", ".join(sorted(METRICS)) or "none yet"
                raise InvalidInput("metric", f"unknown metric {name!r}; known: {known}")
            if name not in applicable:
                raise InvalidInput(
                    "metric",
                    f"{name} does not apply to {self.model} on {self.dataset}; these do: "
                    f"{', '.join(applicable) or 'none'}",
                )
            if METRICS[name].inception and not inception_weights:
                raise InvalidInput("metric", f"{name} needs the Inception weights: {INCEPTION_WEIGHTS_HELP}")
        usable = [name for name in applicable if inception_weights or not METRICS[name].inception]
        chosen = list(dict.fromkeys(asked)) or usable
        if not chosen and applicable:  # only Inception metrics apply, and there are no weights
            raise InvalidInput(
                "metric", f"{', '.join(applicable)} need the Inception weights: {INCEPTION_WEIGHTS_HELP}"
            )
        if not chosen:
            raise InvalidInput("metric", f"no evaluation metric applies to {self.model} on {self.dataset}")
        return chosen

    # --- references to other jobs and files ------------------------------------------------------
    def starts_from(self) -> str | None:
        """The train job whose weights this run starts from (`init_from`); None: fresh weights."""
        return self.init_from

    def check_references(
        self, *, train_job: Callable[[str], tuple[str, dict[str, Any]] | None], exists: Callable[[str], bool]
    ) -> None:
        """Submit-time checks of the files and jobs the spec names (the service supplies the lookups:
        `train_job(id)` -> (model, spec) of a train job with a checkpoint, or None): `init_from`."""
        if self.init_from is not None:
            self.check_start(self.init_from, train_job(self.init_from), field="init_from")

    def network_shape(self) -> dict[str, Any]:
        """The values that decide the shapes of G's and D's weights: `shaping_fields`, the options of
        the architecture and conditioning sections and the techniques that add layers, and the data
        set's channels when it is a built-in one."""
        from gantry.jobs.specs import option_section  # the registry imports this module

        options = self.options.model_dump()
        shape = {name: getattr(self, name) for name in self.shaping_fields}
        for name, value in options.items():
            section = option_section(type(self.options), name)
            if name in SHAPING_WHEN_ON:
                shape[name] = "on" if value else "off"
            elif name in SHAPING_TECHNIQUES or (
                section in ("architecture", "conditioning") and name not in NOT_SHAPING
            ):
                shape[name] = value
        info = DATASETS.get(self.dataset)
        if info is not None:
            shape["data set channels"] = info.channels
        return shape

    def check_start(self, job_id: str, found: tuple[str, dict[str, Any]] | None, *, field: str) -> None:
        """InvalidInput (as `field`) unless train job `job_id` (`found`: its model and spec, None
        when it is not a train job with a checkpoint) has weights this run can start from: a model
        of `starts_from_models` (default: this one) whose network-shaping values match, each
        mismatch named."""
        if found is None:
            raise InvalidInput(field, f"{job_id} is not a train job with a checkpoint")
        model, stored = found
        allowed = self.starts_from_models or (self.model,)
        if model not in allowed:
            raise InvalidInput(
                field,
                f"{job_id} is a {model} job; a {self.model} job starts from a {' or '.join(allowed)} job",
            )
        from gantry.jobs.specs import load_train_spec  # the registry imports this module

        theirs, ours = load_train_spec(stored).network_shape(), self.network_shape()
        for name in ours:
            if name in theirs and theirs[name] != ours[name]:
                how = "set it to match" if name in type(self.options).model_fields else "match it"
                raise InvalidInput(
                    field,
                    f"{job_id} has {name}={_plain(theirs[name])}; this job has {name}={_plain(ours[name])} "
                    f"({how}: the weights' shapes depend on it)",
                )

    @property
    def data_kind(self) -> DatasetKind | None:
        """The kind of a built-in data set; None for the user's data (images)."""
        info = DATASETS.get(self.dataset)
        return info.kind if info else None


def _plain(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _model_names(where: Callable[[type[TrainSpec]], bool]) -> list[str]:
    """The registered models whose spec class satisfies `where` (for messages that list them)."""
    from gantry.jobs.specs import MODELS  # the registry imports every model's spec, which imports this

    return [name for name, spec in MODELS.items() if where(spec)]


class ConvTrainSpec(TrainSpec):
    """A train spec of DCGAN-shaped networks, which double or halve the side per block: 16 to 128 pixels."""

    @field_validator("image_size")
    @classmethod
    def _conv_image_size(cls, value: int) -> int:
        if not 16 <= value <= 128:
            raise ValueError(f"{cls.name()} supports 16, 32, 64 and 128")
        return value


@dataclass(frozen=True)
class Recipe:
    """A train job spelled as the CLI takes it: a model, its fields and its `--set` options."""

    model: str
    fields: dict[str, Any]
    options: dict[str, str]
