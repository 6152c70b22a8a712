"""Embedded mode ends every job it runs, with the right exit code; a gantry process killed while it
ran one leaves a row that the next command ends; and submit refuses what would strand a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.keys import manifest_key
from gantry.jobs.settings import Settings
from gantry.jobs.storage import open_store

GANTRY = [sys.executable, "-m", "gantry.api.cli"]
TINY = ["--steps", "3", "--batch-size", "8", "--checkpoint-every", "3"]


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _job(settings: Settings, job_id: str) -> db.Job:
    with db.session_scope(db.connect(settings.database)) as s:
        return db.get_job(s, job_id)


def _only_job(settings: Settings) -> db.Job:
    with db.session_scope(db.connect(settings.database)) as s:
        (job,), _ = db.list_jobs(s)
        return job


def _checkpointed_job(settings: Settings) -> str | None:
    """The id of the one job once it has a checkpoint."""
    with db.session_scope(db.connect(settings.database)) as s:
        jobs, _ = db.list_jobs(s)
    return jobs[0].id if jobs and _manifest_step(settings, jobs[0].id) is not None else None


def test_embedded_mode_runs_the_job_with_the_callers_settings(settings, tmp_path, monkeypatch) -> None:
    # Not the environment's storage: the one this caller's settings name.
    elsewhere = tmp_path / "elsewhere"
    mine = settings.model_copy(update={"storage_url": elsewhere.as_uri()})
    svc = Service(mine)
    job = svc.submit_train("gan", steps=3, batch_size=8, checkpoint_every=3)
    svc.run_embedded(job)
    assert open_store(mine.storage).exists(manifest_key(job.id))
    assert not open_store(settings.storage).exists(manifest_key(job.id))
    assert svc.get(job.id).state == "succeeded"


def test_the_jobs_own_failure_ends_it_failed_with_exit_1(settings, tmp_path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    result = run("train", "gan", "--dataset", str(bad), *TINY)
    assert result.exit_code == 1, result.output
    job = _only_job(settings)
    assert job.state == "failed" and job.error


def test_unreachable_s3_in_embedded_mode_exits_4_and_ends_the_job(settings, monkeypatch) -> None:
    # S3 answered the submit's check, then went away before the job wrote its first object.
    monkeypatch.setattr("gantry.api.service.check_storage", lambda *a, **k: None, raising=False)
    monkeypatch.setenv("GANTRY_STORAGE_URL", "s3://runs/gantry")
    monkeypatch.setenv("GANTRY_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("GANTRY_RETRY_SECONDS", "2")  # the caller's settings: its writes retry this long
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sekrit")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    result = CliRunner().invoke(cli, ["train", "gan", *TINY])
    assert result.exit_code == 4, result.output
    assert "object storage" in result.output and "127.0.0.1:1" in result.output
    assert "Traceback" not in result.output and "sekrit" not in result.output
    job = _only_job(settings)
    assert job.state == "failed"
    assert "127.0.0.1:1" in (job.error or "") and f"gantry resume {job.id}" in result.output


def test_a_missing_bucket_is_refused_at_submit_naming_it(settings, monkeypatch) -> None:
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("GANTRY_STORAGE_URL", "s3://no-such-bucket/gantry")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="another")
        result = CliRunner().invoke(cli, ["train", "gan", *TINY])
    assert result.exit_code == 4, result.output
    assert "no-such-bucket" in result.output and "does not exist" in result.output
    with db.session_scope(db.connect(settings.database)) as s:
        assert db.count_jobs(s) == 0


@pytest.mark.parametrize(("code", "words"), [("403", "denied"), ("404", "does not exist")])
def test_storage_check_says_why_a_bucket_is_refused(monkeypatch, code, words) -> None:
    import boto3
    from botocore.stub import Stubber

    from gantry.jobs.errors import ServiceUnavailable
    from gantry.jobs.storage import check_storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    real_client = boto3.client

    def stubbed(*args, **kwargs):
        client = real_client(*args, **kwargs)
        stubber = Stubber(client)
        stubber.add_client_error("head_bucket", service_error_code=code, http_status_code=int(code))
        stubber.activate()
        return client

    monkeypatch.setattr(boto3, "client", stubbed)
    with pytest.raises(ServiceUnavailable) as info:
        check_storage("s3://locked/gantry", endpoint_url="http://user:pw@s3.example:9000")
    message = str(info.value)
    assert "'locked'" in message and words in message
    assert "s3.example:9000" in message and "pw" not in message


def test_a_failed_enqueue_exits_4_and_leaves_no_queued_row(settings, monkeypatch) -> None:
    # The broker answered the check, then did not take the message.
    monkeypatch.setattr("gantry.api.service.check_broker", lambda *a, **k: None)
    monkeypatch.setenv("GANTRY_BROKER_URL", "redis://:s3cret@127.0.0.1:1/0")
    result = CliRunner().invoke(cli, ["train", "gan", *TINY])
    assert result.exit_code == 4, result.output
    assert "broker" in result.output and "127.0.0.1:1" in result.output
    assert "Traceback" not in result.output and "s3cret" not in result.output
    job = _only_job(settings)
    assert job.state == "failed" and "not queued" in (job.error or "")
    assert job.id in result.output


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _running(settings: Settings, *, worker: str, seconds_since_heartbeat: float = 0) -> str:
    from datetime import timedelta

    sessions = db.connect(settings.database)
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={"steps": 5}, total_steps=5).id
    with db.session_scope(sessions) as s:
        job = db.claim_job(s, job_id, worker=worker, lease_seconds=60)
        assert job is not None
        job.heartbeat_at = db.utcnow() - timedelta(seconds=seconds_since_heartbeat)
    return job_id


def test_cancel_ends_a_running_job_whose_worker_is_gone(settings) -> None:
    import socket

    here = socket.gethostname()
    dead_here = _running(settings, worker=f"{here}:{_dead_pid()}")
    silent_elsewhere = _running(settings, worker="gpu-7:41", seconds_since_heartbeat=3600)
    alive_elsewhere = _running(settings, worker="gpu-8:42")
    for job_id in (dead_here, silent_elsewhere):
        result = run("cancel", job_id)
        assert result.exit_code == 0 and "cancelled" in result.output
        assert _job(settings, job_id).state == "cancelled"
    # A worker that may be alive is asked, and stops at its next progress check.
    assert "cancel requested" in run("cancel", alive_elsewhere).output
    job = _job(settings, alive_elsewhere)
    assert job.state == "running" and job.cancel_requested


def test_a_job_left_running_by_a_dead_gantry_process_is_ended_by_the_next_command(settings) -> None:
    import socket

    dead = _running(settings, worker=f"{socket.gethostname()}:{_dead_pid()}")
    reused = _running(settings, worker=f"{socket.gethostname()}:{os.getpid()}", seconds_since_heartbeat=3600)
    mine = _running(settings, worker=f"{socket.gethostname()}:{os.getpid()}")
    elsewhere = _running(settings, worker="gpu-7:41")
    result = CliRunner().invoke(cli, ["list", "--json"])
    assert result.exit_code == 0
    states = {j["id"]: j["state"] for j in json.loads(result.stdout)}
    # This process started long after `reused`'s last heartbeat: its pid was reused.
    assert states == {dead: "failed", reused: "failed", mine: "running", elsewhere: "running"}
    assert f"gantry resume {dead}" in (_job(settings, dead).error or "")
    assert f"gantry resume {dead}" in result.stderr


# --- a real embedded gantry process, killed ----------------------------------------------------


def _wait_for(predicate, *, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _manifest_step(settings: Settings, job_id: str) -> int | None:
    from gantry.jobs.keys import Manifest

    objects = open_store(settings.storage)
    if not objects.exists(manifest_key(job_id)):
        return None
    return Manifest.parse(objects.get_bytes(manifest_key(job_id))).step


def _gantry(*args: str) -> subprocess.Popen:
    """`gantry ARGS` as a terminal starts it: Ctrl-C (SIGINT) at its default. A suite started in the
    background (`make test &`, nohup) ignores SIGINT, and a child inherits an ignored signal; one with
    a handler installed here starts at the default, so for the Popen Python's handler stands in."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [*GANTRY, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigkill_then_resume_then_ctrl_c(settings: Settings, tmp_path: Path) -> None:
    proc = _gantry("train", "gan", "--steps", "100000", "--checkpoint-every", "50", "--json")
    watcher = None
    try:
        _wait_for(lambda: _checkpointed_job(settings) is not None, what="a checkpoint")
        job_id = _only_job(settings).id
        watcher = _gantry("watch", job_id)
        time.sleep(2)
        proc.send_signal(signal.SIGKILL)  # no chance to record anything
        proc.wait(30)
        # A `gantry watch` on this host sees that the process is gone and ends the job, resumable.
        _, watched = watcher.communicate(timeout=60)
    finally:
        proc.kill()
        if watcher is not None:
            watcher.kill()
    assert watcher.returncode == 1 and "Traceback" not in watched
    status = run("status", job_id, "--json")
    assert json.loads(status.stdout)["state"] == "failed"
    assert f"gantry resume {job_id}" in json.loads(status.stdout)["error"]

    killed_at = _manifest_step(settings, job_id)
    assert killed_at is not None

    # `gantry resume` continues it from that checkpoint; Ctrl-C cancels it with a new checkpoint.
    proc = _gantry("resume", job_id, "--json")
    try:
        _wait_for(
            lambda: (job := _job(settings, job_id)).attempt == 2 and job.state == "running",
            what="the resumed attempt",
        )
        _wait_for(
            lambda: (_manifest_step(settings, job_id) or 0) > killed_at,
            what="a checkpoint of the resumed run",
        )
        proc.send_signal(signal.SIGINT)
        # A bound on the harness, not a timing goal (it takes seconds). A run that never stops fails
        # here; one started with SIGINT ignored never would, hence `_gantry`'s default handler.
        try:
            stdout, stderr = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            status = run("status", job_id, "--json").stdout
            pytest.fail(f"no exit 180 s after Ctrl-C; job: {status}\nstdout: {out}\nstderr: {err[-4000:]}")
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    ended = json.loads(stdout)
    assert ended["state"] == "cancelled" and ended["attempt"] == 2
    step = _manifest_step(settings, job_id)
    assert step == ended["progress"]["step"] > killed_at  # stopped with a checkpoint at its last step
