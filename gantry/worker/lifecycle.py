"""A worker's graceful stop: SIGTERM (scale-in, preemption, a deploy) checkpoints the running job
and hands it back to the queue within GANTRY_STOP_SECONDS, instead of Celery's warm shutdown
running it to its end.

Celery's main process takes SIGTERM as a warm shutdown: it stops taking messages and waits for the
running tasks. Its `worker_shutting_down` signal (see gantry.worker.app) calls `forward_stop`,
which passes the SIGTERM on to each pool process running a task. In a pool process (Celery resets
SIGTERM there to its default, death), `on_pool_sigterm` turns it into a stop request while a job
runs: the job's `should_stop` turns True, the training loop checkpoints at that step and returns,
and `run_job` hands the job back (queued, same attempt, its message sent again). An idle pool
process still dies of it, as before. A SIGTERM to the whole process group (systemd, `kill -- -PGID`)
reaches the pool process directly and does the same.

Should the job not have handed itself back within GANTRY_STOP_SECONDS (a checkpoint upload that
hangs, a long data download), the watchdog of `Shutdown.running` hands it back without that
checkpoint (attempt + 1, so that the run's later writes are refused) and the pool process exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class Shutdown:
    """This process's stop request, and whether a job runs in it."""

    def __init__(self) -> None:
        # Set by a signal handler, so a plain flag: a handler that set a threading.Event took its
        # lock, and a second SIGTERM (the group's, then the main process's) landing inside it
        # deadlocked the pool process on that lock.
        self._requested = False
        self.busy = False
        # In a pool process: SIGTERM is taken while a job runs, and the process exits once a job
        # was handed back at the deadline (see `running`).
        self.pool_process = False
        self.idle_sigterm: Any = signal.SIG_DFL  # the handler SIGTERM had before: used when idle

    def requested(self) -> bool:
        return self._requested

    def request(self) -> None:
        self._requested = True

    @contextmanager
    def running(self, *, stop_seconds: float, on_deadline: Callable[[], bool]) -> Iterator[None]:
        """While a job runs here. After a stop request, the job has `stop_seconds` to end (hand
        itself back); past that a watchdog thread calls `on_deadline` (True: it handed the job
        back), then ends this process if it is a pool process."""
        done = threading.Event()

        def watch() -> None:
            while not self._requested:  # polled: a signal handler sets it
                if done.wait(0.25):
                    return
            if done.wait(stop_seconds):
                return
            if on_deadline() and self.pool_process:
                logging.shutdown()
                os._exit(1)

        if self.pool_process and threading.current_thread() is threading.main_thread():
            self._take_sigterm()
        self.busy = True
        watchdog = threading.Thread(target=watch, name="gantry-stop-watchdog", daemon=True)
        watchdog.start()
        try:
            yield
        finally:
            self.busy = False
            done.set()

    def _take_sigterm(self) -> None:
        current = signal.getsignal(signal.SIGTERM)
        if current is not on_pool_sigterm:
            self.idle_sigterm = current
            signal.signal(signal.SIGTERM, on_pool_sigterm)


SHUTDOWN = Shutdown()  # the process's own: signals are process-wide


@contextmanager
def renewing(beat: Callable[[], object], *, every: float) -> Iterator[None]:
    """Call `beat` (a heartbeat) every `every` seconds from a thread while the block runs: a long
    step that reports no progress (a data set's download) keeps its lease, so the reaper does not
    take a live job for a dead one. A refused beat (LeaseLost) ends the renewing; the run finds out
    at its own next write. Any other error is tried again next time."""
    from gantry.jobs.errors import LeaseLost

    done = threading.Event()

    def renew() -> None:
        while not done.wait(every):
            try:
                beat()
            except LeaseLost:
                return
            except Exception as exc:
                log.debug("lease renewal failed (%s); tried again", type(exc).__name__)

    thread = threading.Thread(target=renew, name="gantry-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def on_pool_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM in a pool process: a stop request while a job runs; when idle, what it did before
    (billiard's exit, which Celery's cold shutdown relies on)."""
    if SHUTDOWN.busy:
        SHUTDOWN.request()
        return
    previous = SHUTDOWN.idle_sigterm
    if previous == signal.SIG_IGN:
        return
    if callable(previous):
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_pool_handler() -> None:
    """In a pool process (Celery's `worker_process_init`): SIGTERM is taken when a job starts."""
    SHUTDOWN.pool_process = True


def forward_stop() -> None:
    """In the main process, as its shutdown begins: a stop request to every process that runs a
    task (this one itself under the solo or threads pool)."""
    from celery.worker import state

    pids = {request.worker_pid for request in list(state.active_requests) if request.worker_pid}
    for pid in pids:
        if pid == os.getpid():
            SHUTDOWN.request()
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
