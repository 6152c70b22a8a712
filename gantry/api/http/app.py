"""The HTTP app: `create_app(settings)` builds it; `gantry serve` runs it under uvicorn (docs/api.md).

Routes are thin: each validates its input, calls the service layer (gantry.api.service, the same one
the CLI calls) scoped to the caller, and returns what it returns. The service's errors map to HTTP
here, once: InvalidInput 422 naming the field, JobNotFound 404, NotAuthorised 401, Throttled 429 with
Retry-After, ServiceUnavailable 503 naming the service (never a secret)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from gantry.api.http import dashboard, events, files, health, jobs, metrics
from gantry.api.http.auth import RateLimiter, TokenCache
from gantry.api.http.jsonbody import JsonBodies
from gantry.api.http.limits import BodyLimit
from gantry.api.service import Service
from gantry.jobs.errors import InvalidInput, JobNotFound, NotAuthorised, ServiceUnavailable, Throttled
from gantry.jobs.settings import Settings
from gantry.jobs.store import KINDS

log = logging.getLogger(__name__)

# The database pool of each API process. Sync routes run on GANTRY_API_THREADS threads (see
# `_lifespan`), uploads on `files.SLOW_THREADS` more, each holding at most one connection at a time: a pool
# of up to 40 never makes a request wait for one (connections are opened on demand, 20 kept open).
# No ping before each checkout (a round trip on every request): after a database restart the
# requests that meet a dead connection answer 503, the pool drops every connection it held then,
# and the next requests open new ones (docs/api.md, "Running the service").
ENGINE_OPTIONS = {"pool_size": 20, "max_overflow": 20, "pool_pre_ping": False}

DESCRIPTION = """\
Train and sample GANs as jobs. Every `/v1` call needs `Authorization: Bearer TOKEN`
(`gantry token create --owner NAME` prints one); a token sees and acts on its owner's jobs only,
and another owner's job answers 404 as a missing one does."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        lifespan=_lifespan,
        title="gantry",
        version="1",
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = Service(settings, engine_options=ENGINE_OPTIONS)
    app.state.limiter = RateLimiter(settings.api_rate, settings.api_burst)
    app.state.tokens = TokenCache(settings.api_auth_cache_seconds)
    app.state.service.on_revoke(app.state.tokens.clear)  # this process refuses a revoked token at once
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes, exempt=("/v1/datasets",))
    app.add_middleware(JsonBodies, exempt=("/v1/datasets",))  # `curl -d '{...}'` names a form
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(files.router)
    app.include_router(events.router)
    metrics.install(app)  # GET /metrics and the request-latency middleware
    app.include_router(dashboard.router)
    _errors(app)
    _parameters_without_null(app)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Each process runs its requests' blocking work (the database, storage) on at most
    GANTRY_API_THREADS threads (AnyIO's default is 40): on a small machine more threads only take
    turns at Python's lock, and each turn costs (on 2 cores, 4 threads answered 1.3x the requests of
    10 and 1.5x those of 40). Uploads' storage writes take turns apart (`files.SLOW_THREADS`)."""
    settings: Settings = app.state.settings
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
    yield


def app_from_env() -> FastAPI:
    """For `uvicorn --factory gantry.api.http.app:app_from_env` (each worker reads the environment)."""
    return create_app(Settings())


def _parameters_without_null(app: FastAPI) -> None:
    """FastAPI documents an optional query or header parameter as `anyOf: [T, null]`, but a query
    string or a header cannot carry a null (a client sends the text "null", which is refused): an
    optional parameter is one that may be left out, as `required: false` already says."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        built = app.openapi_schema is not None
        spec = build()
        for operation in (op for path in spec["paths"].values() for op in path.values()):
            for parameter in [] if built else operation.get("parameters", []):
                options = parameter["schema"].get("anyOf", [])
                rest = [option for option in options if option != {"type": "null"}]
                if len(rest) == 1 < len(options):
                    del parameter["schema"]["anyOf"]
                    parameter["schema"].update(rest[0])
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _errors(app: FastAPI) -> None:
    def problem(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            # The router's 405 lists the methods of the first route that matched the path only
            # (GET of /v1/jobs/{id}, not its DELETE); a 405's Allow names them all (RFC 9110).
            allowed = [m for m in METHODS if _routed(app, {**request.scope, "method": m})]
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        return await http_exception_handler(request, exc)

    @app.exception_handler(InvalidInput)
    async def invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        # The shape of FastAPI's own validation errors, so a client reads one shape: `loc` is where
        # the field came from, then its name.
        where = (
            "query"
            if exc.field in request.query_params
            else "path"
            if exc.field in request.path_params
            else "body"
        )
        return problem(422, [{"loc": [where, exc.field], "msg": exc.message, "type": "invalid_input"}])

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A job body is one of three models chosen by its `kind`; pydantic names the one it tried
        # in `loc` (["body", "train", "seed"]): left out, so that `loc` is ["body", "seed"] as for
        # every other field.
        errors = []
        for error in exc.errors():
            loc = list(error.get("loc", ()))
            if len(loc) > 2 and loc[0] == "body" and loc[1] in KINDS:
                del loc[1]
            errors.append({**error, "loc": loc})
        return await request_validation_exception_handler(request, RequestValidationError(errors))

    @app.exception_handler(JobNotFound)
    async def not_found(_: Request, exc: JobNotFound) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(NotAuthorised)
    async def not_authorised(_: Request, exc: NotAuthorised) -> JSONResponse:
        return problem(401, str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Throttled)
    async def throttled(_: Request, exc: Throttled) -> JSONResponse:
        return problem(429, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_: Request, exc: ServiceUnavailable) -> JSONResponse:
        log.warning("answered 503: %s", exc)
        return problem(503, str(exc), {"Retry-After": "5"})


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _routed(app: FastAPI, scope: dict[str, Any]) -> bool:
    """Whether a route of `app` takes this path with this method."""
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)
