"""Schemathesis against the live OpenAPI schema: a real app under uvicorn (embedded settings: submitted
jobs stay queued) is fetched at /openapi.json and every operation in it is called with generated
input, valid and not, by the same engine as `schemathesis run`. No answer may be a 5xx, and every
answer must match the schema: a documented status code, content type, headers and body.

It drives Schemathesis' engine (what `schemathesis run` runs: the examples, coverage, fuzzing and
stateful phases) rather than `@schema.parametrize()`: a schema loaded from a live server needs
`schemathesis.pytest.from_fixture`, which fails under pytest 9.2 (it sets `Function._nodeid`).
Every default check runs, `ignored_auth` included (the schema declares the bearer scheme, so calls
without a token must answer 401); `positive_data_acceptance` is widened once, below.

The dashboard's pages are not in the schema (they are HTML for a browser, `include_in_schema=False`);
tests/api/http/test_dashboard.py and tests/browser cover them."""

from __future__ import annotations

import io
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events
from schemathesis.generation.value import GeneratedValue

from gantry.api.http.app import create_app
from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.keys import samples_key
from gantry.jobs.settings import Settings
from tests.api.http.conftest import Api
from tests.api.test_client import serving

EXAMPLES = 20  # per operation and phase: 30 s to 90 s on a 2-core machine, as busy as it is


@dataclass
class Seeded:
    """What exists before the run, so that generated calls also reach real jobs and files."""

    token: str
    queued: str  # a train job
    finished: str  # a succeeded train job with a sample grid, `grid`
    grid: str
    doomed: str  # another succeeded one, for DELETE (so `finished` keeps its grid for the others)
    dataset: str  # an upload's name


def seed(svc: Service) -> Seeded:
    token = svc.create_token("alice").token
    caller = svc.authenticate(token)
    assert caller is not None
    alice = svc.scoped(caller)
    train = {"dataset": "digits", "image_size": 16, "steps": 100}
    queued, finished, doomed = (alice.submit_train("dcgan", **train).id for _ in range(3))
    grid = samples_key(finished, 100)
    for job_id in (finished, doomed):
        with db.session_scope(svc.sessions) as s:  # as a worker would: claim, record, finish
            job = db.claim_job(s, job_id, worker="test-host:1", lease_seconds=60)
            assert job is not None
            db.record_metrics(s, job_id, step=100, values={"loss_D": 0.5}, token=job.attempt)
            db.finish_job(s, job_id, state="succeeded", token=job.attempt)
    svc.objects.put_bytes(grid, b"\x89PNG\r\n\x1a\n")
    with db.session_scope(svc.sessions) as s:
        db.add_artifact(s, finished, key=grid, kind="samples", size=8)
    npz = io.BytesIO()
    np.savez(npz, images=np.zeros((4, 8, 8, 3), np.uint8))
    upload = svc.settings.home / "faces.npz"
    upload.write_bytes(npz.getvalue())
    alice.add_dataset("faces.npz", upload)
    return Seeded(token, queued, finished, grid, doomed, "faces.npz")


class Crashes(logging.Handler):
    """Errors uvicorn logs: an exception raised after a response has begun (a stream's) is no 5xx
    that a client sees, only a cut-off body, but it is a server error all the same."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[str, Seeded]]:
    # No 429s from the token's rate or the owner's job quota: the run makes thousands of calls.
    relaxed = settings.model_copy(update={"api_rate": 1e6, "api_burst": 10**6, "api_max_active_jobs": 10**6})
    app = create_app(relaxed)
    seeded = seed(app.state.service)
    with serving(app) as url:
        yield url, seeded


def config(token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            # Reproducible: a fixed seed, and nothing kept between runs (no Hypothesis database, no
            # .schemathesis cache) to steer the next one.
            "seed": 29,
            "cache": {"enabled": False},
            "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
            "headers": {"Authorization": f"Bearer {token}"},
            "continue-on-failure": True,
            "request-timeout": 10,
            # An event stream of a job that has not ended never ends: read its first two events
            # (a stream opens with the job's state and progress) and hang up, as a client may.
            "max-stream-events": 2,
            "checks": {
                # A schema-valid call may still be refused with 422 by what JSON Schema cannot say:
                # the job specs (each model's options, steps x batch size), ISO dates, a cursor, a
                # job's state (cancel an ended job, delete a queued one), upload names. The 422 is
                # still checked against the schema; any other refusal of valid input fails.
                "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", 401, 404, 422, 429]},
            },
        }
    )


def with_seeded_values(schema: Any, seeded: Seeded) -> None:
    """Path parameters are random text; half the time use a seeded job, artifact or upload instead."""

    def seeded_values(method: str, path: str) -> dict[str, st.SearchStrategy[str]]:
        if "{key}" in path:
            return {"job_id": st.just(seeded.finished), "key": st.just(seeded.grid)}
        if "{name}" in path:
            return {"name": st.just(seeded.dataset)}
        if "{job_id}" not in path:
            return {}
        deletable = seeded.doomed if method == "DELETE" else seeded.finished
        return {"job_id": st.sampled_from([seeded.queued, deletable])}

    def known(generated: Any, drawn: dict[str, str]) -> Any:
        if isinstance(generated, GeneratedValue):  # a negative case: what it mutated stays invalid
            return generated
        return {**generated, **drawn}

    @schema.hook
    def before_generate_path_parameters(context: Any, strategy: st.SearchStrategy) -> st.SearchStrategy:
        values = seeded_values(context.operation.method.upper(), context.operation.path)
        if not values:
            return strategy
        return st.one_of(strategy, st.builds(known, strategy, st.fixed_dictionaries(values)))


def test_every_operation_answers_within_its_schema(served: tuple[str, Seeded]) -> None:
    url, seeded = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config(seeded.token))
    with_seeded_values(schema, seeded)
    operations = {result.ok().label for result in schema.get_all_operations()}
    assert {
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "POST /v1/jobs",
        "GET /v1/jobs/{job_id}/events",
    } <= operations

    crashes = Crashes()  # added now: uvicorn sets up its loggers as it starts, removing handlers
    logging.getLogger("uvicorn.error").addHandler(crashes)
    failures: dict[tuple[str, str], list[str]] = defaultdict(list)
    statuses: dict[str, set[int]] = defaultdict(set)
    errors: list[str] = []
    started = time.monotonic()
    try:
        for event in schemathesis.engine.from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                record = event.recorder
                for interaction in record.interactions.values():
                    if interaction.response is not None:
                        statuses[record.label].add(interaction.response.status_code)
                for case_id, checks in record.checks.items():
                    for check in checks:
                        if check.failure_info is not None:
                            failures[(record.label, check.name)].append(_describe(record, case_id, check))
            elif isinstance(event, events.NonFatalError | events.FatalError):
                errors.append(f"{getattr(event, 'label', '')}: {getattr(event, 'value', None) or event}")
    finally:
        logging.getLogger("uvicorn.error").removeHandler(crashes)
    took = time.monotonic() - started
    errors += [crashes.format(record)[-1500:] for record in crashes.records]  # the end names the error

    report = [
        f"{label} [{name}]\n" + "\n".join(found[:3]) for (label, name), found in sorted(failures.items())
    ]
    assert not errors and not report, "\n\n".join(errors + report)
    assert operations <= set(statuses), f"not called: {operations - set(statuses)}"
    # Generated input alone would reach little but 404 and 422: the seeded values make each
    # operation succeed too (except the upload, whose body would have to be a real archive).
    unanswered = {op for op in operations - {"POST /v1/datasets"} if not any(s < 300 for s in statuses[op])}
    assert not unanswered, f"never a 2xx: {sorted(unanswered)} ({took:.0f} s)"


def _describe(record: Any, case_id: str, check: Any) -> str:
    failure = check.failure_info.failure
    case = record.cases[case_id].value
    response = record.interactions[case_id].response if case_id in record.interactions else None
    answer = "" if response is None else f"\n  -> {response.status_code} {response.content[:300]!r}"
    return f"  {failure.title}: {failure.message}\n  {case.as_curl_command()}{answer}"


def test_what_the_schema_run_found_stays_fixed(api: Api) -> None:
    """Each of these was a Schemathesis finding; pinned here so that a seed change cannot hide one."""
    job = api.submit(api.alice)
    # A 405 names every method of the path, not only those of the first route that matched it.
    answer = api.client.put(f"/v1/jobs/{job['id']}", headers=api.alice)
    assert answer.status_code == 405 and answer.headers["allow"] == "DELETE, GET"
    # JSON `false` is not a seed (it was read as 0 and the job queued).
    answer = api.client.post(
        "/v1/jobs", json={"kind": "train", "model": "dcgan", "seed": False}, headers=api.alice
    )
    # `loc` names the field as for every other one, not the job kind pydantic tried first.
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "seed"]
    # A query parameter's error says so (it said "body").
    answer = api.client.get("/v1/jobs", params={"state": "done"}, headers=api.alice)
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "state"]
    # An id past SQL's integers is refused up front (it broke the event stream after its 200).
    huge = str(2**64)
    events = api.client.get(f"/v1/jobs/{job['id']}/events", headers={**api.alice, "Last-Event-ID": huge})
    logs = api.client.get(f"/v1/jobs/{job['id']}/logs", params={"since_id": huge}, headers=api.alice)
    assert events.status_code == logs.status_code == 422
    # An optional parameter is documented as one that may be left out, not as one that may be null.
    parameters = [
        p for path in api.client.get("/openapi.json").json()["paths"].values() for op in path.values()
        for p in op.get("parameters", [])
    ]  # fmt: skip
    assert parameters and not [p["name"] for p in parameters if "anyOf" in p["schema"]]
