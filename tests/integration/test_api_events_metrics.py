"""The event streams and /metrics on PostgreSQL with a Redis broker: two jobs written at once each
stream exactly their own points; job durations are computed in PostgreSQL's SQL; the broker's queue
length is the messages that submissions put on Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import update

from gantry.api.http.fanout import EventHub
from gantry.jobs import store as db
from gantry.jobs.queue import QUEUE
from gantry.jobs.settings import Settings
from tests.api.http.conftest import Api, make_api
from tests.api.http.test_events import Worker, metric, stream
from tests.api.http.test_metrics import scrape, value

pytestmark = pytest.mark.integration


@pytest.fixture
def api(postgres_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    from gantry.migrations import upgrade

    upgrade(postgres_url)
    for var in ("GANTRY_STORAGE_URL", "GANTRY_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path))
    monkeypatch.setenv("GANTRY_DATABASE_URL", postgres_url)
    monkeypatch.setenv("GANTRY_BROKER_URL", redis_url)
    monkeypatch.setattr("fastapi.routing._PING_INTERVAL", 0.2)
    made = make_api(Settings())
    app: Any = made.client.app
    app.state.events = EventHub(made.service, interval=0.02)
    with made.client:
        yield made


def test_two_jobs_written_at_once_each_stream_their_own_points(api: Api) -> None:
    a, b = api.submit(api.alice, steps=20)["id"], api.submit(api.alice, steps=20)["id"]
    wa, wb = Worker(api.service, a), Worker(api.service, b)
    with stream(api, a, api.alice) as sa, stream(api, b, api.alice) as sb:
        sa.take(2), sb.take(2)
        for step in range(1, 21):
            wa.step(step, loss=float(step))
            wb.step(step, loss=-float(step))
        wa.finish()
        wb.finish("failed", error="boom")
        got_a, got_b = sa.rest(), sb.rest()
    assert [metric(e) for e in got_a if e.event == "metric"] == [("loss", s, float(s)) for s in range(1, 21)]
    assert [metric(e) for e in got_b if e.event == "metric"] == [("loss", s, -float(s)) for s in range(1, 21)]
    assert got_a[-1].data["state"] == "succeeded" and got_b[-1].data["state"] == "failed"


def test_metrics_on_postgresql_with_a_redis_broker(api: Api, redis_url: str) -> None:
    broker = redis.Redis.from_url(redis_url)
    before = broker.llen(QUEUE)
    done = api.submit(api.bob)["id"]
    api.submit(api.bob)
    Worker(api.service, done).finish()
    with db.session_scope(api.service.sessions) as s:  # a run of 90 s
        start = db.utcnow() - timedelta(seconds=100)
        s.execute(
            update(db.Job)
            .where(db.Job.id == done)
            .values(started_at=start, finished_at=start + timedelta(seconds=90))
        )
    samples = scrape(api)
    assert value(samples, "gantry_broker_queue_length", queue=QUEUE) == before + 2
    labels = {"kind": "train", "model": "dcgan", "state": "succeeded"}
    assert (value(samples, "gantry_job_duration_seconds_count", **labels) or 0) >= 1
    assert (value(samples, "gantry_job_duration_seconds_bucket", le="60.0", **labels) or 0) < (
        value(samples, "gantry_job_duration_seconds_bucket", le="300.0", **labels) or 0
    )
    assert (value(samples, "gantry_jobs", state="queued", kind="train", model="dcgan") or 0) >= 1
