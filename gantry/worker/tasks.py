"""Celery tasks: thin. Load the job, claim it, call the work function, record the outcome — all
of which `run_job` does; the task adds retries for transient infrastructure errors only, and
re-checks later a job that another live worker holds."""

from __future__ import annotations

from celery import Task, shared_task

from gantry.jobs.errors import ServiceUnavailable
from gantry.jobs.store import JobBusy
from gantry.worker.run import run_job

OPTIONS = {
    "bind": True,
    "autoretry_for": (ServiceUnavailable, ConnectionError),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "max_retries": 8,
    "acks_late": True,
}


def _run(task: Task, job_id: str) -> None:
    try:
        run_job(job_id)
    except JobBusy as busy:
        if task.request.is_eager:
            raise
        raise task.retry(countdown=busy.retry_in + 1, max_retries=None) from None


@shared_task(name="gantry.train", **OPTIONS)
def train(self: Task, job_id: str) -> None:
    _run(self, job_id)


@shared_task(name="gantry.sample", **OPTIONS)
def sample(self: Task, job_id: str) -> None:
    _run(self, job_id)


@shared_task(name="gantry.evaluate", **OPTIONS)
def evaluate(self: Task, job_id: str) -> None:
    _run(self, job_id)
