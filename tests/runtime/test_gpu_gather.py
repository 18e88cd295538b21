"""The pinned-slab CUDA gather (cudaHostRegister + async H2D on the stage's own stream) gives
the same detections as the host path. Needs an NVIDIA GPU; skipped without one."""

from __future__ import annotations

import functools
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_export import assert_same_detections

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


@pytest.fixture(params=["tmpfs", "disk"])
def slab_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Where the slab lives. On tmpfs (/dev/shm, the default) CUDA can pin it; on a disk
    filesystem Linux refuses long-term pins of its pages (seen on an H200 VM), and the
    gatherer must fall back to pageable copies without breaking the CUDA context."""
    if request.param == "disk":
        yield "disk", tmp_path
        return
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    d = Path(tempfile.mkdtemp(prefix="edgestream-gpu-test-", dir="/dev/shm"))
    yield "tmpfs", d
    shutil.rmtree(d, ignore_errors=True)


def test_cuda_gather_matches_host(
    slab_dir: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tiny_detector import TinyDetector

    from stages.detect.backends.torch_backend import TorchBackend

    where, directory = slab_dir
    monkeypatch.setattr("pipeline.shm.SHM_DIR", directory)
    slab = ShmRing.create(ring_name("gpu", "slab"), 16, 3 * 640 * 640)
    items = _items(slab, 6)
    results = {}
    pinned = 0
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
        if device == "cuda":
            pinned = stage._gather.registered_bytes
        stage.close()
    slab_bytes = slab.data.nbytes
    slab.close()
    if where == "tmpfs":
        assert pinned == slab_bytes, "a tmpfs slab must be pinned for direct DMA"
    elif pinned == 0:
        assert "copying from pageable memory" in caplog.text
    assert sorted(results["cpu"]) == sorted(results["cuda"]) == list(range(6))
    for seq, want in results["cpu"].items():
        got = results["cuda"][seq]
        # same set of boxes; ties in score (random weights) may be listed in another order
        assert_same_detections([got], [want], box_atol=1e-2, score_atol=1e-4, unmatched=0.02)
