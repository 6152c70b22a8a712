"""The CLI as a client of `gantry serve` (docs/api.md, "The CLI as a client").

`HttpService` has the methods of `gantry.api.service.Service` that the job commands call, and answers
with the same views and the same exceptions, so `GANTRY_API_URL` changes where a command goes, not
what it prints or how it exits: 422 is InvalidInput naming the field (exit 2), 404 JobNotFound (3), an
API that cannot be reached, times out or answers 503 ServiceUnavailable naming its URL (4), 429
Throttled saying when to try again (4), 401/403 NotAuthorised naming GANTRY_API_TOKEN (5). The token
goes in the Authorization header only: never in a URL, a log line or a message."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from gantry.api.schemas import JobPage, JobView, LogLine, MetricPoint, Progress
from gantry.jobs.errors import (
    GantryError,
    InvalidInput,
    JobNotFound,
    NotAuthorised,
    ServiceUnavailable,
    Throttled,
)
from gantry.jobs.keys import job_prefix
from gantry.jobs.settings import Settings
from gantry.jobs.specs import OptionHelp
from gantry.jobs.storage import check_key, safe_join, safe_relative_key
from gantry.jobs.store import TERMINAL

log = logging.getLogger(__name__)

PAGE = 1000  # the most jobs GET /v1/jobs gives at once
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# An open event stream may be quiet for a while (a queued job); a read that waits longer is taken as
# a dropped stream and reconnected, not as an outage.
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=60.0)


class RouteMissing(GantryError):
    """The API answers but has no such route: an older `gantry serve` than this CLI."""

    exit_code = 4


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event of GET /v1/jobs/{id}/events."""

    name: str
    data: Any
    id: str | None


def public_url(url: str) -> str:
    """`url` without a user or password, as messages show it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpService:
    """The job commands' service over HTTP: `api_url` is where `gantry serve` listens; `token` an
    API token (`gantry token create`). `patience`: how long `follow_job` waits out an API that stops
    answering before it gives up (GANTRY_LEASE_SECONDS, as the local watch does)."""

    def __init__(self, api_url: str, token: str | None, *, patience: float = 120.0) -> None:
        base = api_url.strip().rstrip("/")
        base = base.removesuffix("/v1")  # the URL of /v1 itself is forgiven
        if urlsplit(base).scheme not in ("http", "https"):
            raise InvalidInput("GANTRY_API_URL", f"{public_url(base)!r} is not an http:// or https:// URL")
        self.url = public_url(base)
        self.patience = patience
        token = (token or "").strip() or None
        if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
            # httpx would refuse the header with the value in its message: say it here, without it.
            raise NotAuthorised("GANTRY_API_TOKEN holds characters no token has (a space, a line break?)")
        self._has_token = token is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT)

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpService:
        assert settings.api_url
        return cls(settings.api_url, settings.api_token, patience=settings.lease_seconds)

    # -- requests and their answers ----------------------------------------------------------
    def _request(
        self, method: str, path: str, *, job_id: str | None = None, expect_json: bool = True, **kwargs: Any
    ) -> Any:
        """The JSON answer of `method path`, or the exception the Service raises for it."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        self._check(response, method, path, job_id=job_id)
        if not expect_json:
            return None
        try:
            return response.json()
        except ValueError:
            raise ServiceUnavailable(
                "API",
                f"{self.url} answered {method} {path} with no JSON: is `gantry serve` what listens there?",
            ) from None

    def _unreachable(self, exc: httpx.TransportError) -> ServiceUnavailable:
        what = "timed out" if isinstance(exc, httpx.TimeoutException) else "cannot be reached"
        return ServiceUnavailable(
            "API",
            f"{self.url} {what} ({type(exc).__name__}); is `gantry serve` running there?",
            transient=True,
        )

    def _check(self, response: httpx.Response, method: str, path: str, *, job_id: str | None) -> None:
        status = response.status_code
        if status < 300:
            return
        detail = _detail(response)
        route = f"{method} {path.partition('?')[0]}"
        if status in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            # Starlette's own answer for a route it does not have (a missing job says which).
            raise RouteMissing(
                f"the API at {self.url} has no route {route}: it runs an older gantry, or GANTRY_API_URL "
                "is not where `gantry serve` listens"
            )
        if status == 404:
            raise JobNotFound(job_id) if job_id else JobNotFound(str(detail))
        if status in (401, 403):
            if not self._has_token:
                raise NotAuthorised(
                    f"the API at {self.url} needs a token: set GANTRY_API_TOKEN (`gantry token create` "
                    "on the service's machine prints one)"
                )
            refused = "refused" if status == 401 else "does not allow this for"
            raise NotAuthorised(
                f"the API at {self.url} {refused} the token in GANTRY_API_TOKEN ({detail}); "
                "ask its operator for a valid one"
            )
        if status == 422:
            raise _invalid(detail)
        if status == 413:
            raise InvalidInput("body", str(detail))
        if status == 429:
            retry = int(response.headers.get("retry-after", "0") or 0) or 1
            said = "" if "try again" in str(detail) else f"; try again in {retry} s"
            raise Throttled(f"{detail}{said}", retry_after=retry)
        raise ServiceUnavailable(
            "API", f"{self.url} answered {status} to {route}: {detail}", transient=status in (502, 503, 504)
        )

    # -- submitting ------------------------------------------------------------------------
    def submit_train(self, model: str, *, options: dict[str, Any] | None = None, **fields: Any) -> JobView:
        body = {"kind": "train", "model": model, **_given(fields), "options": options or {}}
        return _job_view(self.url, self._request("POST", "/v1/jobs", json=body))

    def submit_sample(self, job_id: str, **fields: Any) -> JobView:
        body = {"kind": "sample", "parent_job_id": job_id, **_given(fields)}
        return _job_view(self.url, self._request("POST", "/v1/jobs", json=body, job_id=job_id))

    def submit_evaluate(self, job_id: str, **fields: Any) -> JobView:
        body = {"kind": "evaluate", "parent_job_id": job_id, **_given(fields)}
        return _job_view(self.url, self._request("POST", "/v1/jobs", json=body, job_id=job_id))

    def resume(self, job_id: str, *, steps: int | None = None) -> JobView:
        body = {} if steps is None else {"steps": steps}
        return _job_view(
            self.url, self._request("POST", f"/v1/jobs/{_seg(job_id)}/resume", json=body, job_id=job_id)
        )

    # -- reading ---------------------------------------------------------------------------
    def end_dead_embedded_jobs(self) -> list[str]:
        return []  # the service's own business: no job runs in this process

    def get(self, job_id: str) -> JobView:
        return _job_view(self.url, self._request("GET", f"/v1/jobs/{_seg(job_id)}", job_id=job_id))

    def list_jobs(self, *, limit: int = 50, cursor: str | None = None, **filters: Any) -> JobPage:
        """One page, newest first, as Service.list_jobs: pass `next_cursor` back as `cursor`."""
        params = {**filters, "limit": limit, "cursor": cursor}
        page = self._request("GET", "/v1/jobs", params={k: v for k, v in params.items() if v is not None})
        return JobPage.model_validate(page)

    def logs(self, job_id: str, *, since_id: int | None = None) -> list[LogLine]:
        params = {} if since_id is None else {"since_id": since_id}
        lines = self._request("GET", f"/v1/jobs/{_seg(job_id)}/logs", params=params, job_id=job_id)
        return [LogLine.model_validate(line) for line in lines]

    def deletion(self, job_id: str, *, recursive: bool = False) -> list[str]:
        """The ids `delete` would remove (its sample and evaluate jobs first, with `recursive`);
        the API checks again when it deletes."""
        self.get(job_id)
        children = self.list_jobs(parent=job_id, limit=1000).jobs if recursive else []
        return [j.id for j in children] + [job_id]

    def delete(self, job_id: str, *, recursive: bool = False) -> None:
        params = {"recursive": "true"} if recursive else {}
        self._request("DELETE", f"/v1/jobs/{_seg(job_id)}", params=params, job_id=job_id, expect_json=False)

    def metrics(self, job_id: str) -> list[MetricPoint]:
        points = self._request("GET", f"/v1/jobs/{_seg(job_id)}/metrics", job_id=job_id)
        return [MetricPoint.model_validate(p) for p in points]

    def cancel(self, job_id: str) -> JobView:
        return _job_view(self.url, self._request("POST", f"/v1/jobs/{_seg(job_id)}/cancel", job_id=job_id))

    def option_help(self, model: str) -> list[OptionHelp]:
        models = self._request("GET", "/v1/models")
        if model not in models:
            raise InvalidInput(
                "model", f"{model!r} is not a model of the API at {self.url} ({', '.join(models)})"
            )
        return [OptionHelp(**row) for row in models[model]]

    # -- files -----------------------------------------------------------------------------
    def download(self, job_id: str, to: Path) -> list[Path]:
        """Copy the job's artifacts to `to`, keeping their layout under jobs/<id>/. Every key is
        checked before anything is written, as Service.download does; each file is written whole
        or not at all (a `.part` file renamed at the end)."""
        listed = self._request("GET", f"/v1/jobs/{_seg(job_id)}/artifacts", job_id=job_id)
        keys = [str(item["key"]) for item in listed]
        prefix = job_prefix(job_id) + "/"
        relative = [safe_relative_key(k, prefix) if k.startswith(prefix) else check_key(k) for k in keys]
        for rel in relative:
            safe_join(to, rel)
        paths = [to / rel for rel in relative]
        for key, target in zip(keys, paths, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            self._fetch(f"/v1/jobs/{_seg(job_id)}/artifacts/{quote(key, safe='/')}", part, job_id=job_id)
            part.replace(target)
        return paths

    def _fetch(self, path: str, target: Path, *, job_id: str) -> None:
        """Stream `path` to `target`, following redirects by hand: the token goes to the API only,
        never to the host of a presigned URL (which has its own signature)."""
        api = httpx.URL(str(self._http.base_url).rstrip("/") + path)
        url = api
        for _ in range(5):
            same = (url.scheme, url.host, url.port) == (api.scheme, api.host, api.port)
            client = self._http if same else httpx.Client(timeout=TIMEOUT)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect:
                        url = url.join(response.headers["location"])
                        continue
                    if not same and response.status_code >= 300:
                        response.read()
                        raise ServiceUnavailable(
                            "object storage", f"{url.host} answered {response.status_code} to a download link"
                        )
                    if response.status_code >= 300:
                        response.read()
                        self._check(response, "GET", path, job_id=job_id)
                    with target.open("wb") as f:
                        for chunk in response.iter_bytes():
                            f.write(chunk)
                    return
            except httpx.TransportError as exc:
                if same:
                    raise self._unreachable(exc) from None
                raise ServiceUnavailable(
                    "object storage", f"{url.host} cannot be reached ({type(exc).__name__})"
                ) from None
            finally:
                if not same:
                    client.close()
        raise ServiceUnavailable("API", f"{self.url} redirected {path} more than 5 times")

    # -- following a job ---------------------------------------------------------------------
    def events(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's Server-Sent Events from after `last_event_id`, until the server ends the stream."""
        path = f"/v1/jobs/{_seg(job_id)}/events"
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        try:
            with self._http.stream("GET", path, headers=headers, timeout=STREAM_TIMEOUT) as response:
                if response.status_code >= 300:
                    response.read()
                    self._check(response, "GET", path, job_id=job_id)
                yield from parse_events(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def follow_job(
        self, job_id: str, *, interval: float = 1.0
    ) -> Iterator[tuple[JobView, ServiceUnavailable | None]]:
        """The job as it changes, until it ends, with the outage being waited out (None: none).

        It follows the event stream, and reconnects with Last-Event-ID when the stream drops (after
        one GET of the job, so that a job that ended meanwhile is seen); an API without the stream
        route is polled every `interval` seconds. An API unreachable for longer than `patience`
        raises ServiceUnavailable."""
        job = self.get(job_id)
        yield job, None
        last_id: str | None = None
        streaming = True
        down_since: float | None = None
        while job.state not in TERMINAL:
            try:
                if streaming:
                    for event in self.events(job_id, last_event_id=last_id):
                        last_id = event.id or last_id
                        down_since = None
                        job = apply_event(job, event)
                        if event.name == "end":
                            ended = job if job.state in TERMINAL else self.get(job_id)
                            yield _job_view(self.url, ended.model_dump(mode="json")), None
                            return
                        yield job, None
                    log.info("job %s: the event stream ended early; reconnecting", job_id)
                job = self.get(job_id)  # a dropped stream, or polling
                down_since = None
                yield job, None
                if job.state not in TERMINAL:
                    time.sleep(interval if not streaming else 0.2)
            except RouteMissing:
                if not streaming:
                    raise
                log.info("the API at %s has no event stream: polling job %s", self.url, job_id)
                streaming = False
            except ServiceUnavailable as exc:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.patience:
                    raise
                yield job, exc
                time.sleep(interval)

    def close(self) -> None:
        self._http.close()


# --- helpers -------------------------------------------------------------------------------------


def parse_events(lines: Iterator[str]) -> Iterator[Event]:
    """Server-Sent Events from a stream's lines (the WHATWG rules: `event`, `data` (lines joined),
    `id`; comments and other fields ignored; a blank line dispatches)."""
    name, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield Event(name=name, data=value, id=event_id)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a keep-alive comment
        field, _, value_text = line.partition(":")
        value_text = value_text.removeprefix(" ")
        if field == "event":
            name = value_text
        elif field == "data":
            data.append(value_text)
        elif field == "id" and "\0" not in value_text:
            event_id = value_text


def apply_event(job: JobView, event: Event) -> JobView:
    """`job` after `event` (the events docs/api.md lists; any other, or one it cannot read, leaves
    `job` as it was)."""
    try:
        return _applied(job, event)
    except (ValueError, TypeError, KeyError):
        log.warning("job %s: an event %r it cannot read; ignored", job.id, event.name)
        return job


def _applied(job: JobView, event: Event) -> JobView:
    d = event.data if isinstance(event.data, dict) else {}
    if event.name == "end":
        return JobView.model_validate(d)
    if event.name == "progress":
        progress = Progress(
            step=d.get("step", job.progress.step), total_steps=d.get("total_steps", job.progress.total_steps)
        )
        return job.model_copy(update={"progress": progress, "state": d.get("state", job.state)})
    if event.name == "metric" and "name" in d and "value" in d:
        return job.model_copy(update={"metrics": {**job.metrics, d["name"]: float(d["value"])}})
    if event.name == "state":
        return job.model_copy(update={"state": d.get("state", job.state), "error": d.get("error", job.error)})
    return job


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields a command was given (None and empty repeats are the defaults), as JSON takes them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items() if v is not None and v != ()}


def _seg(text: str) -> str:
    return quote(text, safe="")


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text.strip()[:200] or response.reason_phrase


def _invalid(detail: Any) -> InvalidInput:
    """A 422's InvalidInput: gantry's own (`loc` ["body", field]) or FastAPI's validation errors,
    whose `loc` ends with the field."""
    if not isinstance(detail, list) or not detail:
        return InvalidInput("body", str(detail))
    messages = []
    for item in detail:
        loc = [str(part) for part in item.get("loc", [])]
        # gantry's own: ["body", field]; FastAPI's: ["body", <the kind>, ..., field] or ["query", field]
        field = (
            loc[1] if item.get("type") == "invalid_input" and len(loc) > 1 else (loc[-1] if loc else "body")
        )
        messages.append((field, str(item.get("msg", ""))))
    field, message = messages[0]
    rest = "".join(f"; {f}: {m}" for f, m in messages[1:])
    return InvalidInput(field, message + rest)


def _job_view(api_url: str, data: Any) -> JobView:
    """The job as the API answers it, its artifacts' URIs made absolute (the API gives its own
    routes, relative to its URL)."""
    job = JobView.model_validate(data)
    for artifact in job.artifacts:
        if artifact.uri.startswith("/"):
            artifact.uri = api_url.rstrip("/") + artifact.uri
    return job
