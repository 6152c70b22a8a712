"""Celery tasks: thin. Load the job, claim it, call the work function, record the outcome — all
of which `run_job` does; the task adds the retries of a job handed back after a transient
infrastructure error (with its lease token, so it goes on as the same attempt), sends the message
of a job handed back by a stopping worker, and arms the stop watchdog (gantry.worker.lifecycle).
A message for a job that another live worker holds (a duplicate: Redis redelivered it, or the
reaper sent it again) is dropped: should that holder die, the reaper queues the job again. A
worker whose code is not the database's schema revision (a newer gantry ran `gantry db upgrade`)
refuses the job and sends its message back with backoff, for a worker of the new version, for
GANTRY_RETRY_SECONDS; then leaves it to the reaper, the job still queued. The job's own errors are
recorded by `run_job`, never retried."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task, shared_task

from gantry.jobs.errors import WrongSchema
from gantry.jobs.queue import enqueue
from gantry.jobs.settings import get_settings
from gantry.jobs.store import JobBusy
from gantry.worker.lifecycle import SHUTDOWN
from gantry.worker.run import RetryLater, hand_back_late, run_job

log = logging.getLogger(__name__)

# No autoretry and no retry limit: run_job decides what is transient, and bounds its retries by
# time (GANTRY_RETRY_SECONDS) rather than by count; a count ran out while S3 was down and left
# jobs `running` with their message acknowledged.
OPTIONS = {"bind": True, "acks_late": True, "max_retries": None}


def retry_countdown(retries: int, *, base: float = 5.0, cap: float = 300.0) -> float:
    """Seconds before the `retries`-th retry of a handed-back job: exponential, with jitter."""
    return min(cap, base * 2**retries) * random.uniform(0.5, 1.0)


def _run(
    task: Task,
    job_id: str,
    *,
    token: int | None = None,
    outage_since: float | None = None,
    refused_since: float | None = None,
) -> None:
    """Run job `job_id`. A retried task's message carries more than the job id: `token`, the lease
    token of the attempt it goes on with; `outage_since`, when the outage that handed the job back
    began; `refused_since`, when a worker first refused it for the database's schema."""
    settings = get_settings()
    send = None if task.request.is_eager else (lambda kind, job: enqueue(task.app, kind, job))
    try:
        with SHUTDOWN.running(
            stop_seconds=settings.stop_seconds,
            on_deadline=lambda: hand_back_late(job_id, settings=settings, send=send),
        ):
            run_job(job_id, settings=settings, token=token, outage_since=outage_since, send=send)
    except JobBusy as busy:
        if task.request.is_eager:
            raise
        log.info("job %s: a duplicate message, dropped (%s)", job_id, busy)
    except WrongSchema as wrong:
        if task.request.is_eager:
            raise
        # Not an outage of the job's (`outage_since` bounds those): a refusal of this worker's.
        refused_since = refused_since or time.time()
        if time.time() - refused_since >= settings.retry_seconds:
            log.error("job %s: not run here, left queued for the reaper to send again: %s", job_id, wrong)
            return
        log.warning("job %s: refused and sent back to the queue: %s", job_id, wrong)
        raise task.retry(
            countdown=retry_countdown(task.request.retries or 0),
            kwargs={"token": token, "outage_since": outage_since, "refused_since": refused_since},
        ) from None
    except RetryLater as later:
        if task.request.is_eager:
            raise
        # Within half a lease: the retry's claim renews the row's heartbeat before the reaper
        # would take the job, left `running` meanwhile, for a dead one.
        raise task.retry(
            countdown=min(retry_countdown(task.request.retries or 0), settings.lease_seconds / 2),
            kwargs={"token": later.token, "outage_since": later.since},
        ) from None


@shared_task(name="gantry.train", **OPTIONS)
def train(self: Task, job_id: str, **retried: Any) -> None:
    _run(self, job_id, **retried)


@shared_task(name="gantry.sample", **OPTIONS)
def sample(self: Task, job_id: str, **retried: Any) -> None:
    _run(self, job_id, **retried)


@shared_task(name="gantry.evaluate", **OPTIONS)
def evaluate(self: Task, job_id: str, **retried: Any) -> None:
    _run(self, job_id, **retried)
