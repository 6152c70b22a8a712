"""Shared fixtures: an isolated GANTRY_HOME with a migrated SQLite store for every test that asks, and
the same with its objects in an S3 bucket (moto); and, for every test, a worker's connections made
afresh."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gantry.jobs.settings import Settings


@pytest.fixture(autouse=True)
def _fresh_worker_connections() -> Iterator[None]:
    """A worker process keeps its engine and object store from job to job (gantry.worker.run's
    CONNECTIONS): each test starts without the last test's, so that what it sets up (a database, a
    patched `db.connect`) is what its jobs use."""
    run = sys.modules.get("gantry.worker.run")  # only where a test has imported the worker
    if run is not None:
        run.CONNECTIONS.clear()
    yield


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Embedded-mode settings under tmp_path, schema applied."""
    from gantry.migrations import upgrade

    for var in (
        "GANTRY_DATABASE_URL",
        "GANTRY_STORAGE_URL",
        "GANTRY_BROKER_URL",
        "GANTRY_S3_ENDPOINT_URL",
        "GANTRY_INCEPTION_WEIGHTS",  # the Inception metrics are refused unless a test sets it
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path / "home"))
    s = Settings()
    upgrade(s.database)
    return s


@pytest.fixture
def s3_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """`settings` with objects in the moto S3 bucket `wiring`, under the prefix `gantry/`."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="wiring")
        # The task reads its settings from the environment, as a worker would.
        monkeypatch.setenv("GANTRY_STORAGE_URL", "s3://wiring/gantry")
        yield Settings()


@pytest.fixture(scope="session")
def classifier_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GANTRY_HOME shared by the tests that need the shapes classifier: it is trained once."""
    return tmp_path_factory.mktemp("classifier-home")
