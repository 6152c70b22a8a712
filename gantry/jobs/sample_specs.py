"""Sample and evaluate job specs: sampling modes per model, latent arithmetic, and the metrics
`gantry evaluate` computes (the worker's registry has their code)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from gantry.jobs.errors import InvalidInput
from gantry.jobs.improved_specs import POINT_DATASETS
from gantry.jobs.spec_base import MAX_SEED, CodeWalk, Strict

# Which sampling modes each model takes (beyond plain `--count` images). One line per model.
SAMPLE_MODES: dict[str, set[str]] = {
    "dcgan": {"interpolate", "arithmetic", "prompts"},  # prompts: with `labels` only, plain sampling
    "text2img": {"prompts", "interpolate", "arithmetic"},
}
# Models whose prompts name label values (`gantry.jobs.label_prompts`) rather than captions: a dcgan
# trained with `labels` (AC-GAN).
LABEL_PROMPT_MODELS: set[str] = {"dcgan"}
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
    # Its values depend on how G reads codes between two values: with `--code-walk` they are recorded
    # as name_<reading> (interpolation_validity_slide), beside the train job's own reading's.
    walks: bool = False

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
        walks=True,
    ),
    "interpolation_validity": MetricInfo(
        "share of frames of spherical walks between random seeds that classify confidently as one shape "
        "of one colour (no ghost of two); the same over the end frames (_ends) and the frames between (_inner)",
        models=("dcgan", "text2img"),
        datasets=("shapes",),
        walks=True,
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


class _ReadsCodes(Strict):
    """`--code-walk`: read a dcgan or text2img checkpoint's codes between two values another way than
    it was trained to (training does not depend on it: z's codes are one-hot there)."""

    code_walk: CodeWalk | None = Field(
        None,
        description="dcgan with latent_codes or labels, text2img with code_words: how G reads z's codes between "
        "two values on latent walks and arithmetic (blend, switch or slide, as the train option); default: the "
        "train job's",
    )


class SampleSpec(_ReadsCodes):
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

    def check_model(self, model: str, *, labelled: bool = False) -> None:
        """Raise InvalidInput when the model cannot sample this way (`labelled`: the train job was
        conditioned on labels, whose values a dcgan's prompts name)."""
        if model in LABEL_PROMPT_MODELS and self.prompts:
            if not labelled:
                raise InvalidInput(
                    "prompts",
                    f"{model} takes --prompt only when trained with --set labels=... (it then names label "
                    'values, e.g. --prompt "large red circle"); this job has no labels',
                )
            if self.interpolate or self.arithmetic:
                mode = "interpolate" if self.interpolate else "arithmetic"
                raise InvalidInput(
                    "prompts", f"{model} prompts draw plain samples; --{mode} walks the latents as they are"
                )
        if model in INPUT_MODELS and not self.input:
            raise InvalidInput("input", f"{model} jobs super-resolve images: pass --input PATH_OR_URI")
        allowed = SAMPLE_MODES.get(model, set()) | ({"input"} if model in INPUT_MODELS else set())
        for mode in sorted(self.modes - allowed):
            takes = ", ".join(sorted(allowed)) or "only --count and --seed"
            raise InvalidInput(mode, f"{model} jobs do not take --{mode.rstrip('s')}; they take {takes}")
        if self.interpolate and self.arithmetic:
            raise InvalidInput("arithmetic", "choose --interpolate or --arithmetic, not both")
        if self.code_walk and not (self.interpolate or self.arithmetic):
            raise InvalidInput(
                "code_walk",
                "--code-walk reads latents between codes: use it with --interpolate or --arithmetic",
            )
        if model in PROMPT_MODELS and not self.modes:
            raise InvalidInput(
                "prompts",
                f'{model} jobs draw what a caption says: pass --prompt TEXT, e.g. --prompt "a small red circle"',
            )


class EvaluateSpec(_ReadsCodes):
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
