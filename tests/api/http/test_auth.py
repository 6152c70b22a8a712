"""Accounts: every /v1 call needs a valid token; an owner sees only its own jobs; tokens are stored
hashed and never echoed."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from gantry.api.service import Service
from gantry.jobs import store as db
from gantry.jobs.settings import Settings
from tests.api.http.conftest import Api, bearer, make_api


def test_no_wrong_expired_or_revoked_token_is_401(api: Api) -> None:
    job = api.submit(api.alice)
    expired = api.service.create_token("carol").token
    with api.service._session() as s:  # an expiry in the past, as if 90 days went by
        row = s.scalars(select(db.ApiToken).where(db.ApiToken.owner == "carol")).one()
        row.expires_at = db.utcnow() - timedelta(seconds=1)
    revoked = api.service.create_token("dave")
    api.service.revoke_token(revoked.id)
    for headers in (
        {},
        {"Authorization": "Basic YWxpY2U6eA=="},
        bearer("gty_not-a-token"),
        bearer(expired),
        bearer(revoked.token),
    ):
        for method, path in (("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{job['id']}"), ("POST", "/v1/jobs")):
            answer = api.client.request(method, path, headers=headers, json={})
            assert answer.status_code == 401, (headers, path, answer.text)
            assert answer.headers["www-authenticate"] == "Bearer"
    assert api.client.get("/healthz").status_code == 200  # probes need no token


def test_another_owners_job_is_404_exactly_as_a_missing_one(api: Api) -> None:
    job = api.submit(api.alice)
    missing = api.client.get("/v1/jobs/000000000000", headers=api.bob)
    for method, path in (
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/metrics"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
    ):
        answer = api.client.request(method, path, headers=api.bob)
        assert answer.status_code == 404
        assert answer.json()["detail"] == missing.json()["detail"].replace("000000000000", job["id"])
    assert api.client.get("/v1/jobs", headers=api.bob).json()["jobs"] == []
    # Sampling or evaluating another owner's train job is the same 404.
    for kind in ("sample", "evaluate"):
        answer = api.client.post("/v1/jobs", json={"kind": kind, "parent_job_id": job["id"]}, headers=api.bob)
        assert answer.status_code == 404, answer.text
    # Still queued: bob's cancel did nothing.
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=api.alice).json()["state"] == "queued"


def test_an_admin_sees_every_owner(api: Api) -> None:
    mine, theirs = api.submit(api.alice), api.submit(api.bob)
    listed = {j["id"] for j in api.client.get("/v1/jobs", headers=api.admin).json()["jobs"]}
    assert {mine["id"], theirs["id"]} <= listed
    assert {j["id"] for j in api.client.get("/v1/jobs", headers=api.alice).json()["jobs"]} == {mine["id"]}
    assert (
        api.client.post(f"/v1/jobs/{theirs['id']}/cancel", headers=api.admin).json()["state"] == "cancelled"
    )


def test_tokens_are_stored_hashed_and_never_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api(settings)
    token = api.alice["Authorization"].split()[1]
    api.submit(api.alice)
    api.client.get("/v1/jobs/nope", headers=api.alice)
    api.client.get("/v1/jobs", headers=bearer(token + "x"))
    with api.service._session() as s:
        stored = [(r.id, r.sha256, r.owner) for r in s.scalars(select(db.ApiToken))]
    assert all(token not in repr(row) for row in stored)
    assert token not in caplog.text and token[4:20] not in caplog.text


def test_a_checked_token_is_trusted_for_the_cache_seconds_and_a_revocation_here_is_at_once(
    settings: Settings,
) -> None:
    api = make_api(settings.model_copy(update={"api_auth_cache_seconds": 3600}))
    other = Service(settings)  # another process's service: the CLI's `token revoke`, say
    made = api.service.create_token("erin")
    assert api.client.get("/v1/jobs", headers=bearer(made.token)).status_code == 200
    other.revoke_token(made.id)
    # Checked a moment ago: still trusted by this process, within its cache's hour.
    assert api.client.get("/v1/jobs", headers=bearer(made.token)).status_code == 200
    # A revocation through this process's own service is refused at once.
    again = api.service.create_token("erin")
    assert api.client.get("/v1/jobs", headers=bearer(again.token)).status_code == 200
    api.service.revoke_token(again.id)
    assert api.client.get("/v1/jobs", headers=bearer(again.token)).status_code == 401
    assert api.client.get("/v1/jobs", headers=bearer(made.token)).status_code == 401  # the cache is gone
    # With 0 every request looks in the store: another process's revocation holds from the next one.
    strict = make_api(settings.model_copy(update={"api_auth_cache_seconds": 0}))
    third = strict.service.create_token("erin")
    assert strict.client.get("/v1/jobs", headers=bearer(third.token)).status_code == 200
    other.revoke_token(third.id)
    assert strict.client.get("/v1/jobs", headers=bearer(third.token)).status_code == 401


def test_an_expiry_ends_a_cached_token(settings: Settings) -> None:
    api = make_api(settings.model_copy(update={"api_auth_cache_seconds": 3600}))
    made = api.service.create_token("erin", expires="2s")
    assert api.client.get("/v1/jobs", headers=bearer(made.token)).status_code == 200
    time.sleep(2.1)
    assert api.client.get("/v1/jobs", headers=bearer(made.token)).status_code == 401


def test_token_cli_prints_once_and_revokes(settings: Settings) -> None:
    from click.testing import CliRunner

    from gantry.api.cli import cli

    runner = CliRunner()
    made = runner.invoke(cli, ["token", "create", "--owner", "erin", "--expires", "2w"])
    assert made.exit_code == 0, made.output
    # The token alone on stdout (`T=$(gantry token create ...)`), what it is and the hint on stderr.
    token = made.stdout.strip()
    assert token.startswith("gty_") and "\n" not in token, made.stdout
    assert "erin" in made.stderr and "GANTRY_API_TOKEN" in made.stderr and token not in made.stderr
    listed = runner.invoke(cli, ["token", "list"])
    assert "erin" in listed.output and token not in listed.output
    token_id = listed.output.split("erin")[0].split()[-1]
    app = make_api(settings)
    assert app.client.get("/v1/jobs", headers=bearer(token)).status_code == 200
    revoked = runner.invoke(cli, ["token", "revoke", token_id, "--json"])
    assert revoked.exit_code == 0, revoked.output
    view = json.loads(revoked.stdout)
    assert (view["id"], view["owner"], view["token"]) == (token_id, "erin", None) and view["revoked_at"]
    # Revoked by another process (the CLI): refused once this API process's check of the token is
    # older than GANTRY_API_AUTH_CACHE_SECONDS.
    time.sleep(settings.api_auth_cache_seconds)
    assert app.client.get("/v1/jobs", headers=bearer(token)).status_code == 401
    bad = runner.invoke(cli, ["token", "create", "--owner", "x", "--expires", "soon"])
    assert bad.exit_code == 2 and "expires" in bad.output
