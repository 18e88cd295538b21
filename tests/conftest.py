"""Shared pytest set-up: hardware-dependent markers skip themselves with a reason."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# tests/ has no __init__.py: make the helpers that live beside the tests importable.
for sub in ("parity", "detect"):
    p = str(REPO / "tests" / sub)
    if p not in sys.path:
        sys.path.insert(0, p)


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _cuda_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none on this machine")
    skip_trt = pytest.mark.skip(
        reason="needs the TensorRT Python package and a GPU (pip install edgestream[tensorrt])"
    )
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "tensorrt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only test data folder beside the repository (never copied into it)."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path}")
    return path
