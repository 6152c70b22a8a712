"""The error types that cross the API boundary, each with the CLI exit code it maps to.

README.md, "Commands": 0 done; 1 the job failed or was cancelled; 2 bad input (the message names the field
and the allowed values); 3 no such job; 4 a service is unreachable (named, never a secret); 5 the API
refused the token (GANTRY_API_TOKEN).
"""

from __future__ import annotations


class GantryError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class InvalidInput(GantryError):
    """Bad input: raised before anything is written or queued. HTTP 422."""

    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class JobNotFound(GantryError):
    exit_code = 3

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


class ServiceUnavailable(GantryError):
    """A service (database, broker, object storage) cannot be reached or is not ready.

    `transient`: the service may come back by itself (a refused connection, a timeout), so a worker
    retries; False for what waiting does not mend (a missing bucket or schema, no credentials) or
    for an outage that outlasted the retry budget."""

    exit_code = 4

    def __init__(self, service: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.transient = transient


class WrongSchema(ServiceUnavailable):
    """The database is at another schema revision than this code's: `gantry db upgrade` has not run
    yet, or a newer gantry's has (a worker of the old version then refuses each job it is sent, and
    sends it back to the queue for one of the new; docs/operations.md, "Upgrade the schema")."""

    def __init__(self, message: str) -> None:
        super().__init__("database", message)


class Throttled(GantryError):
    """The service will not take this now (an owner's job quota, a request rate): try again after
    `retry_after` seconds. HTTP 429 with Retry-After."""

    exit_code = 4

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotAuthorised(GantryError):
    """The API refused the caller's token (missing, unknown, expired or revoked). HTTP 401."""

    exit_code = 5


class JobFailed(GantryError):
    """Training or sampling failed for a reason of its own (recorded on the job, not retried)."""

    exit_code = 1


class LeaseLost(GantryError):
    """Another attempt holds the job now (its row's attempt is no longer this attempt's token): this
    attempt stops at once and writes nothing more for the job."""

    def __init__(self, job_id: str, token: int) -> None:
        super().__init__(f"job {job_id}: attempt {token} lost its lease to a newer attempt")
        self.job_id = job_id
        self.token = token


# --- transient infrastructure errors ---------------------------------------------------------

# S3 error codes that mean "later", besides any 5xx status (AWS's retry guide and botocore's own
# standard retry mode list these).
_RETRYABLE_S3_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
    }
)


def transient_service(exc: BaseException) -> str | None:
    """The service ("database", "object storage", "broker") whose outage `exc` is, when it is a
    transient infrastructure error worth retrying with backoff; None for anything else, the job's
    own errors included. Follows `raise ... from` causes. The client libraries are imported here,
    lazily, so this module imports with none of them."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, GantryError):  # gantry's own verdict stands, whatever its cause
            return current.service if isinstance(current, ServiceUnavailable) and current.transient else None
        service = _transient_service(current)
        if service is not None:
            return service
        current = current.__cause__
    return None


def is_transient(exc: BaseException) -> bool:
    """True for a transient infrastructure error: retry it with backoff; False: fail at once."""
    return transient_service(exc) is not None


def _transient_service(exc: BaseException) -> str | None:
    try:
        from sqlalchemy import exc as sa
    except ImportError:  # pragma: no cover - a base dependency
        sa = None  # type: ignore[assignment]
    if sa is not None:
        if isinstance(exc, sa.OperationalError):
            # SQLite reports a schema problem as an OperationalError too: that one does not mend.
            message = str(exc.orig).lower()
            return None if "no such table" in message or "no such column" in message else "database"
        if isinstance(exc, (sa.DisconnectionError, sa.InterfaceError, sa.TimeoutError)):
            return "database"
        if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
            return "database"
    try:
        from botocore import exceptions as boto
    except ImportError:  # pragma: no cover - a base dependency
        boto = None  # type: ignore[assignment]
    if boto is not None:
        transient_boto = (
            boto.EndpointConnectionError,
            boto.ConnectTimeoutError,
            boto.ReadTimeoutError,
            boto.ConnectionClosedError,
            boto.ConnectionError,
        )
        if isinstance(exc, transient_boto):
            return "object storage"
        if isinstance(exc, boto.ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            code = str(error.get("Code", ""))
            if int(status) >= 500 or code in _RETRYABLE_S3_CODES or (code.isdigit() and int(code) >= 500):
                return "object storage"
            return None
    try:
        from redis import exceptions as redis
    except ImportError:  # pragma: no cover - a base dependency
        redis = None  # type: ignore[assignment]
    if redis is not None and isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return "broker"
    try:
        from kombu import exceptions as kombu
    except ImportError:  # pragma: no cover - celery's dependency
        kombu = None  # type: ignore[assignment]
    if kombu is not None and isinstance(exc, kombu.OperationalError):
        return "broker"
    if isinstance(exc, (ConnectionError, TimeoutError)):  # socket-level, from any client
        return "network"
    return None
