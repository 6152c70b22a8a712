"""`srresnet` and `srgan`: super-resolution (Ledig et al. 2016, arXiv 1609.04802)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs.base import Conflict, ModelOptions, OptionGroup, SampleMode, TrainSpec

if TYPE_CHECKING:
    from gantry.jobs.specs.jobs import SampleSpec

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SRNets(OptionGroup):
    """SRResNet's G (Fig. 4, §3.2): B residual blocks, sub-pixel upsampling."""

    section: ClassVar[str] = "architecture"

    blocks: int = Field(16, ge=1, le=64, description="residual blocks B (paper: 16)")
    channels: int = Field(64, ge=4, le=512, description="feature maps per conv in G (paper: 64)")
    scale: int = Field(
        4, description="upscaling factor r (paper: 4)", json_schema_extra={"choices": [2, 4, 8]}
    )
    bicubic_skip: bool = Field(
        False,
        description="G adds its output to the bicubic upscale, learning the residual "
        "(VDSR, Kim et al. 2016, arXiv 1511.04587; not in SRGAN)",
    )

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: int) -> int:
        if value not in (2, 4, 8):
            raise ValueError("must be 2, 4 or 8")
        return value


class SRAdam(OptionGroup):
    section: ClassVar[str] = "optimiser"

    lr: float = Field(1e-4, gt=0, le=1, description="Adam learning rate (paper: 1e-4)")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1 (paper: 0.9)")


class ContentLoss(OptionGroup):
    section: ClassVar[str] = "loss"

    content_loss: Literal["mse", "vgg54"] = Field(
        "mse", description="mse: pixel MSE; vgg54: MSE of VGG19 relu5_4 features (needs vgg_weights)"
    )
    vgg_weights: str | None = Field(
        None, min_length=1, description="VGG19 weights (torchvision's vgg19-dcbb9e9d.pth), path or URI"
    )
    vgg_sha256: str | None = Field(
        None, description="SHA-256 of vgg_weights; default: must start with torchvision's dcbb9e9d"
    )

    @field_validator("vgg_sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be 64 hexadecimal digits")
        return value.lower() if value else value

    @model_validator(mode="after")
    def _vgg_needs_weights(self) -> ContentLoss:
        # Never a silent download: the user names the VGG19 weights file.
        if self.content_loss == "vgg54" and not self.vgg_weights:
            raise Conflict(
                "vgg_weights",
                "content_loss=vgg54 needs VGG19 weights: --set vgg_weights=PATH_OR_URI "
                "(torchvision's vgg19-dcbb9e9d.pth); gantry never downloads them",
            )
        return self


class Augment(OptionGroup):
    augment: bool = Field(
        False,
        description="flip and rotate each HR crop by a multiple of 90 degrees (as EDSR trains, "
        "arXiv 1707.02921; not in SRGAN)",
    )


class SRResNetOptions(SRNets, SRAdam, ContentLoss, Augment, ModelOptions):
    """SRResNet: G trained on the content loss alone."""


class SRGANNets(OptionGroup):
    section: ClassVar[str] = "architecture"

    ndf: int = Field(64, ge=4, le=512, description="D width: channels of its first conv (paper: 64)")


class Adversary(OptionGroup):
    """SRGAN's adversarial loss (§2.2-2.3), and the SRResNet run G starts from."""

    section: ClassVar[str] = "loss"

    adversarial_weight: float = Field(
        1e-3, gt=0, le=10, description="weight of G's adversarial loss (paper: 1e-3)"
    )
    init_from: str | None = Field(
        None,
        description="srresnet train job whose G to start from (the paper does, to avoid bad local optima); "
        "the same as --init-from",
    )

    @field_validator("init_from")
    @classmethod
    def _job_id(cls, value: str | None) -> str | None:
        if value is not None and not _JOB_ID.match(value):
            raise ValueError("must be a job id, e.g. 3f9c2a71b0de")
        return value


class SRGANOptions(SRGANNets, Adversary, SRResNetOptions):
    """SRGAN: SRResNet's G plus the paper's D and an adversarial loss."""


class _SRTrainSpec(TrainSpec):
    """`image_size` is the HR crop side (the paper: 96); the LR crop is image_size / scale."""

    # Fully convolutional: the crop side does not shape the weights.
    shaping_fields: ClassVar[tuple[str, ...]] = ()

    dataset: str = Field("photos", min_length=1, description="built-in name, path or URI")
    batch_size: int = Field(16, ge=1, le=4096)
    image_size: int = Field(96, ge=8, le=512, description="HR crop side, a multiple of scale")
    options: SRResNetOptions

    sample_modes: ClassVar[frozenset[SampleMode]] = frozenset({"input"})
    metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim")
    # SR trains on crops of whole images: loaders keep each image at its own size.
    full_size_data: ClassVar[bool] = True

    @field_validator("image_size")
    @classmethod
    def _image_size_power_of_two(cls, value: int) -> int:  # replaces the base class's check
        return value

    @model_validator(mode="after")
    def _crop_divides(self) -> _SRTrainSpec:
        scale = self.options.scale
        if self.image_size % scale or self.image_size // scale < 4:
            raise Conflict(
                "image_size", f"the HR crop side must be a multiple of scale={scale} and at least {4 * scale}"
            )
        return self

    def check_sample(self, sample: SampleSpec) -> None:
        if not sample.input:
            raise InvalidInput("input", f"{self.model} jobs super-resolve images: pass --input PATH_OR_URI")
        super().check_sample(sample)

    def check_references(
        self, *, train_job: Callable[[str], tuple[str, dict[str, Any]] | None], exists: Callable[[str], bool]
    ) -> None:
        super().check_references(train_job=train_job, exists=exists)  # init_from
        weights = self.options.vgg_weights
        if self.options.content_loss == "vgg54" and weights and not exists(weights):
            raise InvalidInput("set.vgg_weights", f"{weights!r} does not exist")


class SRResNetTrainSpec(_SRTrainSpec):
    model: Literal["srresnet"] = "srresnet"
    options: SRResNetOptions = SRResNetOptions()


class SRGANTrainSpec(_SRTrainSpec):
    model: Literal["srgan"] = "srgan"
    options: SRGANOptions = SRGANOptions()
    # The paper starts SRGAN's G from a trained SRResNet; another srgan run gives D too.
    starts_from_models: ClassVar[tuple[str, ...]] = ("srresnet", "srgan")

    @model_validator(mode="after")
    def _one_start(self) -> SRGANTrainSpec:
        if self.init_from and self.options.init_from and self.init_from != self.options.init_from:
            raise Conflict("init_from", "give the job to start from once: --init-from or --set init_from")
        return self

    def starts_from(self) -> str | None:
        return self.init_from or self.options.init_from

    def check_references(
        self, *, train_job: Callable[[str], tuple[str, dict[str, Any]] | None], exists: Callable[[str], bool]
    ) -> None:
        super().check_references(train_job=train_job, exists=exists)
        job_id = self.options.init_from
        if job_id is not None:
            self.check_start(job_id, train_job(job_id), field="set.init_from")
