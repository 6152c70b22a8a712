"""Sample and evaluate job specs, and latent arithmetic. What a model can sample and which metrics
apply are asked of its train spec (`TrainSpec.check_sample`, `TrainSpec.resolve_metrics`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gantry.jobs.errors import InvalidInput
from gantry.jobs.specs.base import MAX_SEED, CodeWalk, Conflict, SampleMode, Strict

_SEEDS_TERM = re.compile(r"^\d+(\s*,\s*\d+)*$")
_STEP = re.compile(r"[0-9]{1,12}")  # ASCII only: "²".isdigit() is True, and int("²") fails
_SEED = re.compile(r"[0-9]+")


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


class _FromCheckpoint(Strict):
    """A job that reads a train job's checkpoint; `--code-walk` reads its codes between two values
    another way than it was trained to (training does not depend on it: z's codes are one-hot there)."""

    checkpoint: str = Field(
        "latest",
        description="latest, best (by the run's eval metric: trained with eval_every) or a step number",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)
    code_walk: CodeWalk | None = Field(
        None,
        description="how G reads z's codes between two values on latent walks and arithmetic (blend, switch "
        "or slide, as the train option); default: the train job's",
    )

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_ref(cls, value: str) -> str:
        # Whether the train job has it (best: it trained with eval_every) is the service's to check.
        if value not in ("latest", "best") and not _STEP.fullmatch(value):
            raise ValueError("must be latest, best or a step number")
        return value


MAX_SAMPLES = 1_000_000  # plain samples of one job (streamed: see gantry.worker.sample)
MAX_OTHER = 10_000  # images of the other sampling modes, made whole in memory


class SampleSpec(_FromCheckpoint):
    kind: Literal["sample"] = "sample"
    count: int = Field(
        64,
        ge=1,
        le=MAX_SAMPLES,
        description=f"plain samples: up to {MAX_SAMPLES:,}; else up to {MAX_OTHER:,}",
    )
    format: Literal["png", "npz", "tar"] = Field(
        "png",
        description="plain samples: png (a file each), npz (uint8 arrays in shards of 10,000) or tar (the PNGs in "
        "shards of 10,000)",
    )
    interpolate: str | None = Field(None, description="SEED_A:SEED_B")
    frames: int = Field(8, ge=2, le=256)
    interpolation: Literal["slerp", "linear"] = "slerp"
    arithmetic: str | None = None
    prompts: list[str] = Field(default_factory=list, max_length=64)
    input: str | None = Field(None, min_length=1, description="an image, folder or prefix (path or URI)")

    @field_validator("interpolate")
    @classmethod
    def _seed_pair(cls, value: str | None) -> str | None:
        if value is not None:
            a, sep, b = value.partition(":")
            if not (sep and _SEED.fullmatch(a.strip()) and _SEED.fullmatch(b.strip())):
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

    @model_validator(mode="after")
    def _bulk_is_plain(self) -> SampleSpec:
        if self.modes and self.count > MAX_OTHER:
            raise Conflict("count", f"at most {MAX_OTHER:,} with {', '.join(sorted(self.modes))}")
        if self.modes and self.format != "png":
            raise Conflict(
                "format", f"{self.format} is for plain samples, not with {', '.join(sorted(self.modes))}"
            )
        return self

    @property
    def modes(self) -> set[SampleMode]:
        """The sampling modes this spec asks for."""
        asked: dict[SampleMode, object] = {
            "interpolate": self.interpolate,
            "arithmetic": self.arithmetic,
            "prompts": self.prompts,
            "input": self.input,
        }
        return {mode for mode, value in asked.items() if value}

    def total_images(self) -> int:
        """How many images the job writes: its progress total."""
        if self.interpolate:
            return self.frames * max(1, len(self.prompts))
        if self.arithmetic:  # each term's exemplars and average, then the results
            return self.count + sum(len(seeds) + 1 for _, seeds in parse_arithmetic(self.arithmetic))
        return self.count * max(1, len(self.prompts))


class EvaluateSpec(_FromCheckpoint):
    kind: Literal["evaluate"] = "evaluate"
    metrics: list[str] = Field(default_factory=list, description="empty: every metric that applies")
    samples: int = Field(
        10_000,
        ge=16,
        le=100_000,
        description="generated images the sample-based metrics (fid, kid, inception_score, precision_recall) "
        "compare with the training images",
    )
