"""`gantry serve` alone, as a new user starts it: a fresh GANTRY_HOME and no other setting. It serves
a job end to end (its own worker runs it from the local queue), keeps owners apart, and stops with
its worker on SIGTERM. Real processes throughout; no Redis, PostgreSQL or S3 needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.integration.conftest import GANTRY, _free_port

pytestmark = pytest.mark.integration

# The commands of docs/api.md ("Running the service"), with the checks a user makes by eye.
DONE_WHEN = r"""
set -eu
T=$(gantry token create --owner alice)
B=$(gantry token create --owner bob)
curl -H "Authorization: Bearer $T" -d '{"kind":"train","model":"dcgan","dataset":"digits","image_size":16,"steps":100}' localhost:$PORT/v1/jobs > submitted.json
JOB=$(python -c 'import json,sys; print(json.load(sys.stdin)["id"])' < submitted.json)
echo "submitted: $JOB"
for _ in $(seq 300); do
  STATE=$(curl -sS -H "Authorization: Bearer $T" localhost:$PORT/v1/jobs/$JOB \
          | python -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  case $STATE in queued|running) sleep 0.5 ;; *) break ;; esac
done
echo "state: $STATE"
GRID=$(curl -sS -H "Authorization: Bearer $T" localhost:$PORT/v1/jobs/$JOB/artifacts | python -c '
import json, sys
print(next(a["key"] for a in json.load(sys.stdin) if a["kind"] == "samples" and a["key"].endswith(".png")))')
curl -sSf -o grid.png -H "Authorization: Bearer $T" localhost:$PORT/v1/jobs/$JOB/artifacts/$GRID
echo "bob's job: $(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $B" localhost:$PORT/v1/jobs/$JOB)"
echo "bob's list: $(curl -sS -H "Authorization: Bearer $B" localhost:$PORT/v1/jobs)"
echo "no token: $(curl -s -o /dev/null -w '%{http_code}' localhost:$PORT/v1/jobs/$JOB)"
echo "wrong token: $(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' localhost:$PORT/v1/jobs)"
"""


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
        self.port = str(_free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = home.parent / "serve.log"
        self.log = self.output.open("w")
        self.proc = subprocess.Popen(
            [*GANTRY, "serve", "--port", self.port],
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

    # Issue 29's "Done when", as a user types it: curl, a token from `gantry token create`.
    shell = serve.env | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PORT": serve.port}
    done = subprocess.run(
        ["bash", "-c", DONE_WHEN],
        env=shell,
        cwd=serve.output.parent,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{serve.output.read_text()}"
    said = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert said["state"] == "succeeded", said
    with Image.open(serve.output.parent / "grid.png") as grid:
        grid.load()  # a whole PNG
        assert grid.width > 16 and grid.height > 16  # a grid of 16 x 16 images
    # Another owner's token: the job does not exist for it, and its list is empty.
    assert said["bob's job"] == "404" and json.loads(said["bob's list"])["jobs"] == []
    # No token, or a wrong one: 401.
    assert said["no token"] == "401" and said["wrong token"] == "401"

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
