"""Every /v1 body is JSON, whatever content type the client names: `curl -d '{...}'` sends
`Content-Type: application/x-www-form-urlencoded`, on which FastAPI would not parse the JSON and
answer 422 for the whole body. A form-encoded or untyped POST, PUT or PATCH under /v1 is read as
JSON here (a body that is not JSON still answers 422, "JSON decode error"). Dataset uploads keep
their own types (raw bytes or multipart), and the dashboard's forms are not under /v1. The routes
and the OpenAPI schema are unchanged: they still say application/json."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_WRITES = frozenset({"POST", "PUT", "PATCH"})
_READ_AS_JSON = (b"", b"application/x-www-form-urlencoded")


class JsonBodies:
    def __init__(self, app: ASGIApp, *, prefix: str = "/v1/", exempt: tuple[str, ...] = ()) -> None:
        self.app, self.prefix, self.exempt = app, prefix, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in _WRITES
            and scope["path"].startswith(self.prefix)
            and not scope["path"].startswith(self.exempt)
        ):
            headers = list(scope.get("headers") or [])
            given = dict(headers).get(b"content-type", b"")
            if given.split(b";")[0].strip().lower() in _READ_AS_JSON:
                headers = [(k, v) for k, v in headers if k != b"content-type"]
                scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)
