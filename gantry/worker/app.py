"""The Celery app a worker process serves: `celery -A gantry.worker.app worker -Q gantry.gpu`.

`gantry worker` wraps that command. Whichever starts it, each worker also:
- runs the reaper (gantry.jobs.requeue) in a thread of its main process once it is ready: jobs
  whose holder died are queued again, lost messages sent again, one reaper at a time;
- stops gracefully on SIGTERM (gantry.worker.lifecycle): the running job is checkpointed and
  handed back within GANTRY_STOP_SECONDS, for another worker to resume from that step;
- imports what a job needs (torch, the phases, the S3 client) in its main process before Celery
  forks the pool, so that every pool process starts warm (see PRELOAD), and each pool process
  makes its store connections as it starts (gantry.worker.run.warm_connections);
- writes the stack of every thread of a process to its log on SIGUSR2 (`kill -USR2 PID`, or the
  whole group): what a stuck worker is doing, even one stuck inside a C call."""

from __future__ import annotations

import faulthandler
import importlib
import signal
import socket
import sys
from typing import Any

from celery import signals

from gantry.jobs.queue import make_celery
from gantry.jobs.settings import get_settings

app = make_celery(get_settings())


# What a job imports before its first step. Imported in a pool process, this took 2 to 15 s (torch
# alone, on a busy machine; the first data set read 2 s more) in every new one: the first, and the
# one Celery starts after a job's process died (killed, out of memory). Meanwhile the worker held a
# job's message without having claimed the job, and a job taken over waited that long to resume.
# Imported once in the main process, before the pool forks, they are shared by every pool process.
# Importing them starts no thread and does not initialise CUDA, so forking after it is safe.
PRELOAD = (
    "torch",
    "torch._dynamo",  # imported by an optimizer's constructor: 1.2 s of a new pool process's first job
    "boto3",
    "boto3.s3.transfer",
    "botocore.config",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sklearn.datasets",  # the built-in data sets
    "sklearn.svm",  # the digits classifier of the metrics
    "gantry.worker.train",
    "gantry.worker.sample",
    "gantry.worker.evaluate",
    "gantry.worker.checkpoints",
    "gantry.worker.data",
    "gantry.worker.gan.loop",
    "gantry.worker.gan.checkpoint",
    "gantry.worker.gan.sampler",
    "gantry.worker.metrics",
)


def dump_stacks_on_sigusr2() -> None:
    """SIGUSR2: every thread's stack to this process's stderr (the worker's log), written by the
    interpreter's C handler, so even a thread stuck in a C call (a lock, a socket) shows where."""
    if sys.__stderr__ is not None:
        faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)


@signals.worker_init.connect
def dump_stacks_of_the_main_process(sender: Any = None, **_: Any) -> None:
    if sender is not None and getattr(sender, "app", app) is not app:
        return  # another app's worker (a test's own) in this process
    dump_stacks_on_sigusr2()


@signals.worker_init.connect
def preload_job_modules(sender: Any = None, **_: Any) -> None:
    if sender is not None and getattr(sender, "app", app) is not app:
        return  # another app's worker (a test's own) in this process
    for name in PRELOAD:
        importlib.import_module(name)


@signals.worker_ready.connect
def start_reaper(sender: Any = None, **_: Any) -> None:
    from gantry.jobs.requeue import Reaper

    if sender is not None and getattr(sender, "app", app) is not app:
        return  # another app's worker (a test's own) in this process
    Reaper(get_settings(), app, host=socket.gethostname()).start()


@signals.worker_process_init.connect
def handle_sigterm_in_pool_process(**_: Any) -> None:
    from gantry.worker.lifecycle import install_pool_handler
    from gantry.worker.run import warm_connections

    install_pool_handler()
    dump_stacks_on_sigusr2()  # billiard resets SIGUSR2 in a new pool process
    warm_connections()


@signals.worker_shutting_down.connect
def stop_running_jobs(**_: Any) -> None:
    from gantry.worker.lifecycle import forward_stop

    forward_stop()
