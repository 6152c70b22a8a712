"""`gantry serve`: the HTTP API under uvicorn and, on one machine, the worker that runs its jobs.

This process only supervises; it never runs a job or a request itself. It starts two children:

- the API: `uvicorn --factory gantry.api.http.app:app_from_env`, with `--workers N` processes;
- a worker: `gantry worker`, the same command an operator runs on a GPU machine, with its log in
  GANTRY_HOME/logs/worker.log. It is restarted when it dies and stopped with SIGTERM (its graceful
  stop: the running job is checkpointed and handed back) when serve stops.

With no GANTRY_BROKER_URL the service is whole on one machine: SQLite (its schema created or
upgraded here, at start), file storage, and the local queue (Kombu's filesystem transport under
GANTRY_HOME/queue, `LOCAL_BROKER_URL`), which both children are given explicitly in their
environment. With GANTRY_BROKER_URL set it is the API in front of that broker, the database and
the storage, and starts a worker only when asked (`--worker`). docs/api.md, "Running the service".
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gantry.jobs.errors import ServiceUnavailable
from gantry.jobs.queue import worker_installed
from gantry.jobs.settings import LOCAL_BROKER_URL, Settings

log = logging.getLogger(__name__)

APP = "gantry.api.http.app:app_from_env"
# Open event streams would hold uvicorn's shutdown forever: it closes them after this long.
GRACEFUL_SECONDS = 10
# A worker that dies again soon after starting is restarted after a growing pause, up to this.
MAX_RESTART_PAUSE = 30.0


@dataclass
class Plan:
    """What `gantry serve` runs, decided from the settings and the flags before anything starts."""

    settings: Settings  # as the children see them
    env: dict[str, str]  # the children's environment
    start_worker: bool
    notes: list[str] = field(default_factory=list)  # printed under the startup lines


def plan(settings: Settings, *, with_worker: bool | None) -> Plan:
    """`with_worker`: None starts a worker exactly when the local queue is used (no broker set).
    Raises ServiceUnavailable when a worker is asked for and this install cannot run one."""
    home = settings.home.resolve()
    env = {**os.environ, "GANTRY_HOME": str(home)}  # one home for every child, whatever their cwd
    notes: list[str] = []
    installed = worker_installed()
    if with_worker and not installed:
        raise ServiceUnavailable("worker", "--worker needs the worker packages: pip install 'gantry[worker]'")
    if settings.broker_url:
        env["GANTRY_BROKER_URL"] = settings.broker_url
        start = bool(with_worker)
    elif installed:
        env["GANTRY_BROKER_URL"] = LOCAL_BROKER_URL  # explicit, for the API and the worker alike
        start = with_worker is not False
        if not start:
            notes.append(
                "no worker: jobs wait in the local queue until `GANTRY_BROKER_URL=" + LOCAL_BROKER_URL
                + f" GANTRY_HOME={home} gantry worker` runs on this machine"
            )  # fmt: skip
    else:
        start = False
        notes.append(
            "this install is the API alone: jobs need `pip install 'gantry[worker]'` for the local "
            "worker, or GANTRY_BROKER_URL and remote `gantry worker` processes; until then a "
            "submission answers 503"
        )
    child = settings.model_copy(update={"home": home, "broker_url": env.get("GANTRY_BROKER_URL")})
    return Plan(settings=child, env=env, start_worker=start, notes=notes)


def prepare_database(settings: Settings) -> str:
    """SQLite (the one-machine default): its schema is created or upgraded now. Any other database
    is upgraded by `gantry db upgrade` (the migration job), and /readyz says when it is behind."""
    if not settings.database.startswith("sqlite"):
        return "schema: `gantry db upgrade`; /readyz reports it"
    from gantry.migrations import upgrade

    upgrade(settings.database)
    return "schema created or upgraded at start"


def startup_lines(p: Plan, *, host: str, port: int, api_workers: int, database_note: str) -> list[str]:
    from kombu.utils.url import maybe_sanitize_url

    from gantry.jobs.store import describe_url

    s = p.settings
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{shown}:{port}/"
    where = " (listening on every interface)" if shown != host else ""
    lines = [
        f"gantry serve: open {url}{where}; API docs at {url}docs",
        f"  API       {api_workers} uvicorn worker process{'es' if api_workers > 1 else ''}",
        f"  database  {describe_url(s.database)} ({database_note})",
        f"  storage   {s.storage}",
    ]
    if s.local_queue:
        lines.append(
            f"  broker    {s.broker_url}: the local queue in {s.queue_dir} (GANTRY_BROKER_URL unset)"
        )
    elif s.broker_url:
        lines.append(f"  broker    {maybe_sanitize_url(s.broker_url)}")
    else:
        lines.append("  broker    none")
    if p.start_worker:
        lines.append(f"  worker    `gantry worker` runs beside the API; its log: {worker_log(s)}")
    elif s.broker_url and not s.local_queue:
        lines.append(
            "  worker    none here: remote `gantry worker` processes run the jobs (--worker starts one)"
        )
    lines += [f"  note      {note}" for note in p.notes]
    lines.append(f"  tokens    GANTRY_HOME={s.home} gantry token create --owner NAME")
    return lines


def worker_log(settings: Settings) -> Path:
    return settings.home / "logs" / "worker.log"


def _raise_open_files() -> None:
    """Every open connection (an event stream is one) is a file descriptor of an API process: the
    soft limit, often 1024, is raised to the hard one, for serve and so for its children."""
    with contextlib.suppress(Exception):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _die_with_parent() -> None:
    """In a child, before exec: on Linux it gets SIGTERM should serve itself be killed (SIGKILL gives
    serve no chance to stop it), so no API is left holding the port and no worker runs unwatched."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen[bytes]:
    # Its own session: a Ctrl-C at the terminal reaches serve only, which stops each child its way.
    return subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)  # type: ignore[call-overload, no-any-return]


def _wait(proc: subprocess.Popen[bytes] | None, name: str, *, within: float) -> None:
    """Wait for a child sent SIGTERM; SIGKILL to its whole session after `within` seconds."""
    if proc is None:
        return
    try:
        proc.wait(within)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0fs; killed", name, within)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    api_workers: int,
    with_worker: bool | None,
    echo: Callable[[str], None],
    access_log: bool = True,
) -> int:
    """Start the API (and the worker), supervise them until SIGTERM or Ctrl-C, stop them; the exit
    status is the API's when it ends by itself."""
    p = plan(settings, with_worker=with_worker)
    _raise_open_files()
    database_note = prepare_database(p.settings)
    for line in startup_lines(p, host=host, port=port, api_workers=api_workers, database_note=database_note):
        echo(line)
    echo(
        "Ctrl-C or SIGTERM stops the API and the worker (its running job is checkpointed and handed back)."
        if p.start_worker
        else "Ctrl-C or SIGTERM stops the API."
    )

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    api = _start(
        [sys.executable, "-m", "uvicorn", APP, "--factory", "--host", host, "--port", str(port),
         "--workers", str(api_workers), "--timeout-graceful-shutdown", str(GRACEFUL_SECONDS),
         *([] if access_log else ["--no-access-log"])],
        p.env,
    )  # fmt: skip
    worker: subprocess.Popen[bytes] | None = None
    started_at, pause, restart_at = 0.0, 1.0, 0.0
    log_path = worker_log(p.settings)
    try:
        while not stop.is_set():
            if api.poll() is not None:
                echo(f"gantry serve: the API exited with status {api.returncode}")
                return api.returncode or 1
            now = time.monotonic()
            if p.start_worker and worker is not None and worker.poll() is not None:
                # Died by itself: end what it leaves in its session (its pool process, maybe
                # in the middle of a job, which the reaper then queues again), and start it again,
                # after a longer pause each time it dies soon.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                pause = pause * 2 if now - started_at < 60 else 1.0
                pause = min(pause, MAX_RESTART_PAUSE)
                echo(f"gantry serve: the worker exited with status {worker.returncode}; "
                     f"restarting it in {pause:.0f}s (its log: {log_path})")  # fmt: skip
                worker, restart_at = None, now + pause
            if p.start_worker and worker is None and now >= restart_at:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                with log_path.open("ab") as out:
                    worker = _start(
                        [sys.executable, "-m", "gantry.api.cli", "worker"], p.env,
                        stdout=out, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                started_at = now
            stop.wait(0.5)
    finally:
        # Once each (a second SIGTERM is not a graceful stop to every program): the worker has
        # GANTRY_STOP_SECONDS to hand its running job back, the API closes its connections meanwhile.
        for proc in (worker, api):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        _wait(api, "the API", within=GRACEFUL_SECONDS + 5)
        _wait(worker, "the worker", within=p.settings.stop_seconds + 30)
    echo("gantry serve: stopped")
    return 0
