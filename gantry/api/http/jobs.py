"""/v1/jobs: submit, list, read, cancel; /v1/models: what can be trained (docs/api.md, "Routes")."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gantry.api.http.deps import BODY, ERRORS, INVALID, NOT_FOUND, ROW_ID_MAX, Svc
from gantry.api.http.models import EvaluateRequest, JobRequest, SampleRequest, TrainRequest
from gantry.api.schemas import JobPage, JobView, LogLine, MetricPoint
from gantry.jobs.specs import MODELS, option_help
from gantry.jobs.store import KINDS, STATES

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post(
    "/jobs", status_code=201, response_model=JobView, tags=["jobs"], responses=INVALID | NOT_FOUND | BODY
)
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
    # The allowed values are in the schema (enum) and checked by the service, with its message.
    state: Annotated[str | None, Query(json_schema_extra={"enum": list(STATES)})] = None,
    kind: Annotated[str | None, Query(json_schema_extra={"enum": list(KINDS)})] = None,
    model: Annotated[str | None, Query(json_schema_extra={"enum": sorted(MODELS)})] = None,
    tag: Annotated[str | None, Query(description="jobs carrying this tag")] = None,
    parent: Annotated[str | None, Query(description="the sample and evaluate jobs of this train job")] = None,
    since: Annotated[str | None, Query(description="created at or after: an ISO date or time (UTC)")] = None,
    until: Annotated[
        str | None, Query(description="created before: an ISO date (that whole day) or time")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(description="the `next_cursor` of the page before")] = None,
) -> JobPage:
    """Your jobs (every owner's for an admin), newest first, a page at a time."""
    return svc.list_jobs(
        state=state, kind=kind, model=model, tag=tag, parent=parent, since=since, until=until,
        limit=limit, cursor=cursor,
    )  # fmt: skip


@router.get("/jobs/{job_id}", response_model=JobView, tags=["jobs"], responses=NOT_FOUND)
def get_job(svc: Svc, job_id: str) -> Response:
    """One job: state, progress, latest metrics, error, artifacts."""
    # Serialised once by the model it is (FastAPI would validate it again against response_model).
    return Response(svc.get(job_id).model_dump_json(), media_type="application/json")


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


@router.get("/jobs/{job_id}/logs", response_model=list[LogLine], tags=["jobs"], responses=NOT_FOUND)
def job_logs(
    svc: Svc,
    job_id: str,
    since_id: Annotated[
        int | None, Query(ge=0, le=ROW_ID_MAX, description="only the lines after this line id")
    ] = None,
) -> list[LogLine]:
    """The job's log: its own lines and every infrastructure error it met, oldest first."""
    return svc.logs(job_id, since_id=since_id)


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    steps: int | None = Field(None, description="a new total of steps; default: the job's own")


@router.post(
    "/jobs/{job_id}/resume", response_model=JobView, tags=["jobs"], responses=NOT_FOUND | INVALID | BODY
)
def resume(svc: Svc, job_id: str, body: Annotated[ResumeRequest | None, Body()] = None) -> JobView:
    """Continue a cancelled or failed job (a train job from its last checkpoint) as a new attempt."""
    return svc.resume(job_id, steps=body.steps if body else None)


@router.delete("/jobs/{job_id}", status_code=204, tags=["jobs"], responses=NOT_FOUND | INVALID)
def delete(
    svc: Svc,
    job_id: str,
    recursive: Annotated[bool, Query(description="a train job's sample and evaluate jobs too")] = False,
) -> Response:
    """Remove a finished job: its rows and its objects (cancel a queued or running one first)."""
    svc.delete(job_id, recursive=recursive)
    return Response(status_code=204)
