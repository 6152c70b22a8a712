"""Private services for the chaos suite, each on a free port and in a temporary folder, so that
restarting, flushing or cutting one never touches the machine's own servers:

- Redis: `redis-server` without persistence; restart loses every message, as a real one would.
- PostgreSQL: a cluster made by `initdb` and run by `pg_ctl` (as the `postgres` user when we are
  root: initdb refuses root), trust authentication on 127.0.0.1 only.
- S3: moto's server, reached by the workers through a TCP forwarder in its own process
  (tcpproxy.py). An outage kills the forwarder: clients get "connection refused" and their open
  connections are reset, as when an S3 endpoint is down, while moto (whose buckets live in its
  memory only) keeps every object. SIGSTOP of moto would make a different fault (a hang until
  botocore's read timeout) and restarting moto would lose the bucket.
- Workers: real `gantry worker` / `celery -A gantry.worker.app worker` processes, each in its own
  process group, with hook/ leading their PYTHONPATH so that the write audit can tell processes
  apart (hook/sitecustomize.py).

A program that is missing raises `Missing`; callers skip or fail on it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HOOK = HERE / "hook"
BIN = Path(sys.executable).parent
GANTRY = [sys.executable, "-m", "gantry.api.cli"]


class Missing(Exception):
    """A program a private service needs is not installed, or the service did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _end(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """End a process we started (its whole group when it leads one)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)


class Redis:
    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise Missing("redis-server is not installed")
        self.exe, self.dir, self.port = exe, workdir / "redis", free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = (self.dir / "redis.log").open("a")
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_port(self.port, 20, self.proc):
            raise Missing(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        _end(self.proc)

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port, socket_timeout=5).flushall()


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise Missing("initdb (PostgreSQL's server programs) is not installed")
    return Path(initdb).resolve().parent


class Postgres:
    """A private cluster. As root, its files belong to `postgres` and its programs run as that user."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="gantry-chaos-pg-"))  # /tmp: readable by postgres
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise Missing("runuser is needed to run initdb as postgres (initdb refuses root)")
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise Missing("no postgres user to run initdb as (initdb refuses root)") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.as_user = [runuser, "-u", "postgres", "--"]
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"])

    def _run(self, argv: list[str], timeout: float = 120) -> None:
        result = subprocess.run(
            [*self.as_user, *argv], capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            raise Missing(f"{Path(argv[0]).name} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")

    def _pg_ctl(self, *args: str) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args])

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._pg_ctl("-l", str(self.root / "postgres.log"), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart`: every connection is cut; `immediate` is a crash (recovery on start)."""
        if mode == "immediate":
            self.stop("immediate")
            self.start()
        else:
            self._pg_ctl("-m", mode, "-l", str(self.root / "postgres.log"), "restart")

    def connect(self, dbname: str = "postgres", app: str = "chaos-harness"):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=3,
            application_name=app,
        )

    def create_database(self, name: str) -> str:
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"], timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


class S3:
    """moto's server, and the forwarder the workers reach it through (which `down` cuts)."""

    def __init__(self, workdir: Path) -> None:
        moto = BIN / "moto_server"
        if not moto.exists():
            found = shutil.which("moto_server")
            if found is None:
                raise Missing(f"moto_server is not installed (looked beside {sys.executable})")
            moto = Path(found)
        self.dir = workdir / "s3"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.proxy_port = free_port(), free_port()
        self.moto = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=(self.dir / "moto.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.direct, timeout=1)
                break
            except OSError:
                if self.moto.poll() is not None or time.monotonic() > deadline:
                    _end(self.moto, signal.SIGKILL)
                    raise Missing("moto_server did not start") from None
                time.sleep(0.2)
        self.proxy: subprocess.Popen | None = None
        self.up()

    @property
    def direct(self) -> str:
        """moto itself: what the harness reads through, outage or not."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        """The forwarder: what the workers and CLIs use."""
        return f"http://127.0.0.1:{self.proxy_port}"

    def up(self) -> None:
        self.proxy = subprocess.Popen(
            [sys.executable, str(HERE / "tcpproxy.py"), str(self.proxy_port), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "proxy.log").open("a"),
            start_new_session=True,
        )
        if not wait_port(self.proxy_port, 20, self.proxy):
            raise Missing("the S3 forwarder did not start")

    def down(self) -> None:
        _end(self.proxy, signal.SIGKILL)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.direct,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
        )

    def stop(self) -> None:
        self.down()
        _end(self.moto)


# A worker's log lines (Celery's format) that tell when it took a message and which job it was for.
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): [^\]]+\] (.*)$")
RECEIVED = re.compile(r"^Task gantry\.\w+\[[^\]]+\] received")
CLAIMED = re.compile(r"^job (\w+): (?:\w+ attempt \d+ started|a duplicate message, dropped|not claimed)")
POOL_DIED = re.compile(r"^Process '[^']+' pid:\d+ exited")


class Worker:
    """A real worker: `gantry worker` (which requeues stale jobs, then execs Celery) or plain
    `celery -A gantry.worker.app worker`, prefork with one pool process, in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path, *, name: str, via: str = "gantry") -> None:
        self.name, self.via, self.log_path = name, via, log_path
        if via == "gantry":
            argv = [*GANTRY, "worker", "--gpus", "none", "--loglevel", "INFO"]
        else:
            argv = [sys.executable, "-m", "celery", "-A", "gantry.worker.app", "worker", "-Q", "gantry.gpu"]
            argv += ["--concurrency", "1", "--pool", "prefork", "--loglevel", "INFO", "--hostname"]
            argv += [f"{name}@%h"]
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pgid = self.proc.pid
        self.stopped = False  # SIGSTOPped
        self._ready = False
        self.started = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready_cached(self) -> bool:
        """Whether Celery said `ready.` (read from its log until it has)."""
        if not self._ready:
            self._ready = "ready." in self.log_path.read_text(errors="replace")
        return self._ready

    def messages(self, mono_offset: float) -> list[tuple[float, float, str | None]]:
        """(taken, until, job) for each message this worker took off the queue, read from its log,
        on the time.monotonic() clock (`mono_offset`: time.time() - time.monotonic()): from Celery's
        "received" to the job's claim (or the message dropped), its pool process's death or the log's
        end. `job` is None when the worker never said which job it was (killed before the claim)."""
        out: list[tuple[float, float, str | None]] = []
        start = None
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not (m := LOG_LINE.match(line)):
                continue
            t = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() - mono_offset
            if RECEIVED.match(m[2]):
                if start is not None:
                    out.append((start, t, None))
                start = t
            elif start is not None and (claimed := CLAIMED.match(m[2])):
                out.append((start, t, claimed[1]))
                start = None
            elif start is not None and POOL_DIED.match(m[2]):
                out.append((start, t, None))
                start = None
        if start is not None:
            out.append((start, float("inf"), None))
        return out

    def children(self) -> list[int]:
        """The main process's live children (its pool): not one that died and is not yet reaped,
        which Celery does only when it next checks its pool (a signal to it would change nothing)."""
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split() if _alive(int(pid))]

    def owns(self, pid: int) -> bool:
        """Whether `pid` is this worker's main or pool process."""
        try:
            return os.getpgid(pid) == self.pgid
        except (ProcessLookupError, PermissionError):
            return False

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pgid, sig)

    def destroy(self) -> None:
        """SIGKILL the whole group (a stopped one is continued first, so that it can die)."""
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()


class Services:
    """Redis, PostgreSQL and S3 for one chaos session; `destroy` ends them all, whatever happened."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="gantry-chaos-"))
        self.redis: Redis | None = None
        self.postgres: Postgres | None = None
        self.s3: S3 | None = None
        try:
            self.redis = Redis(self.workdir)
            self.redis.start()
            self.postgres = Postgres()
            self.postgres.start()
            self.s3 = S3(self.workdir)
        except BaseException:
            self.destroy()
            raise

    def destroy(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.destroy()
        if os.environ.get("CHAOS_KEEP") == "1":  # worker and service logs, for a post-mortem
            print(f"chaos: logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (Linux's /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
