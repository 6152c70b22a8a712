"""/v1/jobs: submit, list, read, cancel; /v1/models: what can be trained (docs/api.md, "Routes")."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from gantry.api.http.deps import ERRORS, INVALID, NOT_FOUND, Svc
from gantry.api.http.models import EvaluateRequest, JobRequest, SampleRequest, TrainRequest
from gantry.api.schemas import JobPage, JobView, MetricPoint
from gantry.jobs.specs import MODELS, option_help
from gantry.jobs.store import STATES

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post("/jobs", status_code=201, response_model=JobView, tags=["jobs"], responses=INVALID | NOT_FOUND)
def submit(svc: Svc, body: Annotated[JobRequest, Body()]) -> JobView:
    """Submit a train, sample or evaluate job; the answer is the job as `gantry status --json` shows it."""
    if isinstance(body, TrainRequest):
        fields = body.model_dump(exclude={"kind", "model", "options"})
        return svc.submit_train(body.model, options=body.options, **fields)
    if isinstance(body, SampleRequest):
        return svc.submit_sample(body.parent_job_id, **body.model_dump(exclude={"kind", "parent_job_id"}))
    assert isinstance(body, EvaluateRequest)
    return svc.submit_evaluate(body.parent_job_id, **body.model_dump(exclude={"kind", "parent_job_id"}))


@router.get("/jobs", response_model=JobPage, tags=["jobs"], responses=INVALID)
def list_jobs(
    svc: Svc,
    state: Annotated[str | None, Query(description=f"one of {', '.join(STATES)}")] = None,
    kind: Annotated[str | None, Query(description="train, sample or evaluate")] = None,
    model: Annotated[str | None, Query(description="a model name")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="the `next_cursor` of the page before")] = None,
) -> JobPage:
    """Your jobs (every job for an admin), newest first, a page at a time."""
    jobs = svc.list_jobs(state=state, limit=limit)
    return JobPage(
        jobs=[j for j in jobs if (kind is None or j.kind == kind) and (model is None or j.model == model)]
    )


@router.get("/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=NOT_FOUND)
def get_job(svc: Svc, job_id: str) -> JobView:
    """One job: state, progress, latest metrics, error, artifacts."""
    return svc.get(job_id)


@router.get("/jobs/{job_id}/metrics", response_model=list[MetricPoint], tags=["jobs"], responses=NOT_FOUND)
def job_metrics(
    svc: Svc,
    job_id: str,
    name: Annotated[str | None, Query(description="one series, e.g. loss_D")] = None,
    since_step: Annotated[int | None, Query(ge=0, description="points after this step")] = None,
) -> list[MetricPoint]:
    """Every recorded metric point of the job, in step order."""
    points = svc.metrics(job_id)
    return [
        p for p in points if (name is None or p.name == name) and (since_step is None or p.step > since_step)
    ]


@router.post("/jobs/{job_id}/cancel", response_model=JobView, tags=["jobs"], responses=NOT_FOUND)
def cancel(svc: Svc, job_id: str) -> JobView:
    """Cancel a job: a queued one at once, a running one at its next progress check."""
    return svc.cancel(job_id)


class ModelOption(BaseModel):
    name: str
    default: str
    allowed: str
    meaning: str
    section: str


@router.get("/models", tags=["models"])
def models(svc: Svc) -> dict[str, list[ModelOption]]:
    """Every model and its `options` (default, allowed values, meaning), as `gantry options` shows."""
    return {
        name: [ModelOption(**dataclasses.asdict(row)) for row in option_help(name)] for name in sorted(MODELS)
    }
