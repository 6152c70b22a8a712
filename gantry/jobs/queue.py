"""Celery configuration and task names. The message carries the job id only: the SQL row is the
source of truth, not a result backend."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
        broker_transport_options=transport_options(settings),
        task_always_eager=settings.embedded,
        task_eager_propagates=True,
    )
    return app


def transport_options(settings: Settings) -> dict[str, Any]:
    """Kombu's options for the broker `settings` names.

    The local queue (`gantry serve` without GANTRY_BROKER_URL) is Kombu's filesystem transport: a
    message is a file in `queue_dir/messages`, written by the API and taken by the worker (the
    folder is both its "in" and its "out"); `control` holds its broadcast tables. Created here, as
    the transport needs them to exist, in every process that uses them."""
    if settings.local_queue:
        folders = {name: settings.queue_dir / name for name in ("messages", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["messages"]),
            "data_folder_out": str(folders["messages"]),
            "control_folder": str(folders["control"]),
            "polling_interval": 0.5,  # how soon an idle worker sees a new job
        }
    # Redis redelivers an unacked message after this long: longer than any heartbeat gap, and
    # a job still alive elsewhere is left alone by claim_job.
    return {"visibility_timeout": 3600}


def check_broker(app: Celery, url: str) -> None:
    """Raise ServiceUnavailable (naming the broker, not its password) if it cannot be reached."""
    from kombu.utils.url import maybe_sanitize_url

    folder = app.conf.broker_transport_options.get("data_folder_out")
    if folder is not None:  # the local queue: "reachable" is a folder this process can write to
        if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
            raise ServiceUnavailable("broker", f"the local queue's folder {folder} is not writable")
        return
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
    folder = app.conf.broker_transport_options.get("data_folder_in")
    if folder is not None:
        return _job_ids(_local_messages(Path(folder)))
    with app.connection_for_read() as conn:
        if conn.transport.driver_type != "redis":
            return None
        channel = conn.default_channel
        names = {channel._q_for_pri(QUEUE, pri) for pri in channel.priority_steps}
        with channel.conn_or_acquire() as client:
            return _job_ids(message for name in sorted(names) for message in client.lrange(name, 0, -1))


def taken_job_ids(app: Celery, *, older_than: float) -> set[str]:
    """The ids of the jobs whose message a worker took off the queue more than `older_than`
    seconds ago and has not acknowledged: Kombu's Redis transport keeps such a message in its
    `unacked` hash, with the time it was taken in `unacked_index`, until the worker acks it or,
    if the worker died, until `visibility_timeout` (an hour) restores it. Empty for other brokers."""
    if app.conf.broker_transport_options.get("data_folder_in") is not None:
        return set()  # the local queue: a taken message is gone from the folder
    with app.connection_for_read() as conn:
        if conn.transport.driver_type != "redis":
            return set()
        channel = conn.default_channel
        with channel.conn_or_acquire() as client:
            tags = client.zrangebyscore(channel.unacked_index_key, 0, time.time() - older_than)
            if not tags:
                return set()
            entries = client.hmget(channel.unacked_key, tags)
    raw = []
    for entry in entries:
        try:
            raw.append(json.dumps(json.loads(entry)[0]))  # [message, exchange, routing_key]
        except (TypeError, ValueError, IndexError):
            continue  # acked meanwhile
    return _job_ids(raw)


def _job_ids(raw: Iterable[bytes | str]) -> set[str]:
    """The job ids that gantry's messages among `raw` (Kombu's JSON envelopes) carry."""
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


def _local_messages(folder: Path) -> list[bytes]:
    """The messages waiting in the local queue: Kombu's filesystem transport names each file
    `<time>_<uuid>.<queue>.msg` and holds in it what Redis would hold in its list."""
    raw = []
    for path in folder.glob(f"*.{QUEUE}.msg"):
        try:
            raw.append(path.read_bytes())
        except OSError:
            continue  # a worker took it meanwhile
    return raw


def worker_installed() -> bool:
    """Whether this install can run jobs: `gantry[worker]`, not the API alone (`pip install gantry`)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except ImportError:  # a broken or blocked install counts as none
        return False


def check_worker_installed() -> None:
    """Without a broker jobs run on this machine (embedded mode runs them in this process): refuse
    before anything is recorded when this install is the API alone."""
    if not worker_installed():
        raise ServiceUnavailable(
            "worker",
            "without GANTRY_BROKER_URL jobs run on this machine (embedded mode, or `gantry serve`'s "
            "local worker) and need the worker packages: pip install 'gantry[worker]', or set "
            "GANTRY_BROKER_URL to queue jobs for remote workers",
        )


def run_in_process(app: Celery, kind: str, job_id: str) -> None:
    """Run the task here through Celery's eager path: the wiring test's way from API to task to work
    function. Embedded mode does not use it: it calls the work function itself
    (`gantry.api.service.Service.run_embedded`), with the caller's settings."""
    app.loader.import_default_modules()
    app.tasks[TASKS[kind]].apply(args=[job_id], throw=True)
