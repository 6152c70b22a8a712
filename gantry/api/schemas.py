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
    name: str | None = None
    tags: list[str] = []


class JobPage(BaseModel):
    """A page of `list`: newest first; `next_cursor` fetches the next (None: this is the last)."""

    jobs: list[JobView]
    next_cursor: str | None


class LogLine(BaseModel):
    """A line of a job's log (`gantry logs`): its id orders the lines and resumes a follow."""

    id: int
    attempt: int
    time: datetime
    level: str
    message: str


class MetricPoint(BaseModel):
    name: str
    step: int
    value: float
    time: datetime


class TokenView(BaseModel):
    id: str
    owner: str
    admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    token: str | None = None  # only when it is created: it is never stored
