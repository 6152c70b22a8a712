"""Regenerate requirements/*.lock from pyproject.toml (`make lock`).

Each lock file is the whole tree that `pip install .[EXTRAS]` resolves, constrained by the pins of the
current lock files, so an unchanged package keeps its version and only a new or changed dependency is
resolved afresh. The comment lines at the top of each file are kept. Run with the interpreter of a venv
(it only asks pip for a resolution: `pip install --dry-run --report`, nothing is installed)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"api": "", "worker": "[worker]", "dev": "[dev]"}
# Packages resolved but left out of the locks, which make installs with --no-deps (a lock is the whole
# tree). torchvision: torch-fidelity declares it for its CIFAR/STL inputs and VGG16, which gantry never
# uses, and PyPI's build does not import beside other builds of the same torch (this machine's CPU
# build: "operator torchvision::nms does not exist"). gantry imports torch-fidelity without it
# (gantry/worker/metrics/torchvision_shim.py); a worker image with a matching torchvision may add it.
LEFT_OUT = {"torchvision"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> tuple[list[str], dict[str, str]]:
    header, pins = [], {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("#"):
            header.append(line)
        elif line.strip():
            pins[canonical(line.split("==")[0])] = line.strip()
    return header, pins


def resolve(extras: str, constraints: Path) -> dict[str, tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), "-c", str(constraints), f".{extras}"],
            cwd=ROOT, check=True,
        )  # fmt: skip
        installs = json.loads(report.read_text())["install"]
    resolved = {}
    for item in installs:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if canonical(name) != "gantry" and canonical(name) not in LEFT_OUT:
            # torch's local label (+cpu) names this machine's build; the pin holds for any build.
            resolved[canonical(name)] = (name, version.split("+")[0])
    return resolved


def main() -> None:
    current = {name: read_lock(ROOT / "requirements" / f"{name}.lock") for name in LOCKS}
    pins: dict[str, str] = {}
    for _, lock_pins in current.values():
        pins.update(lock_pins)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as constraints:
        constraints.write("\n".join(pins.values()) + "\n")
        constraints.flush()
        for name, extras in LOCKS.items():
            resolved = resolve(extras, Path(constraints.name))
            header = current[name][0]
            lines = [f"{n}=={v}" for _, (n, v) in sorted(resolved.items())]
            (ROOT / "requirements" / f"{name}.lock").write_text("\n".join([*header, *lines]) + "\n")
            print(f"requirements/{name}.lock: {len(lines)} packages")


if __name__ == "__main__":
    main()
