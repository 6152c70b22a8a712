"""What `gantry serve` starts, decided from the settings and its flags (the processes themselves run
in tests/integration/test_serve.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gantry.api.serve import plan, startup_lines
from gantry.jobs.settings import LOCAL_BROKER_URL, Settings


def lines(settings: Settings, **flags: object) -> str:
    p = plan(settings, **flags)  # type: ignore[arg-type]
    return "\n".join(startup_lines(p, host="0.0.0.0", port=9000, api_workers=2, database_note="x"))


def test_alone_it_queues_locally_for_a_worker_beside_it(tmp_path: Path) -> None:
    p = plan(Settings(home=tmp_path), with_worker=None)
    assert p.start_worker
    # Explicit for every child: the API queues where the worker reads.
    assert p.env["GANTRY_BROKER_URL"] == LOCAL_BROKER_URL and p.settings.local_queue
    assert p.env["GANTRY_HOME"] == str(tmp_path.resolve())
    shown = lines(Settings(home=tmp_path), with_worker=None)
    assert "http://localhost:9000/" in shown and "local queue" in shown and "worker.log" in shown
    assert not plan(Settings(home=tmp_path), with_worker=False).start_worker


def test_with_a_broker_it_is_the_api_alone_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GANTRY_BROKER_URL", raising=False)
    remote = Settings(home=tmp_path, broker_url="redis://:secret@redis:6379/0")
    p = plan(remote, with_worker=None)
    assert not p.start_worker and p.env["GANTRY_BROKER_URL"] == remote.broker_url
    assert plan(remote, with_worker=True).start_worker
    shown = lines(remote, with_worker=None)
    assert "redis://" in shown and "secret" not in shown and "remote `gantry worker`" in shown
