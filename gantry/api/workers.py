"""`gantry worker`: start Celery worker processes, one per GPU, each taking one job at a time.

This module only launches processes (`celery -A gantry.worker.app worker`); it imports neither
torch nor the worker package."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys

from gantry.jobs import store as db
from gantry.jobs.errors import InvalidInput
from gantry.jobs.queue import enqueue, make_celery
from gantry.jobs.settings import Settings

log = logging.getLogger(__name__)


def visible_gpus(spec: str) -> list[str]:
    """`all` -> every GPU nvidia-smi lists (none without it); `none` -> []; `0,1` -> those ids."""
    spec = spec.strip().lower()
    if spec == "none":
        return []
    if spec == "all":
        if not shutil.which("nvidia-smi"):
            return []
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        return [line.strip() for line in listing.stdout.splitlines() if line.strip()]
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids):
        raise InvalidInput("gpus", f"{spec!r}: use all, none or device ids like 0,1")
    return ids


def requeue_stale_jobs(settings: Settings) -> list[str]:
    """Jobs left `running` by a dead worker go back to the queue (attempt + 1) and resume."""
    sessions = db.connect(settings.database)
    with db.session_scope(sessions) as s:
        stale = db.requeue_stale(s, lease_seconds=settings.lease_seconds)
        kinds = {job_id: db.get_job(s, job_id).kind for job_id in stale}
    app = make_celery(settings)
    for job_id, kind in kinds.items():
        enqueue(app, kind, job_id)
        log.warning("job %s: its worker stopped heartbeating; queued again", job_id)
    return stale


def run_workers(settings: Settings, *, gpus: str, queues: str, loglevel: str) -> int:
    if settings.embedded:
        raise InvalidInput(
            "GANTRY_BROKER_URL",
            "is unset: set it (e.g. redis://127.0.0.1:6379/0) to run workers; "
            "without it jobs run in the process that submits them",
        )
    db.connect(settings.database)  # fail fast, with the `gantry db upgrade` hint, on a bad schema
    for job_id in requeue_stale_jobs(settings):
        print(f"requeued stale job {job_id}", file=sys.stderr)
    devices = visible_gpus(gpus)
    base = [sys.executable, "-m", "celery", "-A", "gantry.worker.app", "worker", "-Q", queues]
    base += ["--concurrency", "1", "--pool", "prefork", "--loglevel", loglevel]
    if not devices:
        os.execv(sys.executable, [*base, "--hostname", "gantry-cpu@%h"])
    procs = [
        subprocess.Popen(
            [*base, "--hostname", f"gantry-gpu{dev}@%h"], env={**os.environ, "CUDA_VISIBLE_DEVICES": dev}
        )
        for dev in devices
    ]

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # Sent to the process group, it asks each worker for its stacks (gantry.worker.app); not an end.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return max(p.wait() for p in procs)
