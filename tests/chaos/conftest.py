"""Private services for the chaos suite (tests/chaos/services.py): started once per session, ended
at its end whatever happened. A missing program skips the suite with the reason, except under
GANTRY_REQUIRE_SERVICES=1 (CI), where it fails it. The table of results at the end of a run is
tests/conftest.py's (the process that prints it under pytest-xdist loads only that one)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.chaos.services import Missing, Services


@pytest.fixture(scope="session")
def chaos_services() -> Iterator[Services]:
    try:
        services = Services()
    except Missing as exc:
        message = f"chaos suite: a private service cannot run here: {exc}"
        if os.environ.get("GANTRY_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (GANTRY_REQUIRE_SERVICES=1)")
        pytest.skip(message)
    try:
        yield services
    finally:
        services.destroy()
