"""The Celery app a worker process serves: `celery -A gantry.worker.app worker -Q gantry.gpu`.

`gantry worker` wraps that command. Whichever starts it, each worker also:
- runs the reaper (gantry.jobs.requeue) in a thread of its main process once it is ready: jobs
  whose holder died are queued again, lost messages sent again, one reaper at a time;
- stops gracefully on SIGTERM (gantry.worker.lifecycle): the running job is checkpointed and
  handed back within GANTRY_STOP_SECONDS, for another worker to resume from that step."""

from __future__ import annotations

import socket
from typing import Any

from celery import signals

from gantry.jobs.queue import make_celery
from gantry.jobs.settings import get_settings

app = make_celery(get_settings())


@signals.worker_ready.connect
def start_reaper(sender: Any = None, **_: Any) -> None:
    from gantry.jobs.requeue import Reaper

    if sender is not None and getattr(sender, "app", app) is not app:
        return  # another app's worker (a test's own) in this process
    Reaper(get_settings(), app, host=socket.gethostname()).start()


@signals.worker_process_init.connect
def handle_sigterm_in_pool_process(**_: Any) -> None:
    from gantry.worker.lifecycle import install_pool_handler

    install_pool_handler()


@signals.worker_shutting_down.connect
def stop_running_jobs(**_: Any) -> None:
    from gantry.worker.lifecycle import forward_stop

    forward_stop()
