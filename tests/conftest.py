"""Shared fixtures: an isolated GANTRY_HOME with a migrated SQLite store for every test that asks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gantry.jobs.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Embedded-mode settings under tmp_path, schema applied."""
    from gantry.migrations import upgrade

    for var in ("GANTRY_DATABASE_URL", "GANTRY_STORAGE_URL", "GANTRY_BROKER_URL", "GANTRY_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GANTRY_HOME", str(tmp_path / "home"))
    s = Settings()
    upgrade(s.database)
    return s


@pytest.fixture(scope="session")
def classifier_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GANTRY_HOME shared by the tests that need the shapes classifier: it is trained once."""
    return tmp_path_factory.mktemp("classifier-home")
