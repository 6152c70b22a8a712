"""Operator commands during an outage: exit 4 with a message that names the service, never a
traceback; and what does not need the service goes on working. (A database that stops answering in
the middle of a command: tests/integration/test_outages.py.)"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.jobs import store as db


def _queued(settings) -> str:
    with db.session_scope(db.connect(settings.database)) as s:
        return db.create_job(s, kind="train", model="gan", spec={"steps": 5}, total_steps=5).id


@pytest.mark.parametrize("command", [["status", "abc"], ["watch", "abc"], ["cancel", "abc"], ["list"]])
def test_an_unreachable_database_exits_4(monkeypatch, command) -> None:
    monkeypatch.setenv("GANTRY_DATABASE_URL", "postgresql+psycopg://gantry:pw-secret@127.0.0.1:1/gantry")
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 4, result.output
    assert "database" in result.output and "127.0.0.1:1" in result.output
    assert "pw-secret" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error


def test_status_list_and_cancel_need_no_broker(settings, monkeypatch) -> None:
    job_id = _queued(settings)
    monkeypatch.setenv("GANTRY_BROKER_URL", "redis://127.0.0.1:1/0")
    runner = CliRunner()
    assert runner.invoke(cli, ["status", job_id]).exit_code == 0
    assert runner.invoke(cli, ["list"]).exit_code == 0
    result = runner.invoke(cli, ["cancel", job_id])
    assert result.exit_code == 0 and "cancelled" in result.output


def test_a_resume_with_the_broker_down_changes_nothing(settings, monkeypatch) -> None:
    job_id = _queued(settings)
    with db.session_scope(db.connect(settings.database)) as s:
        db.finish_job(s, job_id, state="failed", error="its worker was killed")
    monkeypatch.setenv("GANTRY_BROKER_URL", "redis://127.0.0.1:1/0")
    result = CliRunner().invoke(cli, ["resume", job_id])
    assert result.exit_code == 4 and "broker" in result.output
    with db.session_scope(db.connect(settings.database)) as s:
        job = db.get_job(s, job_id)
        assert job.state == "failed" and job.attempt == 1
