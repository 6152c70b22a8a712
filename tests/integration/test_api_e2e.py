"""A team's deployment, end to end: `gantry serve` (the API alone) in front of the real PostgreSQL,
Redis and S3 server, a real `gantry worker` running its jobs, and the CLI on a user's machine that
holds nothing but GANTRY_API_URL and GANTRY_API_TOKEN: no database, broker or storage setting, so
every command can only go through the API. Train, sample and download, as a user would."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.integration.conftest import GANTRY, Worker, _free_port, gantry

pytestmark = pytest.mark.integration


class Api:
    """`gantry serve` with the deployment's settings: the API alone (a broker is set, so no worker)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log_path = log_path
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [*GANTRY, "serve", "--port", self.url.rsplit(":", 1)[1]],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:  # /readyz: the database at this schema, the broker and the storage all answer
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gantry serve was not ready:\n{self.log_path.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def api(service_env: dict[str, str], tmp_path: Path) -> Iterator[Api]:
    served = Api(service_env, tmp_path / "serve.log")
    try:
        worker = Worker(service_env, tmp_path / "worker.log")  # started while the API starts
        try:
            served.wait_ready()
            yield served
        finally:
            worker.stop()
    finally:
        served.stop()


class User:
    """The CLI on a user's machine: its own empty folder, the API's URL and a token, nothing else."""

    def __init__(self, api: Api, token: str, home: Path) -> None:
        self.home = home
        home.mkdir()
        self.env = {"GANTRY_API_URL": api.url, "GANTRY_API_TOKEN": token, "PATH": os.environ["PATH"]}
        if "PYTHONPATH" in os.environ:  # this checkout's gantry, as the tests import it
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GANTRY, *args], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=120
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, (
            f"gantry {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
        return done.stdout

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json"))


def token(env: dict[str, str], owner: str) -> str:
    return json.loads(gantry(env, "token", "create", "--owner", owner, "--json").stdout)["token"]


def test_the_cli_trains_samples_and_downloads_through_the_api_alone(
    api: Api, service_env: dict[str, str], tmp_path: Path
) -> None:
    suffix = secrets.token_hex(3)  # the session's database is shared: owners of this test only
    alice = User(api, token(service_env, f"alice-{suffix}"), tmp_path / "alice")
    bob = User(api, token(service_env, f"bob-{suffix}"), tmp_path / "bob")

    # Train and wait: the answer is the finished job, as `gantry status --json` shows it.
    job = alice.json(
        "train", "dcgan", "--dataset", "digits", "--image-size", "16", "--steps", "60",
        "--checkpoint-every", "30", "--name", "digits-16", "--tag", "e2e", "--wait",
    )  # fmt: skip
    assert isinstance(job, dict)
    train_id = job["id"]
    assert job["state"] == "succeeded" and job["progress"] == {"step": 60, "total_steps": 60}, job
    assert alice.json("status", train_id) == job
    keys = [a["key"] for a in job["artifacts"]]
    assert any("step-00000030" in k for k in keys) and any("step-00000060" in k for k in keys), keys
    assert {"loss_D", "loss_G"} <= set(job["metrics"])

    listed = alice.json("list", "--tag", "e2e")
    assert [(j["id"], j["name"], j["tags"]) for j in listed] == [(train_id, "digits-16", ["e2e"])]  # type: ignore[union-attr]
    points = alice.json("metrics", train_id)
    assert isinstance(points, list)
    assert {p["step"] for p in points if p["name"] == "loss_D"} >= {30, 60}
    lines = [json.loads(line) for line in alice.ok("logs", train_id, "--json").splitlines()]
    assert lines and all({"time", "level", "message"} <= set(line) for line in lines)

    # Sample from it, then download the sample job's images through the API (S3 redirects).
    sample = alice.json("sample", train_id, "--count", "8", "--wait")
    assert isinstance(sample, dict)
    sample_id = sample["id"]
    assert sample["state"] == "succeeded" and sample["parent_job_id"] == train_id, sample
    alice.ok("download", sample_id, "--to", "out")
    pngs = sorted((alice.home / "out").rglob("*.png"))
    images = [p for p in pngs if p.name != "grid.png"]
    assert len(images) == 8 and any(p.name == "grid.png" for p in pngs), pngs
    for path in pngs:
        with Image.open(path) as image:
            image.load()  # decodes the whole file
            assert image.width >= 16 and image.height >= 16, (path, image.size)
    with Image.open(images[0]) as image:
        assert image.size == (16, 16)

    # watch: exit 0 for a job that succeeded, 1 for one that was cancelled (submitted and
    # cancelled with curl's requests, to spare two CLI starts).
    assert alice.run("watch", sample_id).returncode == 0
    auth = {"Authorization": f"Bearer {alice.env['GANTRY_API_TOKEN']}"}
    long = {"kind": "train", "model": "dcgan", "dataset": "digits", "image_size": 16, "steps": 5000}
    doomed = httpx.post(f"{api.url}/v1/jobs", json=long, headers=auth).json()["id"]
    httpx.post(f"{api.url}/v1/jobs/{doomed}/cancel", headers=auth).raise_for_status()
    watched = alice.run("watch", doomed)
    assert watched.returncode == 1 and "cancelled" in watched.stdout, watched.stdout + watched.stderr

    # Another owner: alice's jobs do not exist for bob, and bob's list is empty.
    for command in (("status", train_id), ("download", sample_id, "--to", "stolen")):
        refused = bob.run(*command)
        assert refused.returncode == 3, (command, refused.stdout, refused.stderr)
        assert "no such job" in refused.stderr
    assert bob.json("list") == []
    assert not (bob.home / "stolen").exists()

    # A wrong token: exit 5, naming the variable to fix and never echoing the token.
    wrong = User(api, "gty_" + "x" * 43, tmp_path / "mallory").run("list")
    assert wrong.returncode == 5 and "GANTRY_API_TOKEN" in wrong.stderr, wrong.stderr
    assert "x" * 43 not in wrong.stderr

    # The users' folders hold what they downloaded and nothing else: no store, no queue, no objects.
    assert sorted(p.name for p in alice.home.iterdir()) == ["out"]
    assert list(bob.home.iterdir()) == []

    # The same grid with curl, as docs/api.md shows: 307 to a presigned S3 URL, followed by -L
    # (curl does not send the token on to another host).
    grid = next(a["key"] for a in sample["artifacts"] if a["key"].endswith("grid.png"))
    fetched = subprocess.run(
        ["curl", "-sSfL", "-o", str(tmp_path / "grid.png"), "-w", "%{num_redirects}",
         "-H", f"Authorization: Bearer {alice.env['GANTRY_API_TOKEN']}",
         f"{api.url}/v1/jobs/{sample_id}/artifacts/{grid}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert fetched.returncode == 0 and fetched.stdout == "1", fetched.stderr
    assert (tmp_path / "grid.png").read_bytes() == (alice.home / "out" / grid.split("/", 2)[2]).read_bytes()
