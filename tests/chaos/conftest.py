"""Private services for the chaos suite (tests/chaos/services.py): started once per session, ended
at its end whatever happened. A missing program skips the suite with the reason, except under
GANTRY_REQUIRE_SERVICES=1 (CI), where it fails it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.chaos.scenarios import Result, table
from tests.chaos.services import Missing, Services

RESULTS: list[Result] = []


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


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if RESULTS:
        terminalreporter.write_sep("=", "chaos suite (bounded)")
        terminalreporter.write_line(table(RESULTS))
        for result in RESULTS:
            terminalreporter.write_line(result.report())
