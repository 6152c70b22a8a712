"""`gantry serve` alone, as a new user starts it: a fresh GANTRY_HOME and no other setting. It serves
a job end to end (its own worker runs it from the local queue), keeps owners apart, and stops with
its worker on SIGTERM. Real processes throughout; no Redis, PostgreSQL or S3 needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import GANTRY, _free_port

pytestmark = pytest.mark.integration

TRAIN = {"kind": "train", "model": "dcgan", "dataset": "digits", "image_size": 16, "steps": 100}


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc), to check none is left running."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                child = int(stat.parent.name)
                found.append(child)
                frontier.append(child)
    return found


def _worker_pid(serve_pid: int) -> int | None:
    """The worker serve started (`gantry worker` execs Celery's main process)."""
    for pid in _children(serve_pid):
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes() if _alive(pid) else b""
        if b"gantry.worker.app" in cmdline and b"worker" in cmdline:
            parent = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if int(parent) == serve_pid:
                return pid
    return None


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Serve:
    def __init__(self, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
        self.env |= {"GANTRY_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.output = home.parent / "serve.log"
        self.log = self.output.open("w")
        self.proc = subprocess.Popen(
            [*GANTRY, "serve", "--port", self.url.rsplit(":", 1)[1]],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gantry serve did not answer:\n{self.output.read_text()}")
            time.sleep(0.2)
        self.children = _children(self.proc.pid)  # the API and the worker, with the worker's pool

    def token(self, owner: str) -> dict[str, str]:
        made = subprocess.run(
            [*GANTRY, "token", "create", "--owner", owner, "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return {"Authorization": f"Bearer {json.loads(made.stdout)['token']}"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path / "home")
    yield s
    s.stop()
    for pid in s.children:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_serve_alone_runs_a_job_for_its_owner_only_and_stops_with_its_worker(serve: Serve) -> None:
    startup = serve.output.read_text()
    assert serve.url + "/" in startup
    assert "local queue" in startup and "worker.log" in startup, startup
    assert len(serve.children) >= 2, "an API process and a worker beside it"

    alice, bob = serve.token("alice"), serve.token("bob")
    with httpx.Client(base_url=serve.url, timeout=30) as http:
        made = http.post("/v1/jobs", json=TRAIN, headers=alice)
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]

        deadline = time.monotonic() + 150
        while (job := http.get(f"/v1/jobs/{job_id}", headers=alice).json())["state"] != "succeeded":
            assert job["state"] in ("queued", "running"), job
            assert time.monotonic() < deadline, f"still {job['state']}:\n{serve.output.read_text()}"
            time.sleep(0.5)
        assert job["progress"]["step"] == 100
        grids = [a for a in job["artifacts"] if a["kind"] == "samples" and a["key"].endswith(".png")]
        assert grids and all(a["bytes"] > 0 for a in grids), job["artifacts"]

        # Another owner's token: the job does not exist for it, and its list is empty.
        assert http.get(f"/v1/jobs/{job_id}", headers=bob).status_code == 404
        assert http.get("/v1/jobs", headers=bob).json()["jobs"] == []
        # No token, or a wrong one: 401.
        assert http.get(f"/v1/jobs/{job_id}").status_code == 401
        assert http.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401

    # A worker that dies is started again.
    killed = _worker_pid(serve.proc.pid)
    assert killed is not None
    pool = _children(killed)
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while _worker_pid(serve.proc.pid) in (None, killed):
        assert time.monotonic() < deadline, f"the worker was not restarted:\n{serve.output.read_text()}"
        time.sleep(0.2)
    assert "restarting" in serve.output.read_text()

    children = _children(serve.proc.pid) + pool  # the dead worker's pool process ends too
    serve.stop()
    assert serve.proc.returncode == 0, serve.output.read_text()
    deadline = time.monotonic() + 10
    while (left := [pid for pid in children if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running after serve stopped: {left}"
    assert "stopped" in serve.output.read_text()
