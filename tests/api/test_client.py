"""The CLI as a client: with GANTRY_API_URL set, the job commands go to a real `gantry serve` app
(uvicorn in a thread, embedded settings underneath: jobs stay queued and the tests move them on
through the store, as a worker would) and print what the local CLI prints, with its exit codes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import CliRunner, Result
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from gantry.api.cli import cli
from gantry.api.http.app import create_app
from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.settings import Settings

WORKER = "gpu-box:4242"  # another host's worker: the local CLI leaves its jobs alone
TRAIN = ["train", "dcgan", "--dataset", "digits", "--image-size", "16", "--steps", "100"]


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` under uvicorn on a free port, in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Served:
    url: str
    settings: Settings
    service: Service
    token: str
    elsewhere: Path  # the remote CLI's GANTRY_HOME: nothing may appear there

    def remote(self, *args: str, token: str | None = None, url: str | None = None) -> Result:
        env = {
            "GANTRY_API_URL": url or self.url,
            "GANTRY_API_TOKEN": token if token is not None else self.token,
            "GANTRY_HOME": str(self.elsewhere),
        }
        return CliRunner().invoke(cli, list(args), env=env)

    def local(self, *args: str) -> Result:
        return CliRunner().invoke(cli, list(args), env={"GANTRY_API_URL": None, "GANTRY_API_TOKEN": None})

    def session(self):  # type: ignore[no-untyped-def]
        return db.session_scope(self.service.sessions)


@pytest.fixture
def served(settings: Settings, tmp_path: Path) -> Iterator[Served]:
    app = create_app(settings)
    svc: Service = app.state.service
    token = svc.create_token("alice").token
    assert token is not None
    with serving(app) as url:
        yield Served(url, settings, svc, token, tmp_path / "elsewhere")


def _submitted(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["id"])


def _run_like_a_worker(served: Served, job_id: str, *, steps: range, finish: str | None = None) -> None:
    """Claim the job and record progress and metrics with the lease token, as a worker does."""
    with served.session() as s:
        job = db.claim_job(s, job_id, worker=WORKER, lease_seconds=120)
        assert job is not None
        token = job.attempt
    for step in steps:
        with served.session() as s:
            db.heartbeat(s, job_id, step=step, token=token)
            db.record_metrics(
                s, job_id, step=step, values={"loss_D": 1.0 / step, "loss_G": 0.5 * step}, token=token
            )
    if finish:
        with served.session() as s:
            db.finish_job(s, job_id, state=finish, token=token)


def test_status_list_metrics_and_options_print_what_the_local_cli_prints(served: Served) -> None:
    job_id = _submitted(served.remote(*TRAIN, "--json"))
    _run_like_a_worker(served, job_id, steps=range(10, 50, 10))
    for command in (
        ["status", job_id],
        ["status", job_id, "--json"],
        ["list"],
        ["list", "--json"],
        ["list", "--state", "running", "--limit", "3"],
        ["metrics", job_id],
        ["metrics", job_id, "--json"],
        ["options", "dcgan"],
    ):
        remote, local = served.remote(*command), served.local(*command)
        assert remote.exit_code == local.exit_code == 0, (command, remote.output)
        assert remote.output == local.output, command
    assert "40/100" in served.remote("status", job_id).output
    assert not served.elsewhere.exists()  # nothing was read or written on this machine


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["train", "dcgan", "--image-size", "24"], 2),
        (["train", "dcgan", "--set", "minibatch=true"], 2),
        (["list", "--state", "done"], 2),
        (["status", "nosuchjob"], 3),
        (["sample", "nosuchjob", "--count", "4"], 3),
        (["evaluate", "nosuchjob"], 3),
        (["cancel", "nosuchjob"], 3),
        (["metrics", "nosuchjob"], 3),
    ],
)
def test_bad_input_and_missing_jobs_exit_as_they_do_locally(served: Served, args, code) -> None:
    remote, local = served.remote(*args), served.local(*args)
    assert remote.exit_code == local.exit_code == code, remote.output
    assert remote.output == local.output
    with served.session() as s:
        assert db.count_jobs(s) == 0


def test_another_owners_job_is_no_such_job(served: Served) -> None:
    job_id = _submitted(served.remote(*TRAIN, "--json"))
    bob = served.service.create_token("bob").token
    assert bob is not None
    result = served.remote("status", job_id, token=bob)
    assert result.exit_code == 3
    assert f"no such job: {job_id}" in result.output
    assert json.loads(served.remote("list", "--json", token=bob).stdout) == []


@pytest.mark.parametrize("token", ["gty_wrong-secret-8d1f", "", "revoked"])
def test_a_refused_token_exits_5_naming_the_variable_never_the_token(served: Served, token: str) -> None:
    if token == "revoked":
        made = served.service.create_token("carol")
        served.service.revoke_token(made.id)
        token = str(made.token)
    for command in (["list"], [*TRAIN], ["status", "abc"], ["watch", "abc"]):
        result = served.remote(*command, token=token)
        assert result.exit_code == 5, result.output
        assert "GANTRY_API_TOKEN" in result.output and served.url in result.output
        assert not token or token not in result.output
        assert isinstance(result.exception, SystemExit)  # a clean exit, not a traceback


def test_an_api_that_is_down_exits_4_naming_its_url(served: Served) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for command in (["list"], ["status", "abc"], [*TRAIN], ["cancel", "abc"], ["download", "abc"]):
        result = served.remote(*command, url=down)
        assert result.exit_code == 4, result.output
        assert down in result.output and served.token not in result.output
        assert isinstance(result.exception, SystemExit)


def test_a_url_where_no_gantry_listens_is_a_clear_error(served: Served) -> None:
    result = served.remote("status", "abc", url=served.url + "/not-gantry")
    assert result.exit_code == 4, result.output
    assert f"the API at {served.url}/not-gantry has no route GET /v1/jobs/abc" in result.output
    assert "GANTRY_API_URL" in result.output
    assert isinstance(result.exception, SystemExit)


def test_cancel_over_http(served: Served) -> None:
    job_id = _submitted(served.remote(*TRAIN, "--json"))
    result = served.remote("cancel", job_id)
    assert result.exit_code == 0
    assert result.output.strip() == f"job {job_id} cancelled"
    again, locally = served.remote("cancel", job_id), served.local("cancel", job_id)
    assert again.exit_code == locally.exit_code == 2
    assert again.output == locally.output  # "already cancelled", naming job_id


@contextmanager
def fake_worker(served: Served, *, finish: str = "succeeded") -> Iterator[None]:
    """A thread that runs every queued job of the store to its end, a few steps a second."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with served.session() as s:
                queued = [j.id for j in db.list_jobs(s, state="queued", limit=10)[0]]
            for job_id in queued:
                time.sleep(0.3)
                _run_like_a_worker(served, job_id, steps=range(25, 101, 25), finish=finish)
            time.sleep(0.1)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_watch_and_wait_follow_a_job_to_its_end(served: Served) -> None:
    with fake_worker(served):
        waited = served.remote(*TRAIN, "--wait")
    assert waited.exit_code == 0, waited.output
    job_id = waited.output.split()[3]  # "queued train job ID"
    status = served.local("status", job_id).output
    assert "succeeded" in status and "100/100" in status
    assert waited.output.endswith(status)  # the job as `status` shows it, at the end
    watched = served.remote("watch", job_id)
    assert watched.exit_code == 0 and watched.output.endswith(status)


def test_watch_exits_1_when_the_job_fails(served: Served) -> None:
    job_id = _submitted(served.remote(*TRAIN, "--json"))
    with fake_worker(served, finish="failed"):
        result = served.remote("watch", job_id)
    assert result.exit_code == 1, result.output
    assert "failed" in result.output


def test_watch_reconnects_to_the_event_stream_with_last_event_id(served: Served) -> None:
    """The stream's client against a server that drops the stream after two events and carries on
    from Last-Event-ID (the events route's contract, docs/api.md)."""
    job = json.loads(served.remote(*TRAIN, "--json").stdout) | {"id": "j1"}
    job["progress"] = {"step": 0, "total_steps": 3}
    asked: list[str | None] = []

    def sse(event_id: int, name: str, data: dict) -> str:
        return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data)}\n\n"

    app = FastAPI()

    @app.get("/v1/jobs/{job_id}")
    def get_job(job_id: str) -> dict:
        return job

    @app.get("/v1/jobs/{job_id}/events")
    def events(job_id: str, request: Request) -> StreamingResponse:
        after = request.headers.get("last-event-id")
        asked.append(after)
        ended = job | {
            "state": "succeeded",
            "progress": {"step": 3, "total_steps": 3},
            "metrics": {"loss_D": 0.5},
        }
        script = [
            ": keep-alive\n\n",
            sse(1, "state", {"state": "running", "error": None}),
            sse(2, "progress", {"step": 1, "total_steps": 3, "state": "running"}),
            sse(3, "metric", {"name": "loss_D", "step": 2, "value": 0.5, "time": "2026-01-01T00:00:00Z"}),
            sse(4, "progress", {"step": 3, "total_steps": 3, "state": "running"}),
            sse(5, "state", {"state": "succeeded", "error": None}),
            sse(6, "end", ended),
        ]
        lines = script[:3] if after is None else script[int(after) + 1 :]  # the first stream drops
        if len(asked) > 2:  # a client that does not carry on where it was: end the test, failed
            lines = [sse(9, "end", job | {"state": "failed"})]
        return StreamingResponse(iter(lines), media_type="text/event-stream")

    with serving(app) as url:
        result = served.remote("watch", "j1", url=url)
    assert result.exit_code == 0, result.output
    assert asked == [None, "2"]
    assert "succeeded" in result.output and "progress   3/3" in result.output
    assert "loss_D=0.5" in result.output


def _artifacts_routed(served: Served, job_id: str) -> bool:
    answer = httpx.get(
        f"{served.url}/v1/jobs/{job_id}/artifacts", headers={"Authorization": f"Bearer {served.token}"}
    )
    return answer.json().get("detail") != "Not Found" if answer.status_code == 404 else True


def test_download_copies_the_jobs_artifacts_or_says_the_route_is_missing(served: Served, tmp_path) -> None:
    job_id = _submitted(served.remote(*TRAIN, "--json"))
    objects = {
        f"jobs/{job_id}/samples/grid-000100.png": b"\x89PNG grid",
        f"jobs/{job_id}/manifest.json": b"{}",
    }
    with served.session() as s:
        for key, data in objects.items():
            served.service.objects.put_bytes(key, data)
            db.add_artifact(
                s, job_id, key=key, kind="grid" if key.endswith("png") else "manifest", size=len(data)
            )
    to = tmp_path / "copy"
    result = served.remote("download", job_id, "--to", str(to))
    if not _artifacts_routed(served, job_id):
        assert result.exit_code == 4, result.output
        assert f"has no route GET /v1/jobs/{job_id}/artifacts" in result.output
        assert not to.exists()
        return
    assert result.exit_code == 0, result.output
    for key, data in objects.items():
        assert (to / key.removeprefix(f"jobs/{job_id}/")).read_bytes() == data
    assert f"2 files in {to}" in result.output


def test_operator_commands_say_they_act_on_this_machines_store(served: Served) -> None:
    result = served.remote("token", "list")
    assert result.exit_code == 0
    assert "not through GANTRY_API_URL" in result.output


def test_over_the_job_quota_exits_4_saying_when_to_try_again(settings: Settings, tmp_path: Path) -> None:
    app = create_app(settings.model_copy(update={"api_max_active_jobs": 1}))
    token = str(app.state.service.create_token("alice").token)
    with serving(app) as url:
        served = Served(url, settings, app.state.service, token, tmp_path / "elsewhere")
        assert served.remote(*TRAIN).exit_code == 0
        result = served.remote(*TRAIN)
    assert result.exit_code == 4, result.output
    assert "GANTRY_API_MAX_ACTIVE_JOBS" in result.output and "try again in 30 s" in result.output
