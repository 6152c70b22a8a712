"""/v1/jobs: what a user submits, reads and is refused; nothing is written or queued for bad input."""

from __future__ import annotations

import pytest

from gantry.jobs.settings import Settings
from tests.api.http.conftest import Api, make_api


def count(api: Api) -> int:
    return len(api.client.get("/v1/jobs", headers=api.admin).json()["jobs"])


def test_submit_answers_the_job_as_status_json_shows_it(api: Api) -> None:
    job = api.submit(api.alice, seed=3, options={"lr": 1e-4})
    assert job["state"] == "queued" and job["model"] == "dcgan" and job["kind"] == "train"
    assert job["progress"] == {"step": 0, "total_steps": 100}
    assert job["spec"]["options"]["lr"] == 1e-4 and job["spec"]["seed"] == 3
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.alice).json() == job


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"model": "nope"}, "model", "dcgan"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"image_size": 24}, "image_size", "power of two"),
        ({"options": {"lr": "fast"}}, "lr", "number"),
        ({"options": {"no_such_option": 1}}, "no_such_option", ""),
        ({"dataset": "/etc"}, "dataset", "paths on the server are never read"),
        ({"dataset": "file:///etc/passwd"}, "dataset", "GANTRY_ALLOWED_DATA_PREFIXES"),
        ({"dataset": "s3://elsewhere/data.zip"}, "dataset", "GANTRY_ALLOWED_DATA_PREFIXES"),
        ({"steps": 1_000_000, "batch_size": 4096}, "steps", "GANTRY_API_MAX_TRAIN_IMAGES"),
        ({"options": {"eval_every": 10, "eval_metric": "fid"}}, "eval_metric", "GANTRY_INCEPTION_WEIGHTS"),
    ],
)
def test_bad_input_is_422_naming_the_field_and_nothing_is_recorded(
    api: Api, body: dict, field: str, words: str
) -> None:
    answer = api.client.post(
        "/v1/jobs", json={"kind": "train", "model": "dcgan", "dataset": "digits"} | body, headers=api.alice
    )
    assert answer.status_code == 422, answer.text
    problems = answer.json()["detail"]
    assert any(field in ".".join(map(str, p["loc"])) for p in problems), problems
    assert words in str(problems)
    assert count(api) == 0


def test_unknown_kind_or_field_is_422(api: Api) -> None:
    for body in ({"kind": "paint", "model": "dcgan"}, {"kind": "train", "model": "dcgan", "colour": 1}, []):
        assert api.client.post("/v1/jobs", json=body, headers=api.alice).status_code == 422
    assert count(api) == 0


def test_evaluate_takes_the_clis_samples(api: Api) -> None:
    job = api.submit(api.alice)
    body = {"kind": "evaluate", "parent_job_id": job["id"], "samples": 64}  # --samples: a field it knows
    answer = api.client.post("/v1/jobs", json=body, headers=api.alice)
    assert answer.status_code == 422 and "no checkpoint" in answer.text, answer.text  # not an unknown field


def test_sample_of_a_job_without_checkpoint_names_the_checkpoint(api: Api) -> None:
    job = api.submit(api.alice)
    answer = api.client.post(
        "/v1/jobs", json={"kind": "sample", "parent_job_id": job["id"]}, headers=api.alice
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "checkpoint"]


def test_an_allowed_s3_prefix_is_accepted(settings: Settings) -> None:
    api = make_api(settings.model_copy(update={"allowed_data_prefixes": "s3://team-data/shared"}))
    answer = api.client.post(
        "/v1/jobs",
        json={"kind": "train", "model": "dcgan", "dataset": "s3://team-data/shared/../private/x.zip"},
        headers=api.alice,
    )
    assert answer.status_code == 422 and "not allowed" in answer.text  # no escaping the prefix


def test_owner_quota_is_429_with_retry_after(settings: Settings) -> None:
    api = make_api(settings.model_copy(update={"api_max_active_jobs": 2}))
    first = api.submit(api.alice)
    api.submit(api.alice)
    answer = api.client.post("/v1/jobs", json={"kind": "train", "model": "dcgan"}, headers=api.alice)
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0
    assert "GANTRY_API_MAX_ACTIVE_JOBS" in answer.json()["detail"]
    api.submit(api.bob)  # another owner's quota is its own
    api.client.post(f"/v1/jobs/{first['id']}/cancel", headers=api.alice)
    api.submit(api.alice)  # a finished job frees its place


def test_request_rate_per_token_is_429(settings: Settings) -> None:
    api = make_api(settings.model_copy(update={"api_rate": 1, "api_burst": 3}))
    codes = [api.client.get("/v1/jobs", headers=api.alice).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429
    assert api.client.get("/v1/jobs", headers=api.bob).status_code == 200


def test_a_json_body_is_read_whatever_content_type_curl_names(api: Api) -> None:
    # `curl -d '{...}'` says application/x-www-form-urlencoded; a client may name none at all.
    body = '{"kind":"train","model":"dcgan","dataset":"digits","image_size":16,"steps":100}'
    for named in ({"content-type": "application/x-www-form-urlencoded"}, {}):
        made = api.client.post("/v1/jobs", content=body, headers=api.alice | named)
        assert made.status_code == 201, made.text
        assert made.json()["spec"]["image_size"] == 16
    job_id = made.json()["id"]
    form = {"content-type": "application/x-www-form-urlencoded"}
    cancelled = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.alice | form)
    assert cancelled.json()["state"] == "cancelled"
    resumed = api.client.post(f"/v1/jobs/{job_id}/resume", content='{"steps": 50}', headers=api.alice | form)
    assert resumed.status_code == 200 and resumed.json()["progress"]["total_steps"] == 50, resumed.text
    # What is not JSON is still refused, and nothing is recorded for it.
    bad = api.client.post("/v1/jobs", content="kind=train&model=dcgan", headers=api.alice | form)
    assert bad.status_code == 422 and "JSON" in bad.text
    assert count(api) == 2
    # The schema still says what to send.
    schema = api.client.get("/openapi.json").json()
    assert list(schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]) == ["application/json"]


def test_body_over_the_limit_is_413(api: Api) -> None:
    big = {"kind": "train", "model": "dcgan", "options": {"x": "y" * 2_000_000}}
    assert api.client.post("/v1/jobs", json=big, headers=api.alice).status_code == 413

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b" " * 65536

    answer = api.client.post(
        "/v1/jobs", content=chunks(), headers=api.alice | {"content-type": "application/json"}
    )
    assert answer.status_code == 413
    assert count(api) == 0


def test_list_filters_and_metrics(api: Api) -> None:
    a = api.submit(api.alice)
    api.client.post(f"/v1/jobs/{a['id']}/cancel", headers=api.alice)
    b = api.submit(api.alice, model="gan", dataset="ring8", image_size=None)
    listed = api.client.get("/v1/jobs", params={"state": "queued"}, headers=api.alice).json()["jobs"]
    assert [j["id"] for j in listed] == [b["id"]]
    assert api.client.get("/v1/jobs", params={"state": "sleeping"}, headers=api.alice).status_code == 422
    assert api.client.get(f"/v1/jobs/{a['id']}/metrics", headers=api.alice).json() == []


def test_models_lists_each_models_options(api: Api) -> None:
    models = api.client.get("/v1/models", headers=api.alice).json()
    assert {"dcgan", "gan", "srgan", "srresnet", "text2img"} <= set(models)
    assert any(o["name"] == "lr" for o in models["dcgan"])


def test_readyz_names_what_is_down(settings: Settings) -> None:
    api = make_api(settings)
    assert api.client.get("/readyz").status_code == 200
    down = make_api(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    answer = down.client.get("/readyz")
    assert answer.status_code == 503 and "broker" in answer.json()["checks"]
    assert answer.json()["checks"]["database"] == "ok"


def test_names_tags_and_init_from_through_the_api(api: Api) -> None:
    job = api.submit(api.alice, name="first run", tags=["a", "b"])
    assert job["name"] == "first run" and job["tags"] == ["a", "b"]
    listed = api.client.get("/v1/jobs", params={"tag": "a"}, headers=api.alice).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    # Starting from a job with no checkpoint, or from another owner's, is the same refusal.
    for who in (api.alice, api.bob):
        answer = api.client.post(
            "/v1/jobs", json={"kind": "train", "model": "dcgan", "init_from": job["id"]}, headers=who
        )
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "init_from"]
