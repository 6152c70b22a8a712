"""Who a request acts for: `Authorization: Bearer TOKEN` on every /v1 call, or the dashboard's
session cookie (docs/api.md, "Accounts"). A missing, unknown, expired or revoked token is 401; the
token never appears in a log line or an answer.

Each token also has a request rate (GANTRY_API_RATE per second, bursts of GANTRY_API_BURST): a
token bucket per token, kept in each API process (with several uvicorn workers, each holds its own
bucket, so the service-wide rate is at most workers x the rate)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from fastapi import Request

from gantry.jobs.accounts import Caller
from gantry.jobs.errors import NotAuthorised, Throttled

COOKIE = "gantry_token"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def request_token(request: Request) -> str | None:
    """The bearer token; for a GET, the dashboard's session cookie as well (a browser's EventSource
    and image tags cannot send headers). Only reads take the cookie: it is SameSite=Strict, and a
    write needs the header or the dashboard's CSRF-checked form."""
    token = bearer_token(request)
    if token is None and request.method in ("GET", "HEAD"):
        token = request.cookies.get(COOKIE) or None
    return token


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per API token: `rate` requests a second, `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens < 1:
                wait = math.ceil((1 - bucket.tokens) / self.rate)
                raise Throttled(
                    f"too many requests for this token (GANTRY_API_RATE={self.rate:g}/s); "
                    f"try again in {wait} s",
                    retry_after=wait,
                )
            bucket.tokens -= 1


def authenticate(request: Request, token: str | None) -> Caller:
    """The caller `token` stands for, after its rate; NotAuthorised (401) otherwise."""
    if token is None:
        raise NotAuthorised("this call needs `Authorization: Bearer TOKEN` (see `gantry token create`)")
    state = request.app.state
    caller = state.service.authenticate(token)
    if caller is None:
        raise NotAuthorised("the token is unknown, expired or revoked")
    from gantry.jobs.accounts import digest

    state.limiter.take(digest(token))
    return caller
