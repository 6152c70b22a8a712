"""GET /metrics: Prometheus' text format, no token (docs/api.md, "Metrics").

The job series come from the store at scrape time (a Collector: a few GROUP BY queries), so every
API process answers the same. Request latencies are observed in this process by a small ASGI
middleware; with several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR (an empty directory, before
the processes start) and every worker's observations are summed in each answer."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Float, case, cast, func, select
from sqlalchemy.orm import Session, aliased
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.queue import QUEUE

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds, from a minute's toy run to days of training.
DURATION_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
THROUGHPUT = "images_per_sec"  # the metric point a train job's worker records with each progress report


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: jobs by state and model, queue length, job durations, training
    throughput, request latencies (no token needed)."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """Add GET /metrics and the request-latency middleware to `app`."""
    latency = Histogram(
        "gantry_http_request_duration_seconds",
        "Time to each HTTP response's headers (a stream's or a download's first byte, not its length)",
        ["route", "method", "status"],
        buckets=LATENCY_BUCKETS,
        registry=None,  # registered below, per app: a process may build several apps (tests)
    )
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # every worker's latencies, from the shared directory
    else:
        registry.register(latency)
    registry.register(StoreCollector(app.state.service))
    app.state.metrics_registry = registry
    app.add_middleware(RequestLatency, histogram=latency)
    app.include_router(router)


class RequestLatency:
    """Observe each HTTP request's time to its response headers, labelled by the route's template
    (`/v1/jobs/{job_id}`, never the raw path, so ids do not become series), method and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, seen = time.perf_counter(), False

        async def timed(message: Message) -> None:
            nonlocal seen
            if message["type"] == "http.response.start" and not seen:
                seen = True
                self._observe(scope, message["status"], time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, timed)
        except Exception:
            if not seen:
                self._observe(scope, 500, time.perf_counter() - start)
            raise

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.histogram.labels(template, scope["method"], str(status)).observe(seconds)


class StoreCollector:
    """The job series, read from the store at each scrape."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def describe(self) -> list[Metric]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("gantry_database_up", "1 when the store answered this scrape, else 0")
        try:
            with db.session_scope(self.service.sessions) as s:
                families = list(self._families(s))
        except Exception as exc:
            log.warning("metrics: the store did not answer (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            yield from families
        yield from self._broker()

    def _families(self, s: Session) -> Iterable[Metric]:
        jobs = GaugeMetricFamily(
            "gantry_jobs", "Jobs in the store by state, kind and model", labels=["state", "kind", "model"]
        )
        queued = 0
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for state, kind, model, n in s.execute(
            select(db.Job.state, db.Job.kind, db.Job.model, func.count()).group_by(
                db.Job.state, db.Job.kind, db.Job.model
            )
        ):
            counts.setdefault((kind, model), dict.fromkeys(db.STATES, 0))[state] = n
            queued += n if state == "queued" else 0
        for (kind, model), by_state in sorted(counts.items()):
            for state, n in by_state.items():  # zeros too: a state a job left reads 0, not absent
                jobs.add_metric([state, kind, model], n)
        yield jobs
        yield GaugeMetricFamily("gantry_queue_length", "Queued jobs (the store's count)", value=queued)
        yield self._durations(s)
        yield self._throughput(s)

    def _durations(self, s: Session) -> Metric:
        """Every finished job in the store, from its first start to its end (a resumed job's wait
        counts); one aggregate query. It falls when a job is deleted or resumed."""
        seconds = _seconds_between(s, db.Job.started_at, db.Job.finished_at)
        buckets = [func.sum(case((seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
        query = (
            select(db.Job.kind, db.Job.model, db.Job.state, func.count(), func.sum(seconds), *buckets)
            .where(
                db.Job.state.in_(db.TERMINAL), db.Job.started_at.is_not(None), db.Job.finished_at.is_not(None)
            )
            .group_by(db.Job.kind, db.Job.model, db.Job.state)
        )
        family = HistogramMetricFamily(
            "gantry_job_duration_seconds",
            "Run time of finished jobs (started to ended), every one in the store",
            labels=["kind", "model", "state"],
        )
        for kind, model, state, count, total, *below in s.execute(query):
            cumulative = [(str(float(b)), int(n or 0)) for b, n in zip(DURATION_BUCKETS, below, strict=True)]
            family.add_metric(
                [kind, model, state], [*cumulative, ("+Inf", int(count))], sum_value=float(total or 0)
            )
        return family

    def _throughput(self, s: Session) -> Metric:
        """The latest `images_per_sec` point of each running train job (the worker's own figure:
        images over training time since its previous report, callbacks excluded)."""
        later = aliased(db.Metric)
        latest = (
            select(func.max(later.step))
            .where(later.job_id == db.Metric.job_id, later.name == THROUGHPUT)
            .scalar_subquery()
        )
        query = (
            select(db.Job.id, db.Job.model, db.Metric.value)
            .join(db.Metric, db.Metric.job_id == db.Job.id)
            .where(
                db.Job.state == "running",
                db.Job.kind == "train",
                db.Metric.name == THROUGHPUT,
                db.Metric.step == latest,
            )
            .order_by(db.Job.id, db.Metric.id)
        )
        family = GaugeMetricFamily(
            "gantry_train_images_per_second",
            "Training throughput of each running train job, as its worker last reported it",
            labels=["job", "model"],
        )
        rows = {job_id: (model, value) for job_id, model, value in s.execute(query)}  # ties: the newest row
        for job_id, (model, value) in rows.items():
            family.add_metric([job_id, model], value)
        return family

    # -- the broker (Redis only: a list per queue, cheap to measure) ------------------------------
    @cached_property
    def _redis(self) -> Any:
        url = self.service.settings.broker_url or ""
        if not url.startswith(("redis://", "rediss://")):
            return None
        import redis

        return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    def _broker(self) -> Iterator[Metric]:
        client = self._redis
        if client is None:
            return
        # Kombu's Redis transport keeps a list per priority step: the queue's name for priority 0,
        # the name + "\x06\x16" + step for steps 3, 6 and 9 (kombu.transport.redis.PRIORITY_STEPS).
        keys = [QUEUE] + [f"{QUEUE}\x06\x16{step}" for step in (3, 6, 9)]
        try:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
            length = sum(pipe.execute())
        except Exception as exc:
            log.warning("metrics: the broker did not answer (%s)", type(exc).__name__)
            return
        family = GaugeMetricFamily(
            "gantry_broker_queue_length", "Messages waiting on the broker's queue", labels=["queue"]
        )
        family.add_metric([QUEUE], length)
        yield family


def _seconds_between(s: Session, start: Any, end: Any) -> Any:
    """end - start in seconds, as SQL (PostgreSQL and SQLite spell it differently)."""
    if s.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)
