"""Import torch-fidelity where torchvision cannot be imported.

torch-fidelity (the library gantry's Inception metrics come from) imports torchvision at import time
for things gantry never calls: its CIFAR/STL data sets, image-folder transforms and VGG16 (LPIPS and
VGG precision/recall). The Inception-v3 extractor and the FID, KID, IS and precision/recall code
need only torch. PyPI's torchvision is built against PyPI's torch and fails to import beside other
builds of the same torch version (the CPU build: "operator torchvision::nms does not exist"), so
`make` installs torch-fidelity without it (requirements/lock.py, docs/real-images.md "Metrics").

`import_torch_fidelity()` imports the real torchvision when it imports. Only when it does not, it
puts placeholder modules under the names torch-fidelity imports, for the duration of that one import,
and takes them out of `sys.modules` again: nothing else ever sees them, and a later `import
torchvision` fails as it would have. A placeholder class or attribute raises `TorchvisionMissing` when
used, so a torch-fidelity path that does need torchvision (a CIFAR input, a folder of files, VGG16)
says so instead of computing anything with a stand-in.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

_lock = threading.Lock()

# The torchvision modules torch-fidelity 0.4.0 imports (`import torchvision`, `from torchvision.datasets
# import CIFAR10, STL10, CIFAR100`, `import torchvision.transforms.functional as F`) and the classes it
# subclasses at import time.
_MODULES = (
    "torchvision",
    "torchvision.datasets",
    "torchvision.transforms",
    "torchvision.transforms.functional",
)
_CLASSES = {"torchvision.datasets": ("CIFAR10", "CIFAR100", "STL10")}


class TorchvisionMissing(RuntimeError):
    """A torch-fidelity feature that needs torchvision was used where torchvision does not import."""


def _missing(what: str, why: str) -> TorchvisionMissing:
    return TorchvisionMissing(
        f"{what} needs torchvision, which does not import here ({why}); gantry's Inception metrics "
        "do not use it"
    )


class _Placeholder(ModuleType):
    """A module whose every attribute lookup fails with TorchvisionMissing (besides its submodules)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(
            name, "placeholder for torch-fidelity's import (gantry.worker.metrics.torchvision_shim)"
        )
        self._why = why

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise _missing(f"{self.__name__}.{attr}", self._why)


def _placeholder_class(module: str, name: str, why: str) -> type:
    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise _missing(f"{module}.{name}", why)

    return type(name, (), {"__init__": refuse, "__module__": module})


def _torchvision_error() -> str | None:
    """None when torchvision imports; else why not. A failed import leaves none of its modules."""
    try:
        importlib.import_module("torchvision")
    except Exception as exc:  # ImportError, or the RuntimeError of a build that does not match torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        return f"{type(exc).__name__}: {exc}"
    return None


def import_torch_fidelity() -> ModuleType:
    """The `torch_fidelity` package, imported beside the real torchvision when that imports, else
    beside placeholders that exist only during this import."""
    with _lock:
        if "torch_fidelity" in sys.modules:
            return sys.modules["torch_fidelity"]
        why = _torchvision_error()
        if why is None:
            return importlib.import_module("torch_fidelity")
        log.info("torchvision does not import (%s): importing torch_fidelity beside placeholders", why)
        placeholders = {name: _Placeholder(name, why) for name in _MODULES}
        for name, module in placeholders.items():
            parent, _, child = name.rpartition(".")
            if parent:
                ModuleType.__setattr__(placeholders[parent], child, module)
            for cls in _CLASSES.get(name, ()):
                ModuleType.__setattr__(module, cls, _placeholder_class(name, cls, why))
        sys.modules.update(placeholders)
        try:
            return importlib.import_module("torch_fidelity")
        finally:
            for name in placeholders:
                sys.modules.pop(name, None)
