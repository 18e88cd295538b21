"""Batching that pays for itself (`stages.detect.batch_calibration`): which batch size is
chosen from measured ms per image, that the detect stage batches only that far (and without
a batching wait at batch 1), that the figures are cached with the model's key and measured
again when the key changes, and that the chosen policy is logged once with the figures.

The backends here cost a fixed, known time per call on a fake clock (no sleeping, no timed
asserts): a GPU-like one (a large fixed cost per call, little per image) and a CPU-like one
(cost proportional to the images)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from stages.detect.batch_calibration import (
    CalibrationKey,
    CalibrationSpec,
    batch_sizes,
    calibrate,
    choose_batch,
)
from stages.detect.stage import DetectStage, DetectStageConfig
from stages.detect.types import Detections, ModelInfo

HW = (64, 64)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class CostBackend:
    """``infer`` of a batch of b advances ``clock`` by ``fixed_ms + per_image_ms * b``."""

    name = "fake"

    def __init__(self, clock: Clock, fixed_ms: float, per_image_ms: float, max_batch: int = 8):
        self.clock, self.fixed_ms, self.per_image_ms = clock, fixed_ms, per_image_ms
        self.max_batch = max_batch
        self.info = ModelInfo(input_hw=HW, num_classes=1)
        self.calls: list[int] = []

    def infer(self, batch: np.ndarray) -> list[Detections]:
        assert batch.dtype == np.uint8 and batch.shape[1:] == (3, *HW)
        self.calls.append(len(batch))
        self.clock.t += (self.fixed_ms + self.per_image_ms * len(batch)) / 1e3
        return [Detections.empty() for _ in batch]

    def close(self) -> None:
        pass


def test_batch_sizes_are_powers_of_two_up_to_max_batch() -> None:
    assert batch_sizes(1) == [1]
    assert batch_sizes(8) == [1, 2, 4, 8]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]


def test_choose_batch_takes_a_size_only_when_it_cuts_ms_per_image_by_the_gain() -> None:
    assert choose_batch({1: 100.0, 2: 99.0, 4: 101.0, 8: 98.0}) == 1  # a CPU: flat
    assert choose_batch({1: 10.0, 2: 5.5, 4: 3.0, 8: 2.0}) == 8  # a GPU: falls all the way
    assert choose_batch({1: 10.0, 2: 5.0, 4: 4.8, 8: 4.7}) == 2  # flattens after 2
    # small gains per step: none pays 10 % against batch 1
    assert choose_batch({1: 100.0, 2: 95.0, 4: 92.0, 8: 91.0}) == 1
    # ... unless together they do: batch 8 costs 14 % less per image than batch 1
    assert choose_batch({1: 100.0, 2: 95.0, 4: 90.25, 8: 85.7}) == 8
    # a noisy 2 does not stop a clearly better 4
    assert choose_batch({1: 10.0, 2: 9.5, 4: 6.0}) == 4


def key(tmp_path: Path, max_batch: int = 8, threads: int = 2) -> CalibrationKey:
    weights = tmp_path / "model.onnx"
    if not weights.exists():
        weights.write_bytes(b"x" * 100)
    return CalibrationKey.for_model(weights, "fake", "cpu", HW, threads, max_batch)


def test_calibrate_measures_caches_and_measures_again_when_the_key_changes(
    tmp_path: Path,
) -> None:
    clock = Clock()
    gpu = CostBackend(clock, fixed_ms=20.0, per_image_ms=1.0)
    plan = calibrate(gpu.infer, key(tmp_path), 10.0, tmp_path / "cache", clock=clock)
    assert (plan.max_batch, plan.max_wait_ms, plan.cached) == (8, 10.0, False)
    assert plan.ms_per_image == pytest.approx({1: 21.0, 2: 11.0, 4: 6.0, 8: 3.5})
    (cached,) = (tmp_path / "cache").iterdir()
    doc = json.loads(cached.read_text())
    assert doc["key"]["backend"] == "fake" and doc["key"]["input_hw"] == list(HW)
    assert doc["ms_per_image"] == {"1": 21.0, "2": 11.0, "4": 6.0, "8": 3.5}

    calls = len(gpu.calls)
    again = calibrate(gpu.infer, key(tmp_path), 10.0, tmp_path / "cache", clock=clock)
    assert again.cached and again.max_batch == 8 and len(gpu.calls) == calls  # nothing ran

    # another thread count (or weights file, backend, device, size...) is another key
    cpu = CostBackend(clock, fixed_ms=0.0, per_image_ms=10.0)
    other = calibrate(cpu.infer, key(tmp_path, threads=4), 10.0, tmp_path / "cache", clock=clock)
    assert not other.cached and other.max_batch == 1 and other.max_wait_ms == 0.0
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # a rewritten weights file (new mtime) is measured again
    weights = tmp_path / "model.onnx"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = calibrate(gpu.infer, key(tmp_path), 10.0, tmp_path / "cache", clock=clock)
    assert not fresh.cached
    # a corrupt cache file is measured again, not trusted
    (tmp_path / "cache" / f"{key(tmp_path).digest()}.json").write_text("{not json")
    assert not calibrate(gpu.infer, key(tmp_path), 10.0, tmp_path / "cache", clock=clock).cached


def test_entries_of_weights_files_that_are_gone_are_removed(tmp_path: Path) -> None:
    clock = Clock()
    backend = CostBackend(clock, fixed_ms=0.0, per_image_ms=10.0)
    cache = tmp_path / "cache"
    gone = tmp_path / "gone"
    gone.mkdir()
    calibrate(backend.infer, key(gone), 10.0, cache, clock=clock)
    (gone / "model.onnx").unlink()
    (cache / "notes.json").write_text("not a cache entry")  # unreadable: left alone
    calibrate(backend.infer, key(tmp_path), 10.0, cache, clock=clock)
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [f"{key(tmp_path).digest()}.json", "notes.json"]
    )


def test_measuring_stops_at_the_first_size_that_did_not_pay(tmp_path: Path) -> None:
    """A CPU-like model is never run at batch 4 or 8 (1 and 2 already said batching buys
    nothing): start-up does not pay for the big batches."""
    clock = Clock()
    cpu = CostBackend(clock, fixed_ms=0.0, per_image_ms=10.0)
    plan = calibrate(cpu.infer, key(tmp_path), 10.0, tmp_path / "cache", clock=clock)
    assert sorted(plan.ms_per_image) == [1, 2] and set(cpu.calls) == {1, 2}
    assert plan.max_batch == 1


def item(cam: str, seq: int) -> object:
    from pipeline.messages import ItemMsg

    pixels = np.zeros((3, *HW), np.uint8)
    return ItemMsg(cam, seq, seq, time.time(), "wallclock", 64, 64, 1.0, 0, 0, 64, 64, pixels,
                   {"preprocess": time.time()})  # fmt: skip


@pytest.mark.parametrize(
    ("fixed_ms", "per_image_ms", "want_batch"), [(0.0, 10.0, 1), (20.0, 1.0, 8)]
)
def test_detect_stage_batches_only_as_far_as_it_pays_and_logs_the_policy_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fixed_ms: float, per_image_ms: float,
    want_batch: int,
) -> None:  # fmt: skip
    clock = Clock()
    backend = CostBackend(clock, fixed_ms, per_image_ms)
    spec = CalibrationSpec(tmp_path / "w.onnx", "cpu", 2, cache_dir=tmp_path / "c", clock=clock)
    spec.weights.write_bytes(b"w")  # type: ignore[union-attr]
    live = frozenset(f"cam{i}" for i in range(8))
    cfg = DetectStageConfig(max_batch=8, max_wait_ms=50.0, realtime_cameras=live,
                            calibration=spec)  # fmt: skip
    stage = DetectStage(lambda: backend, cfg, on_ready=lambda: None)
    with caplog.at_level(logging.INFO, logger="edgestream.detect.stage"):
        stage.setup()
    lines = [r.getMessage() for r in caplog.records if "ms per image by batch size" in r.message]
    assert len(lines) == 1, caplog.text
    assert stage.plan is not None and stage.plan.max_batch == want_batch
    assert "1: " in lines[0] and ("no batching wait" in lines[0]) == (want_batch == 1)
    backend.calls.clear()
    for i in range(8):  # eight cameras' frames are waiting
        stage.process(item(f"cam{i}", 0))  # type: ignore[arg-type]
    if want_batch == 1:
        assert stage.next_deadline() is not None and stage.next_deadline() <= time.monotonic()
    out: list[object] = []
    while batch := list(stage.tick()):  # one batch per tick
        out += batch
    assert len(out) == 8 and backend.calls == [want_batch] * (8 // want_batch)
    stage.close()


def test_without_calibration_the_configured_batch_is_used(tmp_path: Path) -> None:
    clock = Clock()
    backend = CostBackend(clock, fixed_ms=0.0, per_image_ms=10.0)
    stage = DetectStage(lambda: backend, DetectStageConfig(max_batch=4, max_wait_ms=0.0,
                        realtime_cameras=frozenset({"a", "b", "c", "d"})))  # fmt: skip
    stage.setup()
    assert stage.plan is None and backend.calls == []
    for cam in "abcd":
        stage.process(item(cam, 0))  # type: ignore[arg-type]
    assert len(list(stage.tick())) == 4 and backend.calls == [4]
    stage.close()
