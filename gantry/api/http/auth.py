"""Who a request acts for: `Authorization: Bearer TOKEN` on every /v1 call, or the dashboard's
session cookie (docs/api.md, "Accounts"). A missing, unknown, expired or revoked token is 401; the
token never appears in a log line or an answer.

A token found valid is trusted for GANTRY_API_AUTH_CACHE_SECONDS (default 1 s, never past its
expiry) by the process that checked it (`TokenCache`): a client polling a job costs one query, not
two, and no trip to a thread. A revoked token is refused within that long by every API process, at
once by the process that revoked it; an unknown one is looked up every time (nothing is kept for it).

Each token also has a request rate (GANTRY_API_RATE per second, bursts of GANTRY_API_BURST): a
token bucket per token, kept in each API process (with several uvicorn workers, each holds its own
bucket, so the service-wide rate is at most workers x the rate)."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from gantry.jobs.accounts import Caller, digest
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


class TokenCache:
    """The callers of tokens found valid in the last `seconds` (and not past their expiry), by the
    token's sha256; at most `size` of them (all are dropped when it is full: a miss costs a query)."""

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds, self.size = seconds, size
        self._callers: dict[str, tuple[Caller, float]] = {}

    def get(self, key: str) -> Caller | None:
        found = self._callers.get(key)
        if found is None:
            return None
        if time.monotonic() >= found[1]:
            self._callers.pop(key, None)
            return None
        return found[0]

    def put(self, key: str, caller: Caller) -> None:
        if self.seconds <= 0:
            return
        until = time.monotonic() + self.seconds
        if caller.expires_at is not None:
            until = min(until, time.monotonic() + (caller.expires_at - datetime.now(UTC)).total_seconds())
        if len(self._callers) >= self.size:
            self._callers.clear()
        self._callers[key] = (caller, until)

    def clear(self) -> None:
        self._callers.clear()


UNKNOWN = "the token is unknown, expired or revoked"
MISSING = "this call needs `Authorization: Bearer TOKEN` (see `gantry token create`)"


def authenticate(request: Request, token: str | None) -> Caller:
    """The caller `token` stands for, after its rate; NotAuthorised (401) otherwise. Looks in the
    store unless the process checked the token within GANTRY_API_AUTH_CACHE_SECONDS."""
    if token is None:
        raise NotAuthorised(MISSING)
    key = digest(token)
    caller = cached(request, key)
    if caller is None:
        caller = admit(request, key, request.app.state.service.authenticate(token))
    request.app.state.limiter.take(key)
    return caller


async def authenticate_async(request: Request, token: str | None) -> Caller:
    """`authenticate` for the event loop: the store is read on a thread, and only when the process
    has not checked the token within GANTRY_API_AUTH_CACHE_SECONDS (no trip to a thread then)."""
    if token is None:
        raise NotAuthorised(MISSING)
    key = digest(token)
    caller = cached(request, key)
    if caller is None:
        found = await run_in_threadpool(request.app.state.service.authenticate, token)
        caller = admit(request, key, found)
    request.app.state.limiter.take(key)
    return caller


def cached(request: Request, key: str) -> Caller | None:
    """The caller of the token whose sha256 is `key`, if this process checked it recently."""
    cache: TokenCache = request.app.state.tokens
    return cache.get(key)


def admit(request: Request, key: str, caller: Caller | None) -> Caller:
    """The caller the store found for a token (None: none, a 401), kept for the next requests."""
    if caller is None:
        raise NotAuthorised(UNKNOWN)
    request.app.state.tokens.put(key, caller)
    return caller
