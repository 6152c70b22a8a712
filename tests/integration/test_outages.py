"""A database that stops answering while an operator command runs: `watch` (at a read of the job
or at its look for dead embedded jobs) and `logs --follow` ride out an outage shorter than the
lease, and `watch` exits 4 (with the message, no traceback) after a longer one; `logs --follow`
exits 4 at once when the database is away from the start; `status` and `cancel` exit 4. The outage is a TCP proxy in front of this session's PostgreSQL database that
the test cuts and restores; the server itself is left alone."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from gantry.api.cli import cli
from gantry.jobs import joblogs
from gantry.jobs import store as db

GANTRY = [sys.executable, "-m", "gantry.api.cli"]


class Proxy:
    """127.0.0.1:<port> forwarding to `target`; `cut()` closes it and every connection through it
    (the database is gone), `restore()` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self) -> None:
        assert self._listener is not None
        # shutdown() wakes the thread blocked in accept(); close() alone leaves it listening.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 1.0)
                for src in readable:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except (OSError, ValueError):
            return


@pytest.fixture
def proxied(postgres_url, tmp_path, monkeypatch) -> Iterator[tuple[Proxy, str]]:
    """(proxy, database URL through it, with a password that must never be shown)."""
    from sqlalchemy.engine import make_url

    from gantry.migrations import upgrade

    upgrade(postgres_url)
    url = make_url(postgres_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    through = url.set(host="127.0.0.1", port=proxy.port, password="pw-secret")
    through_url = through.render_as_string(hide_password=False)
    for var in ("GANTRY_STORAGE_URL", "GANTRY_BROKER_URL", "GANTRY_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path))
    monkeypatch.setenv("GANTRY_DATABASE_URL", through_url)
    monkeypatch.setenv("GANTRY_LEASE_SECONDS", "5")  # how long `watch` waits out an outage
    yield proxy, through_url
    proxy.cut()


def _running_job(postgres_url: str) -> str:
    sessions = db.connect(postgres_url)
    with db.session_scope(sessions) as s:
        job_id = db.create_job(s, kind="train", model="gan", spec={"steps": 5}, total_steps=5).id
    with db.session_scope(sessions) as s:
        db.claim_job(s, job_id, worker="gpu-1:1", lease_seconds=60)
    return job_id


def _watch(job_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*GANTRY, "watch", job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its lines as it prints them
    )


def _started(proc: subprocess.Popen) -> None:
    """Once `watch` has shown the job: its first reads went through (a fixed wait was too short for
    a busy host, and the cut came before them)."""
    assert proc.stderr is not None  # where its progress lines go (stdout: the job at its end)
    readable, _, _ = select.select([proc.stderr], [], [], 60)
    first = proc.stderr.readline() if readable else ""
    assert "running" in first and proc.poll() is None, (first, proc.communicate())


def test_watch_exits_4_when_the_database_stays_away(proxied, postgres_url) -> None:
    proxy, _ = proxied
    job_id = _running_job(postgres_url)
    proc = _watch(job_id)
    try:
        _started(proc)
        proxy.cut()
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 4, stderr
    assert "database" in stderr and f"127.0.0.1:{proxy.port}" in stderr
    assert "Traceback" not in stderr and "pw-secret" not in stderr


def test_watch_rides_out_a_short_database_outage(proxied, postgres_url) -> None:
    proxy, _ = proxied
    job_id = _running_job(postgres_url)
    proc = _watch(job_id)
    try:
        _started(proc)
        proxy.cut()
        time.sleep(1.5)
        proxy.restore()
        time.sleep(1.5)
        assert proc.poll() is None, proc.communicate()
        with db.session_scope(db.connect(postgres_url)) as s:
            db.finish_job(s, job_id, state="succeeded")
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_watch_rides_out_an_outage_met_by_its_look_for_dead_holders(
    proxied, postgres_url, monkeypatch
) -> None:
    """The database goes while `watch` looks for embedded jobs whose process died (every few
    seconds, between two reads of the job): it waits the outage out as it does at a read."""
    proxy, _ = proxied
    job_id = _running_job(postgres_url)
    real = db.running_on_host
    calls = []

    def then_cut(session, host):  # the first look is the command's start, before it watches
        calls.append(host)
        if len(calls) == 1:
            return real(session, host)
        monkeypatch.setattr(db, "running_on_host", real)
        proxy.cut()
        threading.Timer(1.0, proxy.restore).start()
        threading.Timer(2.0, _finish, args=(postgres_url, job_id)).start()
        return real(session, host)

    monkeypatch.setattr(db, "running_on_host", then_cut)
    monkeypatch.setattr("gantry.api.cli.DEAD_HOLDER_CHECK_SECONDS", 0.0)
    result = CliRunner().invoke(cli, ["watch", job_id])
    assert result.exit_code == 0, result.output
    assert len(calls) == 2 and "succeeded" in result.output  # the database went during the look


def test_logs_follow_rides_out_a_short_database_outage(proxied, postgres_url, monkeypatch) -> None:
    proxy, _ = proxied
    job_id = _running_job(postgres_url)
    real = joblogs.read

    def then_cut(session, job, **kwargs):  # the first read of the lines goes through, then the database goes
        monkeypatch.setattr(joblogs, "read", real)
        found = real(session, job, **kwargs)
        proxy.cut()
        threading.Timer(2.0, proxy.restore).start()
        threading.Timer(3.0, _finish, args=(postgres_url, job_id)).start()
        return found

    monkeypatch.setattr(joblogs, "read", then_cut)
    result = CliRunner().invoke(cli, ["logs", "--follow", job_id])
    assert result.exit_code == 0, result.output
    assert "database unreachable, retrying" in result.output


def test_logs_follow_exits_4_at_once_when_the_database_is_away_from_the_start(proxied, postgres_url) -> None:
    proxy, _ = proxied
    job_id = _running_job(postgres_url)
    proxy.cut()
    result = CliRunner().invoke(cli, ["logs", "--follow", job_id])
    assert result.exit_code == 4, result.output
    assert (
        "retrying" not in result.output and "pw-secret" not in result.output
    )  # a wrong URL is not waited on


def _finish(postgres_url: str, job_id: str) -> None:
    with db.session_scope(db.connect(postgres_url)) as s:
        db.finish_job(s, job_id, state="succeeded")


@pytest.mark.parametrize("command", ["status", "cancel"])
def test_status_and_cancel_exit_4_when_the_database_goes_mid_command(
    proxied, postgres_url, monkeypatch, command
) -> None:
    proxy, _ = proxied
    job_id = _running_job(postgres_url)
    real = db.schema_revision

    def then_cut(engine):  # the schema check passes; then the database goes away
        found = real(engine)
        proxy.cut()
        return found

    monkeypatch.setattr(db, "schema_revision", then_cut)
    result = CliRunner().invoke(cli, [command, job_id])
    assert result.exit_code == 4, result.output
    assert "database" in result.output and f"127.0.0.1:{proxy.port}" in result.output
    assert "pw-secret" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error
