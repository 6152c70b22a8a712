"""`dcgan`: DCGAN (Radford et al. 2015, arXiv 1511.06434) with the Improved Techniques (arXiv
1606.03498), InfoGAN codes and AC-GAN labels; and the recipe `gantry demo` trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gantry.jobs.datasets import dataset_kind
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs.base import (
    FOLDER_LABELS,
    Conflict,
    ConvTrainSpec,
    ModelOptions,
    Recipe,
    SampleMode,
)
from gantry.jobs.specs.options import Adam, Codes, ConvNets, ImageFiles, ImprovedTechniques
from gantry.jobs.specs.prompts import parse_label_prompt

if TYPE_CHECKING:
    from gantry.jobs.specs.jobs import SampleSpec


class DCGANNets(ConvNets):
    d_norm: Literal["batch", "spectral"] = Field(
        "batch",
        description="D's normalisation: the paper's batch norm, or spectral norm on each conv "
        "(Miyato et al. 2018, arXiv 1802.05957)",
    )


class DCGANCodes(Codes):
    code_walk: Literal["blend", "switch"] = Field(
        "blend",
        description="with latent_codes or labels, how walks read z's codes between two values: blend, "
        "as they are; switch, the larger one",
    )

    @model_validator(mode="after")
    def _switch_needs_codes(self) -> DCGANCodes:
        if self.code_walk != "blend" and not (self.latent_codes or self.labels):
            raise Conflict(
                "code_walk", f"code_walk={self.code_walk} needs latent_codes or labels (the codes it reads)"
            )
        return self


class DCGANOptions(DCGANNets, Adam, ImprovedTechniques, DCGANCodes, ImageFiles, ModelOptions):
    @model_validator(mode="after")
    def _codes_without_virtual_batch_norm(self) -> DCGANOptions:
        if (self.latent_codes or self.labels) and self.virtual_batch_norm:
            # The reference batch of virtual batch norm is plain Gaussian z, with no codes.
            raise Conflict(
                "virtual_batch_norm", "latent_codes and labels cannot be combined with virtual_batch_norm"
            )
        return self


class DCGANTrainSpec(ConvTrainSpec):
    model: Literal["dcgan"] = "dcgan"
    options: DCGANOptions = DCGANOptions()

    # prompts: label values, with `labels` only (plain samples whose label codes the prompt sets).
    sample_modes: ClassVar[frozenset[SampleMode]] = frozenset({"interpolate", "arithmetic", "prompts"})
    metrics: ClassVar[tuple[str, ...]] = (
        "modes_stacked",
        "arithmetic_accuracy",
        "interpolation_validity",
        "sample_validity",
        "cas",
        "gan_train",
        "gan_test",
        "fd_classifier",
        "fid",
        "kid",
        "inception_score",
        "precision_recall",
    )
    prompted_by: ClassVar[Literal["labels", "captions"] | None] = "labels"
    reads_codes: ClassVar[bool] = True

    @field_validator("dataset")
    @classmethod
    def _images_only(cls, value: str) -> str:
        if dataset_kind(value) == "points":
            raise ValueError(f"{value} is 2-D points, not images: train it with the MLP model gan")
        return value

    def check_sample(self, sample: SampleSpec) -> None:
        """Prompts name label values (`specs.prompts`): only with `labels`, and for plain samples."""
        if sample.prompts:
            if not self.options.labels:
                raise InvalidInput(
                    "prompts",
                    f"{self.model} takes --prompt only when trained with --set labels=... (it then names label "
                    'values, e.g. --prompt "large red circle"); this job has no labels',
                )
            if sample.interpolate or sample.arithmetic:
                mode = "interpolate" if sample.interpolate else "arithmetic"
                raise InvalidInput(
                    "prompts",
                    f"{self.model} prompts draw plain samples; --{mode} walks the latents as they are",
                )
        super().check_sample(sample)
        if self.options.labels == (FOLDER_LABELS,):
            return  # the sub-folder names are in the checkpoint: the sample job reads the prompts
        for prompt in sample.prompts:
            parse_label_prompt(prompt, self.dataset, self.options.labels)  # names the word that is wrong


# `gantry demo`: the most recognisable shapes found within a few CPU minutes (bench/demo_quality.py
# measures sample_validity; docs/ has the recipe's history). G upsamples by nearest resize, z is small,
# G is conditioned on the five labels (AC-GAN), samples come from the weight average, and walks read
# the label codes with switch.
DEMO = Recipe(
    model="dcgan",
    fields={
        "dataset": "shapes",
        "image_size": 32,
        "steps": 4000,
        "batch_size": 16,
        "checkpoint_every": 1000,
        "sample_every": 500,
        "seed": 1,
    },
    options={
        "nz": "16",
        "ngf": "32",
        "ndf": "32",
        "lr": "1e-3",
        "label_smoothing": "0.9",
        "upsample": "nearest",
        "labels": "shape,colour,size,position,background",
        "precision": "auto",
        "ema": "0.999",
        "code_walk": "switch",
    },
)
