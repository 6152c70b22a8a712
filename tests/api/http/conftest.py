"""An HTTP app over a fresh SQLite store and file storage (embedded settings: submitted jobs stay
queued, nothing runs), with two owners' tokens and an admin's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from gantry.api.http.app import create_app
from gantry.api.service import Service
from gantry.jobs.settings import Settings


@dataclass
class Api:
    client: TestClient
    service: Service
    alice: dict[str, str]
    bob: dict[str, str]
    admin: dict[str, str]

    def submit(self, who: dict[str, str], **body: object) -> dict:
        body = {"kind": "train", "model": "dcgan", "dataset": "digits", "image_size": 16, "steps": 100} | body
        answer = self.client.post("/v1/jobs", json=body, headers=who)
        assert answer.status_code == 201, answer.text
        return answer.json()


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_api(settings: Settings) -> Api:
    app = create_app(settings)
    svc: Service = app.state.service
    return Api(
        client=TestClient(app),
        service=svc,
        alice=bearer(svc.create_token("alice").token),
        bob=bearer(svc.create_token("bob").token),
        admin=bearer(svc.create_token("root", admin=True).token),
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    made = make_api(settings)
    with made.client:
        yield made
