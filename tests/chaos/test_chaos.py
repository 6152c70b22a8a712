"""The chaos suite, bounded (`make test`): each of issue 28's faults against real workers and private
services, judged from the outside: no job lost, duplicated or stranded, every one resumed. How fast
they resumed is a figure, not asserted here: `make chaos` (bench/chaos.py) reports it against its
bound for bench/RESULTS.md."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.chaos.scenarios import BOUNDED, SCENARIOS, run_scenario

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


@pytest.mark.parametrize(
    "key", list(SCENARIOS), ids=[f"{k}-{t.split()[1].lower()}" for k, (t, _) in SCENARIOS.items()]
)
def test_every_job_succeeds_once_through_the_fault(chaos_services, key: str, record_property) -> None:
    seed = int(os.environ["CHAOS_SEED"]) if "CHAOS_SEED" in os.environ else None
    result = run_scenario(chaos_services, key, BOUNDED, seed=seed, say=print)
    record_property("chaos", dataclasses.asdict(result))  # the summary's (tests/conftest.py)
    assert result.ok, result.report()
