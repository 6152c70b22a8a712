"""Faults with real services and real workers: a PostgreSQL restart mid-training (a private cluster,
so the machine's own server is left alone) and a worker paused past its lease while another takes
its job over. Each ends with the job `succeeded` once, every step recorded once."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Worker,
    _free_port,
    _need,
    each_step_once,
    gantry,
    status,
    submit,
    wait_for,
)

pytestmark = pytest.mark.integration

TINY = ["--dataset", "digits", "--image-size", "16", "--batch-size", "32", "--set", "ngf=8", "--set", "ndf=8"]


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb + pg_ctl on a free port, as the `postgres`
    user when run as root), which the test may stop and start."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gantry-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self.start()

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        _need("PostgreSQL", "initdb and pg_ctl are not on PATH")
    try:
        cluster = PrivatePostgres()
    except (subprocess.CalledProcessError, OSError, KeyError, LookupError) as exc:
        _need("PostgreSQL", f"cannot start a private cluster: {exc}")
    yield cluster
    cluster.remove()


def test_a_postgresql_restart_mid_training_costs_the_job_nothing(
    service_env, private_postgres, tmp_path
) -> None:
    env = {**service_env, "GANTRY_DATABASE_URL": private_postgres.url}
    gantry(env, "db", "upgrade")
    worker = Worker(env, tmp_path / "worker.log")
    try:
        # Steps enough that the job still trains when the outage begins on a fast host (the stop
        # takes a moment).
        job_id = submit(env, "train", "dcgan", *TINY, "--steps", "600", "--checkpoint-every", "100")
        wait_for(env, job_id, ("running",), training=lambda j: j["progress"]["step"] >= 30)
        private_postgres.stop()  # several heartbeats and a progress write meet a refused connection
        time.sleep(3)
        private_postgres.start()
        job = wait_for(env, job_id, ("succeeded",), timeout=240)
    finally:
        worker.stop()
    assert job["attempt"] == 1 and job["progress"]["step"] == 600  # not failed, not taken over
    assert each_step_once(env, job_id) == list(range(10, 601, 10))
    assert "database unavailable" in worker.log_path.read_text()  # the outage did meet the job


def test_a_worker_paused_past_its_lease_is_fenced_out_when_it_wakes(service_env, tmp_path) -> None:
    env = {**service_env, "GANTRY_LEASE_SECONDS": "5"}
    first = Worker(env, tmp_path / "first.log")
    second = None
    paused: list[int] = []
    try:
        job_id = submit(env, "train", "dcgan", *TINY, "--steps", "300", "--checkpoint-every", "20")
        wait_for(env, job_id, ("running",), training=lambda j: j["progress"]["step"] >= 40)
        children = subprocess.run(["pgrep", "-P", str(first.proc.pid)], capture_output=True, text=True)
        paused = [int(pid) for pid in children.stdout.split()]
        assert paused, "the worker has no pool process"
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)  # a long GC, a partition: alive, silent
        time.sleep(7)  # past the 5 s lease
        # Another worker starts, finds the stale job and takes it over (attempt 2).
        second = Worker(env, tmp_path / "second.log")
        # (It may have finished the job before a poll sees it running.)
        wait_for(env, job_id, ("running", "succeeded"), taken_over=lambda j: j["attempt"] == 2)
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        paused = []
        job = wait_for(env, job_id, ("succeeded",), timeout=240)
        # The woken attempt stopped at its first write and recorded nothing more.
        deadline = time.monotonic() + 30
        while "attempt 1 lost its lease" not in first.log_path.read_text():
            assert time.monotonic() < deadline, first.log_path.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        first.stop()
        if second is not None:
            second.stop()
    assert job["attempt"] == 2 and job["progress"]["step"] == 300
    assert each_step_once(env, job_id) == list(range(10, 301, 10))
    assert f"job {job_id}: succeeded" in (tmp_path / "second.log").read_text()
    assert f"job {job_id}: succeeded" not in first.log_path.read_text()
    assert status(env, job_id)["state"] == "succeeded"
