"""Every object key gantry writes, and the checkpoint manifest: docs/architecture.md, "Object layout".

Keys are relative to the storage root (`GANTRY_STORAGE_URL`). The API reads what the worker writes
through these functions only, so the layout is spelled once:

    jobs/<job_id>/spec.json
    jobs/<job_id>/checkpoints/step-00001200.pt      one file: weights, optimizers, RNG states, step, spec
    jobs/<job_id>/checkpoints/latest.json           the manifest, written after the checkpoint it names
    jobs/<job_id>/samples/step-00001200.png         fixed-noise grid while training
    jobs/<job_id>/images/000000.png ... grid.png    what a sample job made
    jobs/<job_id>/eval/<name>                       an evaluation's figures
    jobs/<job_id>/metrics.jsonl
"""

from __future__ import annotations

import builtins
from datetime import datetime

from pydantic import BaseModel, ConfigDict


def job_prefix(job_id: str) -> str:
    """The folder of everything job `job_id` wrote (no trailing slash)."""
    return f"jobs/{job_id}"


def spec_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}/spec.json"


def checkpoint_key(job_id: str, step: int) -> str:
    return f"{job_prefix(job_id)}/checkpoints/step-{step:08d}.pt"


def manifest_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}/checkpoints/latest.json"


def samples_key(job_id: str, step: int) -> str:
    return f"{job_prefix(job_id)}/samples/step-{step:08d}.png"


def image_key(job_id: str, name: str) -> str:
    """A sample job's output file `name` (000000.png, grid.png, prompts.json, ...)."""
    return f"{job_prefix(job_id)}/images/{name}"


def eval_key(job_id: str, name: str) -> str:
    return f"{job_prefix(job_id)}/eval/{name}"


def metrics_key(job_id: str) -> str:
    return f"{job_prefix(job_id)}/metrics.jsonl"


class Manifest(BaseModel):
    """`checkpoints/latest.json`: the newest checkpoint of a train job. It carries the step, so no
    reader parses the step out of a key."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    step: int
    key: str
    uri: str
    bytes: int
    time: datetime

    def dump(self) -> builtins.bytes:
        return self.model_dump_json().encode()

    @classmethod
    def parse(cls, data: builtins.bytes) -> Manifest:
        """Read a manifest (any manifest gantry wrote: they have always carried these fields)."""
        return cls.model_validate_json(data)
