"""What the API hands out: the `status --json` contract (docs/architecture.md, "Job states")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class Progress(BaseModel):
    step: int
    total_steps: int


class ArtifactView(BaseModel):
    key: str
    uri: str
    kind: str
    bytes: int


class JobView(BaseModel):
    id: str
    kind: str
    model: str
    state: str
    attempt: int
    progress: Progress
    metrics: dict[str, float]
    error: str | None
    artifacts: list[ArtifactView]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_job_id: str | None
    spec: dict[str, Any]


class MetricPoint(BaseModel):
    name: str
    step: int
    value: float
    time: datetime
