"""Which errors are transient (retried with backoff) and which are the job's own (fail at once),
and the retry budget that bounds the retries."""

from __future__ import annotations

import pytest

from gantry.jobs.errors import InvalidInput, LeaseLost, ServiceUnavailable, is_transient, transient_service
from gantry.jobs.retry import Outage, backoff_delay


def _sqlalchemy_errors():
    from sqlalchemy import exc

    refused = Exception("connection refused")
    return {
        "operational": exc.OperationalError("SELECT 1", {}, refused),
        "disconnection": exc.DisconnectionError("server closed the connection"),
        "interface": exc.InterfaceError("SELECT 1", {}, refused),
        "pool timeout": exc.TimeoutError("QueuePool limit reached"),
        "invalidated": exc.DBAPIError("SELECT 1", {}, refused, connection_invalidated=True),
    }


def _botocore_errors():
    from botocore import exceptions as boto

    def client_error(code: str, status: int):
        response = {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return boto.ClientError(response, "PutObject")

    return {
        "endpoint": boto.EndpointConnectionError(endpoint_url="http://s3"),
        "connect timeout": boto.ConnectTimeoutError(endpoint_url="http://s3"),
        "read timeout": boto.ReadTimeoutError(endpoint_url="http://s3"),
        "connection closed": boto.ConnectionClosedError(endpoint_url="http://s3"),
        "500": client_error("InternalError", 500),
        "503 slow down": client_error("SlowDown", 503),
        "throttling": client_error("Throttling", 400),
        "request timeout": client_error("RequestTimeout", 400),
    }


def _redis_errors():
    import kombu.exceptions
    import redis

    return {
        "redis connection": redis.ConnectionError("Error 111 connecting"),
        "redis timeout": redis.TimeoutError("Timeout reading from socket"),
        "kombu": kombu.exceptions.OperationalError("Error 111 connecting"),
    }


@pytest.mark.parametrize(
    ("family", "service"),
    [(_sqlalchemy_errors, "database"), (_botocore_errors, "object storage"), (_redis_errors, "broker")],
)
def test_infrastructure_outages_are_transient_and_name_their_service(family, service) -> None:
    for name, exc in family().items():
        assert transient_service(exc) == service, name
        assert is_transient(exc), name


def test_the_jobs_own_errors_and_lasting_problems_are_not_transient() -> None:
    from botocore import exceptions as boto
    from sqlalchemy import exc

    def client_error(code: str, status: int):
        response = {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return boto.ClientError(response, "PutObject")

    lasting = [
        ValueError("non-finite loss after 3 rollbacks"),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        KeyError("images"),
        InvalidInput("dataset", "no images"),
        LeaseLost("j", 1),
        exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        exc.OperationalError("SELECT", {}, Exception("no such table: jobs")),  # SQLite: no schema
        client_error("NoSuchBucket", 404),
        client_error("AccessDenied", 403),
        boto.NoCredentialsError(),
        ServiceUnavailable("object storage", "bucket 'x' does not exist"),
    ]
    for error in lasting:
        assert not is_transient(error), error


def test_causes_are_followed_but_gantrys_own_verdict_stands() -> None:
    from sqlalchemy import exc

    blip = exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    try:
        try:
            raise blip
        except exc.OperationalError as inner:
            raise RuntimeError("while writing progress") from inner
    except RuntimeError as outer:
        assert transient_service(outer) == "database"
    assert is_transient(ServiceUnavailable("database", "cannot connect", transient=True))
    # The retry budget spent: a verdict, not a blip, even though its cause was one.
    try:
        raise ServiceUnavailable("database", "unreachable for 600 s") from blip
    except ServiceUnavailable as spent:
        assert not is_transient(spent)


def test_the_s3_store_marks_a_refused_connection_transient_and_missing_credentials_not() -> None:
    from botocore import exceptions as boto

    from gantry.jobs.storage import S3Store

    store = S3Store.__new__(S3Store)
    store.bucket, store.prefix, store.endpoint_url = "b", "", "http://127.0.0.1:1"

    def refuse(**_kw):
        raise boto.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    def no_credentials(**_kw):
        raise boto.NoCredentialsError()

    with pytest.raises(ServiceUnavailable) as refused:
        store._call(refuse, Key="k")
    assert is_transient(refused.value)
    with pytest.raises(ServiceUnavailable) as missing:
        store._call(no_credentials, Key="k")
    assert not is_transient(missing.value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    for failures in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (failures - 1))
        draws = [backoff_delay(failures) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling / 2 and len(set(draws)) > 100  # spread out: jittered


def test_a_call_is_retried_until_it_succeeds_within_the_budget() -> None:
    from sqlalchemy import exc

    clock = FakeClock()
    outage = Outage(600, clock=clock, sleep=clock.sleep)
    results = iter([exc.OperationalError("x", {}, Exception("refused"))] * 5 + ["done"])
    kept = []

    def flaky() -> str:
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    assert outage.call(flaky, between=lambda: kept.append(clock.now)) == "done"
    assert len(clock.slept) == 5 and len(kept) == 5  # the lease was kept during every wait
    assert outage.since is None  # the outage is over: the next one gets a whole budget


def test_a_call_gives_up_with_the_service_named_once_the_budget_is_spent() -> None:
    from botocore import exceptions as boto

    clock = FakeClock()
    outage = Outage(60, clock=clock, sleep=clock.sleep)

    def down() -> None:
        raise boto.EndpointConnectionError(endpoint_url="http://s3")

    with pytest.raises(ServiceUnavailable) as spent:
        outage.call(down)
    assert spent.value.service == "object storage" and "unreachable for 60 s" in str(spent.value)
    assert 60 <= clock.now <= 61 and not is_transient(spent.value)
    # The job's own error is not retried at all.
    with pytest.raises(ZeroDivisionError):
        Outage(60, clock=clock, sleep=clock.sleep).call(lambda: 1 / 0)
