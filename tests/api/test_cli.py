"""The CLI's contract: exit codes, messages that name the field, nothing written on bad input."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.jobs import store as db
from gantry.jobs.specs import parse_train_spec


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


@pytest.mark.parametrize("args", [["list", "--json"], ["options", "dcgan"], ["list"]])
def test_a_reader_that_went_away_ends_the_command_quietly(settings, args) -> None:
    # `gantry list --json | head -1`: a broken pipe to stdout is no network outage (exit 4 and an
    # error line before); the command ends as one that SIGPIPE killed, nothing on stderr.
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gantry.api.cli", *args], stdout=write, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


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
        spec = parse_train_spec("dcgan", {"steps": 10}, {}).model_dump(mode="json")  # as submit stores it
        parent = db.create_job(s, kind="train", model="dcgan", spec=spec, total_steps=10).id
    result = run("sample", parent, "--count", "4")
    assert result.exit_code == 2
    assert "checkpoint" in result.output
    assert _count_jobs(settings) == 1


def _fresh_home(tmp_path, monkeypatch) -> None:
    for var in ("GANTRY_DATABASE_URL", "GANTRY_STORAGE_URL", "GANTRY_BROKER_URL", "GANTRY_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path))


def test_a_database_at_another_schema_revision_says_what_to_run(tmp_path, monkeypatch) -> None:
    _fresh_home(tmp_path, monkeypatch)
    with sqlite3.connect(tmp_path / "gantry.db") as conn:  # an older gantry's store
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('0000')")
    result = run("list")
    assert result.exit_code == 4
    assert "gantry db upgrade" in result.output and "revision 0000" in result.output


def test_a_new_embedded_store_gets_its_schema_on_first_use(tmp_path, monkeypatch) -> None:
    _fresh_home(tmp_path, monkeypatch)  # no `gantry db upgrade`
    result = run("train", "gan", "--steps", "3", "--batch-size", "8", "--checkpoint-every", "3", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert job["state"] == "succeeded" and job["progress"] == {"step": 3, "total_steps": 3}
    assert (tmp_path / "gantry.db").exists()
    assert json.loads(run("list", "--json").output)[0]["id"] == job["id"]


def test_help_shows_each_default() -> None:
    def help_of(command: str) -> str:
        return " ".join(run(command, "--help").output.split())  # unwrapped

    train_help = help_of("train")
    for words in ("[default: 2000]", "[default: 500]", "[default: 0]", "[default: 32;", "[default: shapes;"):
        assert words in train_help, words
    assert "srresnet: 96" in train_help and "16 to 128" not in train_help  # each model's, from its spec
    sample_help = help_of("sample")
    assert "[default: 64]" in sample_help and "[default: latest]" in sample_help
    assert "best (by the eval metric, with eval_every)" in sample_help  # --checkpoint best


def test_options_lists_architecture_first_with_defaults_and_bounds() -> None:
    result = run("options", "dcgan")
    assert result.exit_code == 0
    lines = [line.split() for line in result.output.splitlines() if line.strip()]
    names = [words[0] for words in lines[1:]]
    assert names[:2] == ["architecture", "nz"]
    assert lines[2][:4] == ["nz", "100", "1", "to"]
    assert names.index("lr") < names.index("labels") < names.index("precision")
    assert "'gantry[text]')" in run("options", "text2img").output  # shown as written, not read as markup
    rows = json.loads(run("options", "dcgan", "--json").output)
    assert rows[0] == {
        "name": "nz", "default": "100", "allowed": "1 to 1024", "meaning": rows[0]["meaning"], "section": "architecture"
    }  # fmt: skip


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
