"""Real services: a private redis-server, a database of the test session's own on this machine's
PostgreSQL, moto's S3 server in its own process, and real `gantry worker` (Celery) processes; each
pytest-xdist process has its own of each. A missing service skips these tests with the reason,
except under GANTRY_REQUIRE_SERVICES=1 (CI), where it fails them."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import private_database

GANTRY = [sys.executable, "-m", "gantry.api.cli"]
ENDED = ("succeeded", "failed", "cancelled")


def _need(service: str, problem: str) -> None:
    message = f"{service} unavailable: {problem}"
    if os.environ.get("GANTRY_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (GANTRY_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A private redis-server for this test session (each pytest-xdist process its own): these
    tests flush it, and the machine's own Redis is left alone. GANTRY_TEST_REDIS_URL names a
    database to use instead, which they flush: one test process at a time (PYTEST_PROCESSES=0)."""
    import redis

    from tests.chaos.services import Missing, Redis

    if url := os.environ.get("GANTRY_TEST_REDIS_URL"):
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).flushdb()
        except Exception as exc:
            _need("Redis", f"{url}: {exc}")
        yield url
        return
    try:
        server = Redis(tmp_path_factory.mktemp("redis"))
        server.start()
    except Missing as exc:
        _need("Redis", str(exc))
    try:
        yield server.url(0)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session, without gantry's schema (the tests apply it as a
    user does), dropped afterwards."""
    with private_database("gantry_it", schema=False) as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, in its own process."""
    import urllib.request

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        _need("S3 server", "moto.server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def service_env(tmp_path_factory, redis_url, postgres_url, s3_endpoint) -> dict[str, str]:
    """The environment of a queued deployment: PostgreSQL, Redis, S3, schema applied."""
    env = {
        **os.environ,
        "GANTRY_HOME": str(tmp_path_factory.mktemp("home")),
        "GANTRY_DATABASE_URL": postgres_url,
        "GANTRY_BROKER_URL": redis_url,
        "GANTRY_STORAGE_URL": "s3://gantry-it/runs",
        "GANTRY_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONUNBUFFERED": "1",
    }
    s3(env).create_bucket(Bucket="gantry-it")
    gantry(env, "db", "upgrade")
    return env


def s3(env: dict[str, str]):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["GANTRY_S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def gantry(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*GANTRY, *args], env=env, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(
            f"gantry {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def submit(env: dict[str, str], *args: str) -> str:
    """`gantry ARGS --json`; the new job's id."""
    return json.loads(gantry(env, *args, "--json").stdout)["id"]


def each_step_once(env: dict[str, str], job_id: str) -> list[int]:
    """The steps of a job's loss_D points, after asserting no (step, metric) was recorded twice."""
    points = json.loads(gantry(env, "metrics", job_id, "--json").stdout)
    seen = [(p["step"], p["name"]) for p in points]
    assert len(seen) == len(set(seen)), f"a step recorded twice: {sorted(seen)}"
    return sorted({p["step"] for p in points if p["name"] == "loss_D"})


def status(env: dict[str, str], job_id: str) -> dict:
    return json.loads(gantry(env, "status", job_id, "--json").stdout)


def wait_for(env: dict[str, str], job_id: str, states: tuple[str, ...], timeout: float = 180, **more) -> dict:
    """Wait until the job is in one of `states` and matches each of `more` (predicates on the view
    `gantry status --json` prints: its state, attempt and progress). Returns that view when the job
    has ended; while it runs, its state, attempt and progress only, read from its row.

    Polled on the row itself, every 20 ms: a test that acts while a job is at a step (a signal, an
    outage) must act within a few steps of it, and a `gantry status` process (a second or more on a
    busy host) let a tiny job on a fast one run hundreds of steps past it, or end."""
    from sqlalchemy.exc import SQLAlchemyError

    from gantry.jobs import store as db

    sessions = job_rows(env["GANTRY_DATABASE_URL"])
    deadline = time.monotonic() + timeout
    job: dict = {}
    while True:
        try:
            with sessions() as s:
                row = s.get(db.Job, job_id)
                assert row is not None, f"no job {job_id}"
                job = {
                    "state": row.state,
                    "attempt": row.attempt,
                    "progress": {"step": row.step, "total_steps": row.total_steps},
                    "error": row.error,
                }
        except SQLAlchemyError:  # the database restarted under a test: the next poll reconnects
            pass
        else:
            if job["state"] in states and all(pred(job) for pred in more.values()):
                return status(env, job_id) if job["state"] in ENDED else job
            if job["state"] == "failed" and "failed" not in states:
                raise AssertionError(f"job {job_id} failed: {job['error']}")
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.get('state')} after {timeout}s: {job}")
        time.sleep(0.02)


@functools.cache
def job_rows(url: str):  # type: ignore[no-untyped-def]
    """gantry's session factory for the database at `url`, one per URL for the test session (a
    connection that a restarted server dropped is replaced on its next use)."""
    from gantry.jobs import store as db

    return db.connect(url, check_schema=False)


class Worker:
    """A real `gantry worker` process (Celery, prefork, one job at a time)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._start([*GANTRY, "worker", "--gpus", "none", "--loglevel", "INFO"], env, log_path)

    def _start(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        """Run `command` in a session of its own, its output in `log_path`, until Celery says it is
        ready (killed, and the test failed, if it exits or takes over 60 s)."""
        self.log_path = log_path
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while "ready." not in log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):  # not left to take the next tests' jobs
                    os.killpg(self.proc.pid, signal.SIGKILL)
                raise AssertionError(f"worker did not start:\n{log_path.read_text()}")
            time.sleep(0.2)

    def exited(self, seconds: float) -> int:
        """The worker's exit status once it exits within `seconds`; if it does not, every thread's
        stack of its processes (SIGUSR2, gantry.worker.app) in the failure, to show where it hangs."""
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGUSR2)
            time.sleep(3)
            raise AssertionError(
                f"the worker did not exit within {seconds} s; its log, with its stacks now:\n"
                + self.log_path.read_text()[-30_000:]
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture
def worker(service_env, tmp_path) -> Iterator[Worker]:
    w = Worker(service_env, tmp_path / "worker.log")
    yield w
    w.stop()
