"""The pinned-slab CUDA gather (cudaHostRegister + async H2D on the stage's own stream) gives
the same detections as the host path. Needs an NVIDIA GPU; skipped without one."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.messages import DetectionsMsg, ItemMsg
from pipeline.shm import ShmRing, ring_name
from stages.detect.preprocess import letterbox
from stages.detect.stage import DetectStage, DetectStageConfig
from stages.detect.types import ModelInfo

pytestmark = pytest.mark.gpu


def _items(slab: ShmRing, n: int) -> list[ItemMsg]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
        with slab.writing((3, 640, 640)) as w:
            _, meta = letterbox(img, w.array)
        fields = (meta.scale, meta.pad_top, meta.pad_left, meta.src_h, meta.src_w)
        out.append(ItemMsg(f"c{i % 3}", i, i, time.time(), "wallclock", 640, 360, *fields, w.ref))
    return out


def test_cuda_gather_matches_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiny_detector import TinyDetector

    from stages.detect.backends.torch_backend import TorchBackend

    monkeypatch.setattr("pipeline.shm.SHM_DIR", tmp_path)
    slab = ShmRing.create(ring_name("gpu", "slab"), 16, 3 * 640 * 640)
    items = _items(slab, 6)
    results = {}
    for device in ("cpu", "cuda"):
        backend = TorchBackend(TinyDetector(), device=device, max_batch=4,
                               info=ModelInfo(input_hw=(640, 640)))  # fmt: skip
        stage = DetectStage(
            functools.partial(lambda b: b, backend), DetectStageConfig(max_batch=4, max_wait_ms=0)
        )
        stage.setup()
        assert type(stage._gather).__name__ == (
            "CudaGatherer" if device == "cuda" else "HostGatherer"
        )
        out = [m for it in items for m in stage.process(it)] + list(stage.flush())
        results[device] = {m.seq: m for m in out if isinstance(m, DetectionsMsg)}
        stage.close()
    slab.close()
    assert sorted(results["cpu"]) == sorted(results["cuda"]) == list(range(6))
    for seq, want in results["cpu"].items():
        got = results["cuda"][seq]
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
