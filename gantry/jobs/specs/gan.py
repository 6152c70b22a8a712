"""`gan`: the MLP GAN (Goodfellow et al. 2014, arXiv 1406.2661), for 2-D points and small images,
with the Improved Techniques (arXiv 1606.03498)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs.base import Conflict, ModelOptions, OptionGroup, TrainSpec
from gantry.jobs.specs.options import Adam, GeneratorLoss, ImageFiles, ImprovedTechniques

if TYPE_CHECKING:
    from gantry.jobs.specs.jobs import SampleSpec


class MLPNets(OptionGroup):
    """G and D as multilayer perceptrons."""

    section: ClassVar[str] = "architecture"

    nz: int = Field(2, ge=1, le=1024, description="latent dimension (z); PacGAN uses 2 for 2-D data")
    g_width: int = Field(128, ge=4, le=4096, description="G: units per hidden layer")
    g_depth: int = Field(3, ge=1, le=8, description="G: hidden layers (Linear, ReLU)")
    batch_norm: bool = Field(False, description="batch norm in G's hidden layers (PacGAN's G has it)")
    d_width: int = Field(128, ge=4, le=4096, description="D: units per hidden layer")
    d_depth: int = Field(2, ge=1, le=8, description="D: hidden layers (Linear, LeakyReLU 0.2)")


class GANOptions(MLPNets, Adam, GeneratorLoss, ImprovedTechniques, ImageFiles, ModelOptions):
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate, G and D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1")

    @model_validator(mode="after")
    def _feature_matching_replaces_the_loss(self) -> GANOptions:
        if self.feature_matching and self.loss == "minimax":
            raise Conflict(
                "feature_matching",
                "feature_matching replaces G's loss: it cannot be combined with loss=minimax",
            )
        return self


class GANTrainSpec(TrainSpec):
    model: Literal["gan"] = "gan"
    dataset: str = Field("ring8", min_length=1, description="ring8, grid25, or images (flattened)")
    options: GANOptions = GANOptions()

    metrics: ClassVar[tuple[str, ...]] = (
        "modes_2d",
        "modes_stacked",
        "fd_classifier",
        "fid",
        "kid",
        "inception_score",
        "precision_recall",
    )

    @field_validator("image_size")
    @classmethod
    def _mlp_sizes(cls, value: int) -> int:
        if value > 64:  # fully connected: 64x64x3 is already 12,288 inputs per sample
            raise ValueError("gan (an MLP) supports image sizes 8 to 64 (ignored for ring8 and grid25)")
        return value

    @property
    def points(self) -> bool:
        """True when the data are 2-D points (ring8, grid25), not images."""
        return self.data_kind == "points"

    def check_sample(self, sample: SampleSpec) -> None:
        """A 2-D job's samples are one points.npy and its scatter plot: no image format to choose."""
        if self.points and sample.format != "png":
            raise InvalidInput(
                "format",
                f"{sample.format} is for images; a gan job on {self.dataset} writes its samples as one "
                "points.npy and a scatter plot (leave --format out)",
            )
        super().check_sample(sample)
