"""The dashboard's pages through FastAPI's TestClient on SQLite: signing in, the session cookie's
attributes, CSRF on every form post, owner isolation, the submit form's errors, and no external URL
anywhere. (tests/browser drives the same pages in a real Chromium.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gantry.api.http.app import create_app
from gantry.api.service import Service
from gantry.jobs import keys
from gantry.jobs import store as db
from gantry.jobs.settings import Settings

ORIGIN = {"Origin": "http://testserver"}


class Browser:
    """A TestClient with its own cookie jar, signed in as one owner."""

    def __init__(self, app, token: str, base_url: str = "http://testserver") -> None:
        self.client = TestClient(app, base_url=base_url, follow_redirects=False)
        self.token = token

    def sign_in(self):
        form = self.client.get("/signin")
        answer = self.client.post(
            "/signin", data={"token": self.token, "csrf": csrf_of(form.text), "next": "/"}, headers=ORIGIN
        )
        return answer

    def csrf(self, path: str = "/") -> str:
        return csrf_of(self.client.get(path).text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


class Dash:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.service: Service = self.app.state.service
        self.alice_token = self.service.create_token("alice").token or ""
        self.alice = Browser(self.app, self.alice_token)
        self.bob = Browser(self.app, self.service.create_token("bob").token or "")
        assert self.alice.sign_in().status_code == 303
        assert self.bob.sign_in().status_code == 303

    def job(self, owner: str = "alice", **fields: object) -> str:
        svc = self.service.scoped(db_caller(owner))
        spec = {"dataset": "digits", "image_size": 16, "steps": 100} | fields
        return svc.submit_train("dcgan", **spec).id

    def state(self, job_id: str) -> str:
        return self.service.get(job_id).state


def db_caller(owner: str):
    from gantry.jobs.accounts import Caller

    return Caller(owner=owner)


@pytest.fixture
def dash(settings: Settings) -> Iterator[Dash]:
    yield Dash(settings)


def test_sign_in_keeps_the_token_in_an_httponly_samesite_strict_cookie(dash: Dash) -> None:
    anonymous = TestClient(dash.app, follow_redirects=False)
    # Every page sends a visitor without a session to /signin, coming back afterwards.
    for path in ("/", "/new", "/jobs/abc"):
        answer = anonymous.get(path)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin?next=")
    form = anonymous.get("/signin")
    answer = anonymous.post(
        "/signin",
        data={"token": dash.alice_token, "csrf": csrf_of(form.text), "next": "/new"},
        headers=ORIGIN,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/new"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("gantry_token="))
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert anonymous.get("/").status_code == 200
    # Over https the cookie is Secure as well.
    https = Browser(dash.app, dash.alice_token, base_url="https://testserver")
    form = https.client.get("/signin")
    answer = https.client.post(
        "/signin",
        data={"token": dash.alice_token, "csrf": csrf_of(form.text)},
        headers={"Origin": "https://testserver"},
    )
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("gantry_token="))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


def test_a_bad_token_re_renders_the_form_with_an_error(dash: Dash) -> None:
    client = TestClient(dash.app, follow_redirects=False)
    form = client.get("/signin")
    answer = client.post("/signin", data={"token": "gty_wrong", "csrf": csrf_of(form.text)}, headers=ORIGIN)
    assert answer.status_code == 401
    assert "unknown, expired or revoked" in answer.text and 'name="token"' in answer.text
    assert not any(c.startswith("gantry_token=") for c in answer.headers.get_list("set-cookie"))
    assert "gty_wrong" not in answer.text
    assert client.get("/").status_code == 303


def test_a_revoked_token_signs_the_session_out(dash: Dash) -> None:
    token_id = next(t.id for t in dash.service.list_tokens() if t.owner == "alice")
    dash.service.revoke_token(token_id)
    answer = dash.alice.client.get("/")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")


def test_form_posts_without_the_right_csrf_token_or_from_another_site_are_403(dash: Dash) -> None:
    job = dash.job()
    cancel = f"/jobs/{job}/cancel"
    csrf = dash.alice.csrf(f"/jobs/{job}")
    post = dash.alice.client.post
    assert post(cancel, data={}, headers=ORIGIN).status_code == 403
    assert post(cancel, data={"csrf": "0" * 64}, headers=ORIGIN).status_code == 403
    assert (
        post(cancel, data={"csrf": dash.bob.csrf()}, headers=ORIGIN).status_code == 403
    )  # another session's
    assert post(cancel, data={"csrf": csrf}, headers={"Origin": "https://evil.example"}).status_code == 403
    assert post(cancel, data={"csrf": csrf}, headers={"Referer": "https://evil.example/x"}).status_code == 403
    assert post("/new", data={"kind": "train", "model": "dcgan"}, headers=ORIGIN).status_code == 403
    assert post("/signout", data={}, headers=ORIGIN).status_code == 403
    assert dash.state(job) == "queued"
    assert len(dash.service.list_jobs().jobs) == 1  # the bad submit made nothing
    # Sign-in: the form's value must match its double-submit cookie.
    stranger = TestClient(dash.app, follow_redirects=False)
    answer = stranger.post("/signin", data={"token": dash.alice_token, "csrf": "x"}, headers=ORIGIN)
    assert answer.status_code == 403 and "gantry_token" not in answer.headers.get("set-cookie", "")
    # With the page's token and its own origin, the cancel goes through.
    answer = post(cancel, data={"csrf": csrf}, headers=ORIGIN)
    assert answer.status_code == 303 and answer.headers["location"] == f"/jobs/{job}"
    assert dash.state(job) == "cancelled"
    # Signing out clears the cookie: the pages want a sign-in again.
    answer = post("/signout", data={"csrf": csrf}, headers=ORIGIN)
    assert answer.status_code == 303 and 'gantry_token=""' in answer.headers["set-cookie"]
    assert dash.alice.client.get("/").status_code == 303


def test_another_owners_job_page_is_404(dash: Dash) -> None:
    job = dash.job(owner="alice")
    assert dash.alice.client.get(f"/jobs/{job}").status_code == 200
    page = dash.bob.client.get(f"/jobs/{job}")
    assert page.status_code == 404 and "No job" in page.text
    assert dash.bob.client.get(f"/jobs/{job}?partial=live").status_code == 404
    answer = dash.bob.client.post(f"/jobs/{job}/cancel", data={"csrf": dash.bob.csrf()}, headers=ORIGIN)
    assert answer.status_code == 404
    assert dash.state(job) == "queued"
    assert job not in dash.bob.client.get("/").text
    assert job in dash.alice.client.get("/").text


def test_the_jobs_page_lists_and_filters_without_javascript(dash: Dash) -> None:
    running, queued = dash.job(), dash.job(steps=50)
    with dash.service._session() as s:
        token = db.claim_job(s, running, worker="w:1", lease_seconds=60)
        assert token is not None
        db.heartbeat(s, running, step=40, token=token.attempt)
        db.record_metrics(s, running, step=40, values={"images_per_sec": 1234.0}, token=token.attempt)
    page = dash.alice.client.get("/").text
    row = page.split(f'data-job="{running}"')[1].split("</tr>")[0]
    assert "running" in row and 'value="40"' in row and "40/100" in row and "1,234" in row
    only_queued = dash.alice.client.get("/?state=queued").text
    assert queued in only_queued and running not in only_queued
    assert running not in dash.alice.client.get("/?model=gan").text
    assert running in dash.alice.client.get("/?kind=train&model=dcgan").text
    rows = dash.alice.client.get("/?state=running&partial=rows")
    assert rows.text.startswith("<tbody") and running in rows.text and queued not in rows.text
    assert dash.alice.client.get("/?state=bogus").status_code == 422


def test_the_job_page_shows_progress_values_and_the_newest_grid_in_html(dash: Dash) -> None:
    job = dash.job()
    with dash.service._session() as s:
        token = db.claim_job(s, job, worker="w:1", lease_seconds=60).attempt  # type: ignore[union-attr]
        db.heartbeat(s, job, step=20, token=token)
        db.record_metrics(s, job, step=20, values={"loss_D": 0.7, "loss_G": 1.25}, token=token)
        for step in (10, 20):
            db.add_artifact(s, job, key=keys.samples_key(job, step), kind="samples", size=100 + step)
    page = dash.alice.client.get(f"/jobs/{job}").text
    assert "20/100" in page and "loss_G" in page and "1.25" in page
    newest = f"/v1/jobs/{job}/artifacts/{keys.samples_key(job, 20)}?v=120"
    assert f'id="grid" src="{newest}"' in page and "step 20" in page
    assert 'action="/jobs/' + job + '/cancel"' in page
    live = dash.alice.client.get(f"/jobs/{job}?partial=live").text
    assert live.startswith('<section id="live"') and "<html" not in live
    # A sample job's page shows its pictures, the grid first, and links every artifact.
    dash.service.objects.put_bytes(keys.manifest_key(job), b"{}")  # as if it had a checkpoint
    sample = dash.service.scoped(db_caller("alice")).submit_sample(job, count=2).id
    with dash.service._session() as s:
        for name, size in (("000000.png", 10), ("000001.png", 10), ("grid.png", 20), ("prompts.json", 5)):
            db.add_artifact(s, sample, key=keys.image_key(sample, name), kind="image", size=size)
    page = dash.alice.client.get(f"/jobs/{sample}").text
    shown = re.findall(r'<img src="/v1/jobs/[^/]+/artifacts/jobs/[^/]+/images/([^"]+)"', page)
    assert shown == ["grid.png", "000000.png", "000001.png"]
    assert f'href="/v1/jobs/{sample}/artifacts/{keys.image_key(sample, "prompts.json")}"' in page
    assert f'href="/jobs/{job}"' in page  # the train job it came from


def test_the_submit_form_shows_the_models_options_and_names_the_bad_field(dash: Dash) -> None:
    form = dash.alice.client.get("/new?model=dcgan").text
    assert re.search(r'name="set.nz" value="100"', form)  # an option with its default
    assert re.search(r'name="steps" type="number" value="2000"', form)
    csrf = csrf_of(form)
    base = {"csrf": csrf, "kind": "train", "model": "dcgan", "dataset": "digits", "steps": "100", "seed": "0"}
    answer = dash.alice.client.post("/new", data=base | {"image_size": "20", "set.nz": "100"}, headers=ORIGIN)
    assert answer.status_code == 422
    error = re.search(r'<span class="error" id="e-image_size">([^<]*)</span>', answer.text)
    assert error and "power of two" in error.group(1)
    assert 'value="20"' in answer.text  # what was typed stays in the form
    answer = dash.alice.client.post("/new", data=base | {"image_size": "16", "set.lr": "5"}, headers=ORIGIN)
    assert answer.status_code == 422 and re.search(r'id="e-set.lr">[^<]+<', answer.text)
    assert dash.service.list_jobs().jobs == []  # nothing submitted
    # Good input: the job exists with the options that were changed, and the page goes to it.
    answer = dash.alice.client.post(
        "/new", data=base | {"image_size": "16", "set.ngf": "32", "set.nz": "100"}, headers=ORIGIN
    )
    assert answer.status_code == 303
    job = dash.service.get(answer.headers["location"].rsplit("/", 1)[1])
    assert job.spec["image_size"] == 16 and job.spec["options"]["ngf"] == 32
    # A sample job of a train job without a checkpoint names the checkpoint.
    sample = dash.alice.client.get(f"/new?kind=sample&parent={job.id}").text
    answer = dash.alice.client.post(
        "/new", data={"csrf": csrf_of(sample), "kind": "sample", "parent_job_id": job.id}, headers=ORIGIN
    )
    assert answer.status_code == 422 and re.search(r'id="e-checkpoint">[^<]*no checkpoint', answer.text)


def test_no_page_or_static_file_names_an_external_url(dash: Dash) -> None:
    job = dash.job()
    with dash.service._session() as s:
        db.add_artifact(s, job, key=keys.samples_key(job, 1), kind="samples", size=1)
        db.add_artifact(s, job, key=keys.image_key(job, "grid.png"), kind="image", size=1)
        db.record_metrics(s, job, step=1, values={"loss_D": 1.0})
    client = dash.alice.client
    pages = [
        TestClient(dash.app).get("/signin").text,
        client.get("/").text,
        client.get("/?state=queued&partial=rows").text,
        client.get(f"/jobs/{job}").text,
        client.get("/jobs/missing").text,
        client.get("/new?kind=train&model=text2img").text,
        client.get("/new?kind=sample").text,
    ]
    static = Path(__file__).parents[3] / "gantry/api/http/dashboard"
    files = [p.read_text() for p in [*static.glob("static/*"), *static.glob("templates/*")]]
    assert len(files) >= 8
    assert [client.get(f"/static/{name}").status_code for name in ("dashboard.js", "dashboard.css")] == [
        200,
        200,
    ]
    for text in pages + files:
        assert not re.search(r"https?://|//[a-z0-9-]+\.[a-z]", text, re.IGNORECASE), re.findall(
            r".{40}https?://.{40}", text
        )
