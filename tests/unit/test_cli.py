"""The CLI's contract: exit codes, messages that name the field, nothing written on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.jobs import store as db


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_api_imports_leave_torch_out() -> None:
    # What the import pulls in, not how long it takes: timings belong in bench/, and a loaded CI
    # machine made a time bound here fail on an import that was fine.
    code = (
        "import sys;"
        "import gantry.api.cli, gantry.api.service, gantry.api.workers, gantry.jobs.queue;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sklearn') or m.startswith('gantry.worker')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _count_jobs(settings) -> int:
    with db.session_scope(db.connect(settings.database)) as s:
        return db.count_jobs(s)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["train", "stylegan"], 2, "dcgan"),
        (["train", "dcgan", "--dataset", "imagenet"], 2, "dataset"),
        (["train", "dcgan", "--dataset", "/no/such/folder"], 2, "/no/such/folder"),
        (["train", "dcgan", "--set", "minibatch=true"], 2, "set.minibatch"),
        (["train", "dcgan", "--set", "lr"], 2, "KEY=VALUE"),
        (["train", "dcgan", "--steps", "0"], 2, "steps"),
        (["train", "dcgan", "--image-size", "24"], 2, "image_size"),
        (["sample", "nosuchjob"], 3, "nosuchjob"),
        (["status", "nosuchjob"], 3, "nosuchjob"),
        (["cancel", "nosuchjob"], 3, "nosuchjob"),
        (["list", "--state", "done"], 2, "done"),
    ],
)
def test_bad_input_exits_with_its_code_and_writes_nothing(settings, args, code, words) -> None:
    result = run(*args)
    assert result.exit_code == code, result.output
    assert words in result.output
    assert _count_jobs(settings) == 0


def test_sampling_a_job_without_checkpoint_is_refused(settings) -> None:
    with db.session_scope(db.connect(settings.database)) as s:
        parent = db.create_job(s, kind="train", model="dcgan", spec={}, total_steps=10).id
    result = run("sample", parent, "--count", "4")
    assert result.exit_code == 2
    assert "checkpoint" in result.output
    assert _count_jobs(settings) == 1


def test_unmigrated_database_says_what_to_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path))
    monkeypatch.delenv("GANTRY_DATABASE_URL", raising=False)
    result = run("list")
    assert result.exit_code == 4
    assert "gantry db upgrade" in result.output


def test_unreachable_broker_is_named_without_password(settings, monkeypatch) -> None:
    monkeypatch.setenv("GANTRY_BROKER_URL", "redis://:s3cret@127.0.0.1:1/0")
    result = run("train", "dcgan", "--steps", "5")
    assert result.exit_code == 4
    assert "broker" in result.output and "127.0.0.1:1" in result.output
    assert "s3cret" not in result.output
    assert _count_jobs(settings) == 0


def test_list_and_status_json(settings) -> None:
    with db.session_scope(db.connect(settings.database)) as s:
        job_id = db.create_job(s, kind="train", model="dcgan", spec={"steps": 3}, total_steps=3).id
    listed = json.loads(run("list", "--json").output)
    assert [j["id"] for j in listed] == [job_id]
    status = json.loads(run("status", job_id, "--json").output)
    expected = {"id", "kind", "model", "state", "attempt", "progress", "metrics", "error", "artifacts"}
    assert expected <= set(status) and {"created_at", "started_at", "finished_at", "parent_job_id"} <= set(
        status
    )
    assert status["state"] == "queued" and status["progress"] == {"step": 0, "total_steps": 3}
    assert run("cancel", job_id).exit_code == 0
    assert json.loads(run("status", job_id, "--json").output)["state"] == "cancelled"
