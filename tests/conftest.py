"""Shared fixtures: an isolated GANTRY_HOME with a migrated SQLite store for every test that asks, and
the same with its objects in an S3 bucket (moto); and, for every test, a worker's connections made
afresh. Under pytest-xdist (`make test` runs on up to 4 processes), each process's torch gets its
share of the cores, and the files of real workers and services are handed out first."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gantry.jobs.settings import Settings

# Set before torch starts its threads (it reads the variable once): a process per core would
# otherwise run as many threads as there are cores each; on 2 cores the suite then spent half again
# the CPU time it spends in one process. The real worker processes the tests start inherit it.
if (count := os.environ.get("PYTEST_XDIST_WORKER_COUNT")) and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(count)))

# Longest first: xdist hands out files in this order (`--dist loadfile`), so the chaos suite and the
# real-worker tests start at once rather than leave one process running them alone at the end.
FIRST = ("tests/chaos/", "tests/integration/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        return next((i for i, prefix in enumerate(FIRST) if path.startswith(prefix)), len(FIRST))

    items.sort(key=rank)  # stable: the order within each file and group is kept


CHAOS: list[dict] = []  # the chaos scenarios' results (tests/chaos), as the reports carry them


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        CHAOS.extend(value for name, value in report.user_properties if name == "chaos")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CHAOS:
        from tests.chaos.scenarios import Result, table

        results = [Result(**value) for value in CHAOS]
        terminalreporter.write_sep("=", "chaos suite (bounded)")
        terminalreporter.write_line(table(results))
        for result in results:
            terminalreporter.write_line(result.report())


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
