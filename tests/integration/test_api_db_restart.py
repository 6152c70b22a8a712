"""The API's database pool pings nothing before a checkout (a round trip on every request saved,
gantry.api.http.app.ENGINE_OPTIONS): after PostgreSQL restarts, every connection the pool holds is
dead. A request that meets one may answer 503; the ones after it must work, for reads and writes.
Against a private cluster (tests/chaos/services.py), which this test restarts."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gantry.api.http.app import create_app
from gantry.jobs import store as db
from gantry.jobs.settings import Settings
from tests.chaos.services import Missing, Postgres


@pytest.fixture
def private_pg() -> Iterator[Postgres]:
    try:
        pg = Postgres()
        pg.start()
    except Missing as exc:
        if os.environ.get("GANTRY_REQUIRE_SERVICES") == "1":
            pytest.fail(f"private PostgreSQL: {exc} (GANTRY_REQUIRE_SERVICES=1)")
        pytest.skip(f"private PostgreSQL cannot run here: {exc}")
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_the_api_recovers_at_its_next_request_after_a_database_restart(
    private_pg: Postgres, tmp_path, mode: str
) -> None:
    from gantry.migrations import upgrade

    url = private_pg.create_database("gantry_restart")
    upgrade(url)
    app = create_app(Settings(home=tmp_path, database_url=url))
    svc = app.state.service
    token = svc.create_token("alice").token
    with db.session_scope(svc.sessions) as s:
        job_ids = [
            db.create_job(s, kind="train", model="dcgan", spec={}, total_steps=10, owner="alice").id
            for _ in range(2)
        ]
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        assert client.get(f"/v1/jobs/{job_ids[0]}", headers=headers).status_code == 200
        # Several idle connections in the pool, as a busy API has: all of them die with the server.
        engine = svc.sessions.kw["bind"]
        held = [engine.connect() for _ in range(4)]
        for conn in held:
            conn.close()
        assert engine.pool.checkedin() >= 4

        with private_pg.connect() as admin:  # this cluster commits asynchronously: keep the rows
            admin.execute("CHECKPOINT")
        private_pg.restart(mode)

        first = client.get(f"/v1/jobs/{job_ids[0]}", headers=headers)
        assert first.status_code in (200, 503), first.text
        if first.status_code == 503:
            assert "database" in first.json()["detail"]
        for _ in range(3):  # every later request works: no dead connection is handed out again
            answer = client.get(f"/v1/jobs/{job_ids[0]}", headers=headers)
            assert answer.status_code == 200, answer.text
        cancelled = client.post(f"/v1/jobs/{job_ids[1]}/cancel", headers=headers)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        listed = client.get("/v1/jobs", headers=headers)
        assert listed.status_code == 200 and len(listed.json()["jobs"]) == 2
