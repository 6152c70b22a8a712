"""Request bodies of the HTTP API. They name the CLI's fields; the job specs (gantry.jobs.specs) are
what validates them, so the API and the CLI refuse the same input with the same messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from gantry.jobs.specs import MODELS

_MODEL_NAMES: list[JsonValue] = [*sorted(MODELS)]
_Tag = Annotated[str, Field(min_length=1, max_length=64)]


class _Request(BaseModel):
    # strict: JSON `false` or "7" is not a seed or a step count (lax mode would read 0 and 7).
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(None, description="a name for the job, shown by status and list")
    tags: list[_Tag] = Field(default_factory=list, description="tags to find the job by (`list?tag=`)")


class TrainRequest(_Request):
    kind: Literal["train"]
    # The enum documents the names; the job specs check them (the CLI's message, listing them).
    model: str = Field(
        description="a model name: GET /v1/models lists them", json_schema_extra={"enum": _MODEL_NAMES}
    )
    dataset: str | None = Field(
        None, description="built-in name, one of your uploads, or an allowed s3:// URI"
    )
    steps: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    seed: int | None = None
    checkpoint_every: int | None = None
    sample_every: int | None = None
    init_from: str | None = Field(None, description="a train job whose G and D weights this one starts from")
    options: dict[str, Any] = Field(default_factory=dict, description="model options, as `--set KEY=VALUE`")


class SampleRequest(_Request):
    kind: Literal["sample"]
    parent_job_id: str = Field(description="the train job whose checkpoint to sample")
    checkpoint: str | None = Field(None, description="latest, best or a step number")
    count: int | None = None
    format: Literal["png", "npz", "tar"] | None = Field(
        None, description="plain samples: png (a file each), npz or tar (shards of 10,000)"
    )
    seed: int | None = None
    interpolate: str | None = Field(None, description="SEED_A:SEED_B")
    frames: int | None = None
    interpolation: Literal["slerp", "linear"] | None = None
    arithmetic: str | None = Field(None, description='e.g. "3,17,42 - 5,8 + 11,12"')
    prompts: list[str] = Field(default_factory=list)
    input: str | None = Field(
        None, description="for super-resolution: one of your uploads or an allowed s3:// URI"
    )
    code_walk: str | None = None


class EvaluateRequest(_Request):
    kind: Literal["evaluate"]
    parent_job_id: str = Field(description="the train job whose checkpoint to measure")
    checkpoint: str | None = None
    metrics: list[str] = Field(default_factory=list, description="empty: every metric that applies")
    seed: int | None = None
    code_walk: str | None = None
    samples: int | None = Field(
        None, description="generated images for fid, kid, inception_score, precision_recall"
    )


JobRequest = Annotated[TrainRequest | SampleRequest | EvaluateRequest, Field(discriminator="kind")]


class Problem(BaseModel):
    """Every error answer: `detail` says what went wrong (a 422 names the field)."""

    detail: Any
