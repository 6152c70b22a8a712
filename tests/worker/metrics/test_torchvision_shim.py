"""torch-fidelity imported without torchvision: the placeholders exist only for that import, and what
would need torchvision says so instead of computing anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gantry.worker.metrics.torchvision_shim import TorchvisionMissing, import_torch_fidelity


def test_torch_fidelity_imports_and_torchvision_stays_as_it_was(tmp_path) -> None:
    try:
        import torchvision
    except Exception:
        pass
    else:
        pytest.skip("torchvision imports here: torch-fidelity uses it, no placeholder is made")
    tf = import_torch_fidelity()
    assert callable(tf.calculate_metrics)
    assert not [name for name in sys.modules if name.split(".")[0] == "torchvision"]
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401
    # torch-fidelity's CIFAR-10 input needs torchvision's data set: refused, naming it.
    with pytest.raises(TorchvisionMissing, match=r"torchvision\.datasets\.CIFAR10"):
        tf.registry.DATASETS_REGISTRY["cifar10-train"](str(tmp_path), False)


def test_the_worker_imports_torch_fidelity_in_a_fresh_process() -> None:
    code = (
        "from gantry.worker.metrics.torchvision_shim import import_torch_fidelity;"
        "tf = import_torch_fidelity(); print(tf.__version__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0.4.0"
