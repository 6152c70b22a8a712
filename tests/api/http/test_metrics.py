"""GET /metrics: Prometheus' text format without a token: jobs by state and model, the queue, finished
jobs' durations, running jobs' throughput and request latencies by route template."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from gantry.jobs import store as db
from tests.api.http.conftest import Api
from tests.api.http.test_events import Worker


def scrape(api: Api) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, from a scrape without a token."""
    answer = api.client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_jobs_by_state_and_model_and_the_queue(api: Api) -> None:
    queued = api.submit(api.alice)
    cancelled = api.submit(api.bob)
    api.client.post(f"/v1/jobs/{cancelled['id']}/cancel", headers=api.bob)
    assert queued["state"] == "queued"
    samples = scrape(api)
    jobs = {
        state: value(samples, "gantry_jobs", state=state, kind="train", model="dcgan") for state in db.STATES
    }
    assert jobs == {"queued": 1, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert value(samples, "gantry_queue_length") == 1
    assert value(samples, "gantry_database_up") == 1
    assert not any(name == "gantry_broker_queue_length" for name, _ in samples)  # no broker: no series


def test_finished_jobs_durations_and_running_jobs_throughput(api: Api) -> None:
    done, running = api.submit(api.alice)["id"], api.submit(api.alice)["id"]
    Worker(api.service, done).finish()
    with db.session_scope(api.service.sessions) as s:  # a run of 100 s
        start = db.utcnow() - timedelta(seconds=200)
        s.execute(
            update(db.Job)
            .where(db.Job.id == done)
            .values(started_at=start, finished_at=start + timedelta(seconds=100))
        )
    worker = Worker(api.service, running)
    worker.step(1, images_per_sec=900.0, loss_D=1.0)
    worker.step(2, images_per_sec=1200.0, loss_D=0.9)
    samples = scrape(api)
    labels = {"kind": "train", "model": "dcgan", "state": "succeeded"}
    assert value(samples, "gantry_job_duration_seconds_count", **labels) == 1
    assert abs((value(samples, "gantry_job_duration_seconds_sum", **labels) or 0) - 100) < 1
    assert value(samples, "gantry_job_duration_seconds_bucket", le="60.0", **labels) == 0
    assert value(samples, "gantry_job_duration_seconds_bucket", le="300.0", **labels) == 1
    assert value(samples, "gantry_job_duration_seconds_bucket", le="+Inf", **labels) == 1
    assert value(samples, "gantry_train_images_per_second", job=running, model="dcgan") == 1200.0
    assert not any(dict(labels).get("job") == done for _, labels in samples)  # only running jobs


def test_request_latencies_by_route_template_method_and_status(api: Api) -> None:
    job = api.submit(api.alice)
    api.client.get(f"/v1/jobs/{job['id']}", headers=api.alice)
    api.client.get(f"/v1/jobs/{job['id']}", headers=api.alice)
    api.client.get("/v1/jobs/nope", headers=api.alice)
    api.client.get("/no/such/route")
    samples = scrape(api)
    count = "gantry_http_request_duration_seconds_count"
    assert value(samples, count, route="/v1/jobs/{job_id}", method="GET", status="200") == 2
    assert value(samples, count, route="/v1/jobs/{job_id}", method="GET", status="404") == 1
    assert value(samples, count, route="/v1/jobs", method="POST", status="201") == 1
    assert value(samples, count, route="unmatched", method="GET", status="404") == 1
    routes = {dict(labels).get("route") for name, labels in samples if name == count}
    assert not any(job["id"] in (r or "") or "nope" in (r or "") for r in routes)  # never a raw path
