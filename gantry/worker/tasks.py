"""Celery tasks: thin. Load the job, claim it, call the work function, record the outcome — all
of which `run_job` does; the task adds the retries: of a job handed back after a transient
infrastructure error (with its lease token, so it goes on as the same attempt), and a later look
at a job that another live worker holds. The job's own errors are recorded by `run_job`, never
retried."""

from __future__ import annotations

import random

from celery import Task, shared_task

from gantry.jobs.store import JobBusy
from gantry.worker.run import RetryLater, run_job

# No autoretry and no retry limit: run_job decides what is transient, and bounds its retries by
# time (GANTRY_RETRY_SECONDS) rather than by count; a count ran out while S3 was down and left
# jobs `running` with their message acknowledged.
OPTIONS = {"bind": True, "acks_late": True, "max_retries": None}


def retry_countdown(retries: int, *, base: float = 5.0, cap: float = 300.0) -> float:
    """Seconds before the `retries`-th retry of a handed-back job: exponential, with jitter."""
    return min(cap, base * 2**retries) * random.uniform(0.5, 1.0)


def _run(task: Task, job_id: str, token: int | None = None, outage_since: float | None = None) -> None:
    try:
        run_job(job_id, token=token, outage_since=outage_since)
    except JobBusy as busy:
        if task.request.is_eager:
            raise
        raise task.retry(
            countdown=busy.retry_in + 1, kwargs={"token": token, "outage_since": outage_since}
        ) from None
    except RetryLater as later:
        if task.request.is_eager:
            raise
        raise task.retry(
            countdown=retry_countdown(task.request.retries or 0),
            kwargs={"token": later.token, "outage_since": later.since},
        ) from None


@shared_task(name="gantry.train", **OPTIONS)
def train(self: Task, job_id: str, token: int | None = None, outage_since: float | None = None) -> None:
    _run(self, job_id, token, outage_since)


@shared_task(name="gantry.sample", **OPTIONS)
def sample(self: Task, job_id: str, token: int | None = None, outage_since: float | None = None) -> None:
    _run(self, job_id, token, outage_since)


@shared_task(name="gantry.evaluate", **OPTIONS)
def evaluate(self: Task, job_id: str, token: int | None = None, outage_since: float | None = None) -> None:
    _run(self, job_id, token, outage_since)
