"""GET /v1/jobs/{id}/events: a job's progress, metric points and state changes as Server-Sent
Events until it ends (docs/api.md, "Events"; the CLI's `watch` and the dashboard read it).

Every event's `id` is the stream's metric cursor: the id of the last metric point it has sent (0
before any). A client that reconnects with `Last-Event-ID` gets the job's current state and
progress and every point after that one, so it misses nothing. The waiting is done by the
process's one shared poller (gantry.api.http.fanout), never a query per stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from gantry.api.http.deps import ERRORS, INVALID, NOT_FOUND, ROW_ID_MAX, Svc
from gantry.api.http.fanout import Batch, EventHub, Snapshot
from gantry.api.service import as_api_view

router = APIRouter(prefix="/v1")

# The stream is text/event-stream; its refusals are JSON, as on every other route.
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {
        "description": doc["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for code, doc in (ERRORS | NOT_FOUND | INVALID).items()
}

RETRY_MS = 2000  # how long a browser's EventSource waits before it reconnects


def hub(app: FastAPI) -> EventHub:
    """The app's shared poller, made on first use."""
    found: EventHub | None = getattr(app.state, "events", None)
    if found is None:
        found = app.state.events = EventHub(app.state.service)
    return found


@dataclass(frozen=True)
class Watch:
    job_id: str
    last_id: int


def watch(
    svc: Svc,
    job_id: str,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=ROW_ID_MAX,
            description="the `id` of the last event seen, to resume",
        ),
    ] = None,
) -> Watch:
    """The caller may see job `job_id` (404 otherwise), checked before the stream starts."""
    svc.require(job_id)
    return Watch(job_id, last_event_id or 0)


@router.get(
    "/jobs/{job_id}/events", response_class=EventSourceResponse, tags=["jobs"], responses=_JSON_ERRORS
)
async def job_events(
    request: Request, job: Annotated[Watch, Depends(watch)]
) -> AsyncIterator[ServerSentEvent]:
    """The job's events (`state`, `progress`, `metric`, then `end`) until it ends; see docs/api.md."""
    async for event in follow(hub(request.app), job.job_id, since=job.last_id):
        yield event


async def follow(events: EventHub, job_id: str, *, since: int) -> AsyncIterator[ServerSentEvent]:
    """Job `job_id`'s events after metric point `since`: first its state and progress and the points
    it missed (read from the store), then what the poller hands over, until the job ends."""
    sub = await events.subscribe(job_id)
    stream = _Stream(cursor=since)
    try:
        batch = await events.replay(job_id, since=since)
        replayed, first = batch.read, True
        while True:
            for event in stream.events(batch, first=first):
                yield event
            if stream.done:
                return
            first = False
            batch = await sub.queue.get()
            if sub.lagged:  # batches were dropped: read what they held from the store again
                sub.drain()
                batch = await events.replay(job_id, since=stream.cursor)
                replayed = batch.read
            elif batch.read < replayed:
                batch.snapshot = batch.end = None  # read before our replay: its row is older
    finally:
        events.unsubscribe(sub)


class _Stream:
    """What one stream has sent: its cursor and the job's row, so nothing goes out twice."""

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor
        self.sent: Snapshot | None = None
        self.done = False

    def events(self, batch: Batch, *, first: bool) -> list[ServerSentEvent]:
        if batch.gone:  # deleted while watched: nothing more will come
            self.done = True
            return []
        points: list[tuple[str, object, int | None]] = [
            ("metric", {"name": p.name, "step": p.step, "value": p.value, "time": p.time}, p.id)
            for p in batch.points
            if p.id > self.cursor
        ]
        row: list[tuple[str, object, int | None]] = []
        snapshot, before = batch.snapshot, self.sent
        if snapshot is not None:
            if before is None or (snapshot.state, snapshot.error) != (before.state, before.error):
                row.append(("state", {"state": snapshot.state, "error": snapshot.error}, None))
            progress = (snapshot.step, snapshot.total_steps, snapshot.state)
            if before is None or progress != (before.step, before.total_steps, before.state):
                data = {"step": snapshot.step, "total_steps": snapshot.total_steps, "state": snapshot.state}
                row.append(("progress", data, None))
            self.sent = snapshot
        # A stream opens with the job's state and progress, then the points it missed; later, a
        # batch's points come before the row they led to (a job's last points, then its end).
        ordered = row + points if first else points + row[::-1]
        if snapshot is not None and snapshot.ended:
            if batch.end is not None:
                ordered.append(("end", as_api_view(batch.end), None))
            self.done = True
        out = []
        for name, payload, point_id in ordered:
            self.cursor = point_id if point_id is not None else self.cursor
            out.append(ServerSentEvent(event=name, data=payload, id=str(self.cursor)))
        if first and out:
            out[0].retry = RETRY_MS
        return out
