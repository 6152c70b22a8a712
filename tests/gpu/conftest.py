"""CUDA tests: cuBLAS told, before any CUDA work in this process, to use a fixed workspace, which
its deterministic mode needs (the `deterministic` fixture)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture
def deterministic() -> Iterator[None]:
    """Deterministic CUDA kernels for the test (a warning, not an error, for an op without one):
    two runs of one spec and seed then give the same bits, so a difference between two steps is
    theirs, not the atomics' of a backward kernel."""
    cudnn, algorithms = torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = cudnn
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
