"""The registry: every metric the contract declares has its evaluator, and importing the registry
imports no metric family (they load torch, scikit-learn and their classifiers)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gantry.jobs.specs import METRICS, EvaluateSpec, parse_train_spec
from gantry.worker import metrics
from gantry.worker.metrics import EVALUATORS, EvalContext, evaluate, evaluate_each


def test_every_declared_metric_has_an_evaluator() -> None:
    assert set(EVALUATORS) == set(METRICS)


def test_importing_the_registry_imports_no_family() -> None:
    code = (
        "import sys, gantry.worker.metrics; "
        "print(sorted(m for m in sys.modules if m.startswith('gantry.worker.metrics.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_every_evaluator_names_a_function_of_its_family() -> None:
    for name in EVALUATORS:
        assert callable(metrics._function(name)), name


def _context() -> EvalContext:
    spec = parse_train_spec("srresnet", {}, {})
    return EvalContext(
        checkpoint=b"",
        step=7,
        train_spec=spec,
        spec=EvaluateSpec(),
        device="cpu",
        save=lambda name, data: None,
        should_stop=lambda: False,
        progress=lambda done, total: None,
    )


def test_each_metric_takes_the_values_it_declares_from_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def one_pass(ctx: EvalContext) -> dict[str, float]:
        calls.append("pass")
        return {"psnr": 30.0, "psnr_bicubic": 28.0, "ssim": 0.9, "ssim_bicubic": 0.8, "other": 1.0}

    monkeypatch.setattr(metrics, "_function", lambda name: one_pass)
    values = dict(evaluate_each(["psnr", "ssim"], _context()))
    assert values == {
        "psnr": {"psnr": 30.0, "psnr_bicubic": 28.0},
        "ssim": {"ssim": 0.9, "ssim_bicubic": 0.8},
    }
    assert calls == ["pass"]


def test_a_function_that_misses_a_declared_value_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_function", lambda name: lambda ctx: {"psnr": 30.0})
    with pytest.raises(KeyError, match="psnr_bicubic"):
        evaluate(["psnr"], _context())
