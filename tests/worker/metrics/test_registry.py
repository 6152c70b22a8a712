"""The registry: every metric the contract declares has its evaluator, and importing the registry
imports no metric family (they load torch, scikit-learn and their classifiers)."""

from __future__ import annotations

import subprocess
import sys

from gantry.jobs.specs import METRICS
from gantry.worker.metrics import EVALUATORS


def test_every_declared_metric_has_an_evaluator() -> None:
    assert set(EVALUATORS) == set(METRICS)


def test_importing_the_registry_imports_no_family() -> None:
    code = (
        "import sys, gantry.worker.metrics; "
        "print(sorted(m for m in sys.modules if m.startswith('gantry.worker.metrics.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
