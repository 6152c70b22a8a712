"""Option groups that several models share: a DCGAN-shaped G and D, Adam, the Improved Techniques,
and the codes and labels G is conditioned on. A model's options class composes groups (and
`ModelOptions`, last); `gantry options MODEL` lists them by `section`.

Each group's rules about its own fields are model validators here; rules that cross groups are on
the model's options class.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from gantry.jobs.specs.base import Conflict, OptionGroup


class ConvNets(OptionGroup):
    """A DCGAN-shaped G and D (Radford et al. 2015, arXiv 1511.06434): latent size and widths."""

    section: ClassVar[str] = "architecture"

    nz: int = Field(100, ge=1, le=1024, description="latent dimension (z)")
    ngf: int = Field(64, ge=4, le=1024, description="G width: channels before the last layer")
    ndf: int = Field(64, ge=4, le=1024, description="D width: channels after the first layer")
    upsample: Literal["transposed", "nearest"] = Field(
        "transposed",
        description="G's 2x upsampling: the paper's transposed conv, or nearest resize + 3x3 conv (no checkerboard)",
    )


class Adam(OptionGroup):
    """Adam for G and D, with the same settings for both."""

    section: ClassVar[str] = "optimiser"

    lr: float = Field(2e-4, gt=0, le=1, description="Adam learning rate, G and D")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 (DCGAN: 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")


class ImprovedTechniques(OptionGroup):
    """ "Improved Techniques for Training GANs" (Salimans et al. 2016, arXiv 1606.03498), §3; each off by
    default. The layers and losses are in `gantry.worker.gan.improved`."""

    section: ClassVar[str] = "techniques"

    minibatch_discrimination: bool = Field(
        False, description="D compares each sample with the rest of its minibatch (§3.2)"
    )
    # Defaults of the paper's code (openai/improved-gan, MinibatchLayer(num_kernels=100, dim_per_kernel=5)).
    mbd_kernels: int = Field(100, ge=1, le=1024, description="minibatch discrimination: kernels B")
    mbd_kernel_dim: int = Field(5, ge=1, le=256, description="minibatch discrimination: kernel size C")
    feature_matching: bool = Field(
        False, description="G matches the mean of D's last hidden features on real data (§3.1)"
    )
    label_smoothing: float = Field(
        1.0, ge=0.5, le=1.0, description="one-sided: D's target for real data, e.g. 0.9 (§3.4); 1 = off"
    )
    historical_averaging: float = Field(
        0.0, ge=0.0, le=1000.0, description="weight of ||θ - mean of past θ||² in both losses (§3.3); 0 = off"
    )
    virtual_batch_norm: bool = Field(
        False, description="G normalises with a fixed reference batch instead of its minibatch (§3.5)"
    )

    @model_validator(mode="after")
    def _kernels_need_minibatch_discrimination(self) -> ImprovedTechniques:
        # Compared with the defaults, not `model_fields_set`: a stored spec re-read has every field set.
        fields = type(self).model_fields
        for name, value in (("mbd_kernel_dim", self.mbd_kernel_dim), ("mbd_kernels", self.mbd_kernels)):
            if value != fields[name].default and not self.minibatch_discrimination:
                raise Conflict(name, f"{name} only applies with minibatch_discrimination=true")
        return self


class GeneratorLoss(OptionGroup):
    """G's adversarial loss (Goodfellow et al. 2014, arXiv 1406.2661, §3)."""

    section: ClassVar[str] = "loss"

    loss: Literal["non_saturating", "minimax"] = Field(
        "non_saturating", description="G maximises log D(G(z)), or minimises log(1 - D(G(z))) (saturates)"
    )


class Codes(OptionGroup):
    """What G is conditioned on besides z: InfoGAN's free categorical codes (Chen et al. 2016, arXiv
    1606.03657) and label attributes of a built-in data set (dcgan: AC-GAN, Odena et al. 2016, arXiv
    1610.09585; text2img: TAC-GAN's auxiliary classifier, Dash et al. 2017, arXiv 1703.06412)."""

    section: ClassVar[str] = "conditioning"

    latent_codes: tuple[int, ...] = Field(
        (),
        max_length=8,
        description="InfoGAN categorical codes, e.g. 32 or 8,4: one-hot codes of these sizes join z, "
        "and D learns to read them back",
    )
    info_weight: float = Field(
        1.0,
        gt=0,
        le=100,
        description="InfoGAN: weight λ of the code-reconstruction term (and of the label term with labels)",
    )
    labels: tuple[str, ...] = Field(
        (),
        max_length=5,
        description="label attributes to learn (AC-GAN; TAC-GAN with text), e.g. shape,colour on shapes; "
        "folder: a folder's sub-folders",
    )

    def label_attributes(self) -> tuple[str, ...]:
        return self.labels

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

    @model_validator(mode="after")
    def _weight_needs_codes(self) -> Codes:
        if self.info_weight != 1.0 and not (self.latent_codes or self.labels):
            raise Conflict("info_weight", "info_weight only applies with latent_codes or labels")
        return self


# Named colours `background` takes besides #rrggbb (docs/real-images.md).
COLOURS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128), "gray": (128, 128, 128)}


def parse_colour(value: str) -> tuple[int, int, int]:
    """(r, g, b) of a colour name in COLOURS or of #rgb / #rrggbb; ValueError naming what is allowed."""
    text = value.strip().lower()
    if text in COLOURS:
        return COLOURS[text]
    digits = text.removeprefix("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    if text.startswith("#") and len(digits) == 6:
        try:
            return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
        except ValueError:
            pass
    raise ValueError(f"expected {', '.join(COLOURS)} or #rrggbb, not {value!r}")


class ImageFiles(OptionGroup):
    """How a folder or .zip of the user's pictures is read (gantry.worker.data.folders); built-in data
    sets and .npz files have nothing to set here."""

    section: ClassVar[str] = "data"

    background: str = Field(
        "white",
        description="what transparent pixels are composited on, and fit=pad pads with: white, black, grey "
        "or #rrggbb",
    )
    fit: Literal["crop", "pad"] = Field(
        "crop",
        description="a picture that is not square: centre-crop it, or pad it with the background, then "
        "resize it",
    )
    bad_files: Literal["skip", "refuse"] = Field(
        "skip",
        description="a picture that cannot be read (truncated, not an image, over GANTRY_MAX_INPUT_PIXELS): "
        "skip it with a warning, or fail",
    )
    captions_file: str = Field(
        "",
        description="captions file in the folder or .zip (CSV or JSON lines: file, caption); default: "
        "captions.csv or .jsonl if there",
    )

    @field_validator("background")
    @classmethod
    def _colour(cls, value: str) -> str:
        parse_colour(value)
        return value.strip().lower()

    @field_validator("captions_file")
    @classmethod
    def _relative_name(cls, value: str) -> str:
        text = value.strip()
        if len(text) > 200 or text.startswith("/") or "\\" in text or ".." in text.split("/"):
            raise ValueError(f"a file name inside the folder or .zip, e.g. captions.csv, not {value!r}")
        return text

    def read_defaults(self) -> bool:
        """True when every option of this group is at its default."""
        fields = ImageFiles.model_fields
        return all(getattr(self, name) == fields[name].default for name in fields)
