"""GET /v1/jobs/{id}/events: a job's state, progress and every metric point as a worker records them
(through the store's fenced writes, as gantry.worker.run does), then `end`; a reconnect with
Last-Event-ID gets exactly what it missed; another owner's job is 404."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gantry.api.http.fanout import EventHub
from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.settings import Settings
from tests.api.http.conftest import Api, make_api


@dataclass
class Event:
    event: str
    data: Any
    id: str


class Reader:
    """Server-Sent Events off a streamed response, one at a time. Keep-alives come every 0.2 s in
    these tests, so a stream that sends nothing fails the test after `patience` instead of hanging."""

    def __init__(self, response: httpx.Response, patience: float = 10.0) -> None:
        self.lines = response.iter_lines()
        self.patience = patience
        self.keepalives = 0

    def next(self) -> Event:
        deadline = time.monotonic() + self.patience
        fields: dict[str, str] = {}
        for line in self.lines:
            if line.startswith(":"):
                self.keepalives += 1
                assert time.monotonic() < deadline, "no event within the deadline"
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif "event" in fields:
                return Event(fields["event"], json.loads(fields["data"]), fields["id"])
        raise AssertionError("the stream ended")

    def take(self, n: int) -> list[Event]:
        return [self.next() for _ in range(n)]

    def rest(self) -> list[Event]:
        """Every event up to the stream's end (it must end)."""
        events = []
        while True:
            try:
                events.append(self.next())
            except AssertionError as exc:
                if "ended" in str(exc):
                    return events
                raise


class Worker:
    """A job's worker as the store sees it: claim, fenced progress and metric writes, end."""

    def __init__(self, service: Service, job_id: str) -> None:
        self.sessions, self.job_id = service.sessions, job_id
        with db.session_scope(self.sessions) as s:
            job = db.claim_job(s, job_id, worker="test-host:1", lease_seconds=60)
            assert job is not None
            self.token = job.attempt

    def step(self, step: int, **values: float) -> None:
        with db.session_scope(self.sessions) as s:
            db.record_metrics(s, self.job_id, step=step, values=values, token=self.token)
            db.heartbeat(s, self.job_id, step=step, token=self.token)

    def finish(self, state: str = "succeeded", error: str | None = None) -> None:
        with db.session_scope(self.sessions) as s:
            db.finish_job(s, self.job_id, state=state, error=error, token=self.token)


@pytest.fixture
def api(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setattr("fastapi.routing._PING_INTERVAL", 0.2)
    made = make_api(settings)
    app: Any = made.client.app
    app.state.events = EventHub(made.service, interval=0.02)
    with made.client:
        yield made


@contextmanager
def stream(api: Api, job_id: str, who: dict[str, str], last_id: str | None = None) -> Iterator[Reader]:
    headers = who | ({"Last-Event-ID": last_id} if last_id is not None else {})
    with api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Reader(response)


def metric(e: Event) -> tuple[str, int, float]:
    return (e.data["name"], e.data["step"], e.data["value"])


def test_stream_follows_a_job_from_queued_to_its_end(api: Api) -> None:
    job = api.submit(api.alice, steps=30)
    with stream(api, job["id"], api.alice) as events:
        first = events.take(2)
        assert [(e.event, e.data) for e in first] == [
            ("state", {"state": "queued", "error": None}),
            ("progress", {"step": 0, "total_steps": 30, "state": "queued"}),
        ]
        worker = Worker(api.service, job["id"])
        assert [e.event for e in events.take(2)] == ["progress", "state"]
        for step in (10, 20, 30):
            worker.step(step, loss_D=step / 10, loss_G=-step / 10)
            got = events.take(3)  # both points, then the progress they led to
            assert [metric(e) for e in got[:2]] == [("loss_D", step, step / 10), ("loss_G", step, -step / 10)]
            assert got[2].event == "progress" and got[2].data == {
                "step": step,
                "total_steps": 30,
                "state": "running",
            }
            assert got[0].data["time"].endswith("+00:00")
        worker.finish()
        tail = events.rest()
    assert [e.event for e in tail] == ["progress", "state", "end"]
    assert tail[1].data == {"state": "succeeded", "error": None}
    assert tail[2].data == api.client.get(f"/v1/jobs/{job['id']}", headers=api.alice).json()
    ids = [int(e.id) for e in first + tail]
    assert ids == sorted(ids) and ids[-1] > 0  # each event carries the stream's metric cursor
    assert api.client.app.state.events.watching() == set()  # type: ignore[attr-defined]


def test_every_point_arrives_even_when_many_land_between_polls(api: Api) -> None:
    job = api.submit(api.alice, steps=60)
    worker = Worker(api.service, job["id"])
    with stream(api, job["id"], api.alice) as events:
        assert [e.event for e in events.take(2)] == ["state", "progress"]
        for step in range(1, 61):
            worker.step(step, loss=float(step), images_per_sec=100.0 + step)
        worker.finish("failed", error="RuntimeError: boom")
        rest = events.rest()
    points = [metric(e) for e in rest if e.event == "metric"]
    assert points == [
        point
        for step in range(1, 61)
        for point in (("loss", step, step), ("images_per_sec", step, 100.0 + step))
    ]
    assert [e.event for e in rest if e.event != "metric"][-2:] == ["state", "end"]
    assert rest[-2].data == {"state": "failed", "error": "RuntimeError: boom"}


def test_a_client_that_stops_reading_still_gets_every_point(api: Api) -> None:
    app: Any = api.client.app
    app.state.events.queue_size = 2  # the stream falls behind after two polls' batches
    job = api.submit(api.alice, steps=30)
    worker = Worker(api.service, job["id"])
    with stream(api, job["id"], api.alice) as events:
        events.take(2)
        for step in range(1, 31):  # one poll apart: many more batches than the stream holds
            worker.step(step, loss=float(step))
            time.sleep(0.03)
        worker.finish()
        rest = events.rest()
    assert [metric(e) for e in rest if e.event == "metric"] == [("loss", s, float(s)) for s in range(1, 31)]
    steps = [e.data["step"] for e in rest if e.event == "progress"]
    assert steps == sorted(steps) and steps[-1] == 30
    assert rest[-1].event == "end"


def test_reconnect_with_last_event_id_gets_exactly_the_missed_points(api: Api) -> None:
    job = api.submit(api.alice, steps=100)
    worker = Worker(api.service, job["id"])
    for step in (1, 2, 3):
        worker.step(step, loss=float(step))
    with stream(api, job["id"], api.alice) as events:
        seen = events.take(5)  # state, progress, then the three points so far
        assert [e.event for e in seen] == ["state", "progress", "metric", "metric", "metric"]
        last = seen[-1].id
    for step in (4, 5, 6):  # while the client is away
        worker.step(step, loss=float(step))
    worker.finish()
    with stream(api, job["id"], api.alice, last_id=last) as events:
        again = events.rest()
    assert [e.event for e in again] == ["state", "progress", "metric", "metric", "metric", "end"]
    assert again[0].data["state"] == "succeeded" and again[1].data["step"] == 6
    assert [metric(e) for e in again if e.event == "metric"] == [("loss", s, float(s)) for s in (4, 5, 6)]


def test_a_finished_job_streams_its_history_and_ends(api: Api) -> None:
    job = api.submit(api.alice, steps=2)
    worker = Worker(api.service, job["id"])
    worker.step(1, loss=1.0)
    worker.step(2, loss=0.5)
    worker.finish()
    with stream(api, job["id"], api.alice) as events:
        got = events.rest()
    assert [e.event for e in got] == ["state", "progress", "metric", "metric", "end"]
    assert got[-1].data["state"] == "succeeded"


def test_a_cancelled_queued_job_ends_its_stream(api: Api) -> None:
    job = api.submit(api.alice)
    with stream(api, job["id"], api.alice) as events:
        events.take(2)
        assert api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=api.alice).status_code == 200
        got = events.rest()
    assert [(e.event, e.data["state"]) for e in got] == [
        ("progress", "cancelled"),
        ("state", "cancelled"),
        ("end", "cancelled"),
    ]


def test_an_idle_stream_sends_keepalives(api: Api) -> None:
    job = api.submit(api.alice)
    worker = Worker(api.service, job["id"])
    with stream(api, job["id"], api.alice) as events:
        events.take(2)
        time.sleep(0.5)
        worker.step(1, loss=1.0)
        assert events.next().event == "metric"
        assert events.keepalives >= 1


def test_another_owners_job_is_404_and_no_token_401(api: Api) -> None:
    job = api.submit(api.alice)
    url = f"/v1/jobs/{job['id']}/events"
    assert api.client.get(url, headers=api.bob).status_code == 404
    assert api.client.get("/v1/jobs/nope/events", headers=api.bob).status_code == 404
    assert api.client.get(url).status_code == 401
    bad = api.client.get(url, headers=api.alice | {"Last-Event-ID": "x"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.text
    with stream(api, job["id"], api.admin) as events:  # an admin sees every owner's
        assert events.next().data["state"] == "queued"


def test_streams_of_many_jobs_share_one_poller(settings: Settings) -> None:
    api = make_api(settings)
    app: Any = api.client.app
    hub = app.state.events = EventHub(api.service, interval=0.02)
    jobs = [api.submit(api.alice)["id"] for _ in range(3)]
    with api.client:
        with stream(api, jobs[0], api.alice) as a, stream(api, jobs[1], api.alice) as b:
            a.take(2), b.take(2)
            assert hub.watching() == {jobs[0], jobs[1]}
            first = hub._task
            with stream(api, jobs[2], api.alice) as c:
                c.take(2)
                assert hub._task is first and hub.watching() == set(jobs)
        until(lambda: hub.watching() == set() and hub._task is None)


def until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)
