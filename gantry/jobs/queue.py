"""Celery configuration and task names. The message carries the job id only: the SQL row is the
source of truth, not a result backend."""

from __future__ import annotations

import base64
import importlib.util
import json

from celery import Celery

from gantry.jobs.errors import ServiceUnavailable
from gantry.jobs.settings import Settings

QUEUE = "gantry.gpu"
TASKS = {"train": "gantry.train", "sample": "gantry.sample", "evaluate": "gantry.evaluate"}


def make_celery(settings: Settings) -> Celery:
    """The Celery app for `settings`. Without a broker, `run_in_process` runs its tasks eagerly."""
    app = Celery("gantry", broker=settings.broker_url or "memory://", include=["gantry.worker.tasks"])
    app.conf.update(
        task_default_queue=QUEUE,
        task_routes={"gantry.*": {"queue": QUEUE}},
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A training is long and must not be lost: ack after it ends, hand the message back when
        # the worker process dies, and take one job at a time (prefetch 1). Tasks are idempotent:
        # a redelivered train job resumes from its last checkpoint (see claim_job).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Redis redelivers an unacked message after this long: longer than any heartbeat gap, and
        # a job still alive elsewhere is left alone by claim_job.
        broker_transport_options={"visibility_timeout": 3600},
        task_always_eager=settings.embedded,
        task_eager_propagates=True,
    )
    return app


def check_broker(app: Celery, url: str) -> None:
    """Raise ServiceUnavailable (naming the broker, not its password) if it cannot be reached."""
    from kombu.utils.url import maybe_sanitize_url

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        raise ServiceUnavailable(
            "broker", f"cannot reach {maybe_sanitize_url(url)} ({type(exc).__name__})"
        ) from None


def enqueue(app: Celery, kind: str, job_id: str) -> None:
    """Send job `job_id`'s message; ServiceUnavailable (naming the broker, not its password) when
    the broker does not take it after a few quick retries."""
    from kombu.utils.url import maybe_sanitize_url

    try:
        app.send_task(TASKS[kind], args=[job_id], queue=QUEUE, retry=True, retry_policy={"max_retries": 3})
    except Exception as exc:
        url = maybe_sanitize_url(str(app.conf.broker_url or ""))
        raise ServiceUnavailable("broker", f"cannot queue on {url} ({type(exc).__name__})") from None


def waiting_job_ids(app: Celery) -> set[str] | None:
    """The ids of the jobs whose message waits on the queue now (what `gantry requeue` and the
    reaper need not send again); None when the broker cannot be read that way (not Redis). A
    message a worker has already taken is not counted: at worst such a job is sent twice, which a
    claim makes harmless."""
    with app.connection_for_read() as conn:
        if conn.transport.driver_type != "redis":
            return None
        channel = conn.default_channel
        names = {channel._q_for_pri(QUEUE, pri) for pri in channel.priority_steps}
        with channel.conn_or_acquire() as client:
            raw = [message for name in sorted(names) for message in client.lrange(name, 0, -1)]
    ids = set()
    for message in raw:
        try:
            payload = json.loads(message)
            body = payload["body"]
            if payload.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            args = json.loads(body)[0]  # Celery's message protocol 2: [args, kwargs, embed]
            ids.add(str(args[0]))
        except (ValueError, KeyError, IndexError, TypeError):
            continue  # not a gantry message
    return ids


def check_worker_installed() -> None:
    """Embedded mode runs jobs in this process: refuse before anything is recorded when this install
    is the API alone (`pip install gantry`, without the `worker` extra)."""
    try:
        installed = importlib.util.find_spec("torch") is not None
    except ImportError:  # a broken or blocked install counts as none
        installed = False
    if not installed:
        raise ServiceUnavailable(
            "worker",
            "embedded mode (GANTRY_BROKER_URL unset) runs jobs in this process and needs the worker "
            "packages: pip install 'gantry[worker]', or set GANTRY_BROKER_URL to queue jobs for workers",
        )


def run_in_process(app: Celery, kind: str, job_id: str) -> None:
    """Run the task here through Celery's eager path: the wiring test's way from API to task to work
    function. Embedded mode does not use it: it calls the work function itself
    (`gantry.api.service.Service.run_embedded`), with the caller's settings."""
    app.loader.import_default_modules()
    app.tasks[TASKS[kind]].apply(args=[job_id], throw=True)
