"""Shared pytest set-up: hardware-dependent markers skip themselves with a reason; a missing
service or data set skips locally and fails under CI=true (:func:`require`)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# tests/ has no __init__.py: make the helpers that live beside the tests importable.
for sub in ("parity", "detect"):
    p = str(REPO / "tests" / sub)
    if p not in sys.path:
        sys.path.insert(0, p)


def ci_strict() -> bool:
    """True under CI: ``CI=true`` (GitHub Actions and GitLab CI set it; export it elsewhere)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(missing: str | None) -> None:
    """Stop the test if something it needs is missing; ``missing`` says what (None: nothing).

    For the services and data sets CI provides (redis-server, the GStreamer RTSP server,
    ``../shared/data``): locally the test is skipped with the reason; under ``CI=true`` it
    FAILS, because there a missing one means a broken CI machine, and a run that skipped the
    tests needing it must not report green. Hardware (GPU, TensorRT) and the ``reference`` venv
    are optional everywhere and skip through markers instead. Tests in other folders get this
    function through the ``require`` fixture (one definition, no ``from conftest import``).
    """
    if missing is None:
        return
    if ci_strict():
        reason = f"{missing} [CI=true: a missing service or data set fails instead of skipping]"
        pytest.fail(reason, pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="session", name="require")
def require_fixture() -> Callable[[str | None], None]:
    """:func:`require`, for tests and fixtures in other folders."""
    return require


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


@pytest.fixture
def shm_pool() -> Iterator[Any]:
    """A producer's `pipeline.shm.ShmPool` (4 slots per key) under a pipeline name of its own;
    closing it must leave no segment behind."""
    import uuid

    from pipeline.shm import ShmPool, list_segments

    name = f"test{uuid.uuid4().hex[:10]}"
    pool = ShmPool(name, "test", slots=4)
    yield pool
    pool.close()
    assert not list_segments(f"edgestream-{name}-")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only test data folder beside the repository (never copied into it)."""
    path = SHARED / "data"
    require(None if path.is_dir() else f"shared test data not found at {path}")
    return path
