"""Retrying transient infrastructure errors: exponential backoff with full jitter, within a budget.

A database restart, an S3 endpoint that refuses connections for a minute or a throttled request
mend by themselves; `Outage` keeps the time since the first failure of the current run of failures
(a success ends it), so every retried call shares one budget, `GANTRY_RETRY_SECONDS`. Delays follow
AWS's "Exponential Backoff And Jitter" (full jitter): a uniform draw in [0, min(cap, base * 2^n)],
so a fleet of workers that lost the same service do not come back in lockstep.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gantry.jobs.errors import LeaseLost, ServiceUnavailable, transient_service

log = logging.getLogger(__name__)

T = TypeVar("T")


def backoff_delay(failures: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1, 2, ...): full jitter."""
    return random.uniform(0.0, min(cap, base * 2 ** max(0, failures - 1)))


@dataclass
class Outage:
    """The current run of transient failures, shared by every retried call of one job attempt."""

    budget: float  # seconds a run of failures may last before giving up
    cap: float = 30.0  # the longest wait between two tries
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    since: float | None = field(default=None, init=False)  # the first failure's time, None: all well
    failures: int = field(default=0, init=False)
    not_before: float = field(default=0.0, init=False)  # no new try before this (see `due`)

    def ok(self) -> None:
        if self.since is not None:
            log.info("service back after %.1f s and %d failures", self.clock() - self.since, self.failures)
        self.since, self.failures, self.not_before = None, 0, 0.0

    def failed(self, exc: BaseException, service: str) -> float:
        """Record a transient failure; the delay before the next try. Past the budget: raise a
        (non-transient) ServiceUnavailable naming the service and how long it was out."""
        now = self.clock()
        if self.since is None:
            self.since = now
        self.failures += 1
        if now - self.since >= self.budget:
            raise ServiceUnavailable(
                service,
                f"unreachable for {now - self.since:.0f} s (GANTRY_RETRY_SECONDS is {self.budget:.0f}): "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
            ) from exc
        delay = min(backoff_delay(self.failures, cap=self.cap), max(0.0, self.since + self.budget - now))
        self.not_before = now + delay
        return delay

    def absorb(self, exc: Exception) -> tuple[str, float]:
        """A failed try of a retried call: raise `exc` again unless it is transient (gantry's own
        errors, LeaseLost among them, never are); else record it, and return (the service, the delay
        before the next try)."""
        service = transient_service(exc)
        if service is None:
            raise exc
        return service, self.failed(exc, service)

    def due(self) -> bool:
        """False while an outage's backoff delay runs: a call that may be skipped (a progress write,
        a liveness check) is not even tried, so a dead service is not hammered every step."""
        return self.clock() >= self.not_before

    @property
    def seconds(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since

    def call(self, fn: Callable[[], T], *, between: Callable[[], None] | None = None) -> T:
        """`fn()`, retried on transient errors with backoff until it succeeds or the budget is
        spent. `between` runs during each wait (e.g. a heartbeat that keeps the job's lease while
        object storage is down); its own failures are ignored, except LeaseLost."""
        while True:
            try:
                result = fn()
            except Exception as exc:
                service, delay = self.absorb(exc)
                log.warning("%s unavailable (%s); retrying in %.1f s", service, type(exc).__name__, delay)
                self.sleep(delay)
                if between is not None:
                    try:
                        between()
                    except LeaseLost:
                        raise
                    except Exception as exc:
                        if transient_service(exc) is None:
                            raise
                continue
            self.ok()
            return result
