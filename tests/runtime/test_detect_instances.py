"""Several model instances in the detect stage (`model.instances`): batches run at once on
their own copies of the model, and nothing about the results changes — every item gets its
detections (mapped as with one instance) or a counted tombstone, finished batches leave
through the runner's tick, shutdown sends what already ran."""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import numpy as np
import pytest

from pipeline.messages import DetectionsMsg, DropMsg, EndMsg, ItemMsg, Message
from stages.detect.config import ModelConfig, model_instances
from stages.detect.stage import DetectStage, DetectStageConfig
from stages.detect.types import Detections, ModelInfo

HW = (32, 32)


class SlowBackend:
    """One box per image at its mean pixel value; each call takes ``seconds`` and records
    when it ran, so overlapping calls (instances at once) show."""

    name = "fake"
    opened: ClassVar[list[SlowBackend]] = []

    def __init__(self, seconds: float = 0.05, fail_on: int | None = None) -> None:
        self.seconds, self.fail_on = seconds, fail_on
        self.max_batch = 8
        self.info = ModelInfo(input_hw=HW, num_classes=3)
        self.calls: list[tuple[float, float, int]] = []  # (start, end, images)
        self.closed = False
        SlowBackend.opened.append(self)

    def infer(self, batch: np.ndarray) -> list[Detections]:
        t0 = time.monotonic()
        if self.fail_on is not None and int(batch[0].mean()) == self.fail_on:
            raise RuntimeError("boom")
        time.sleep(self.seconds)
        self.calls.append((t0, time.monotonic(), len(batch)))
        out = []
        for img in batch:
            v = float(img.mean())
            boxes = np.array([[v, v, v + 4, v + 4]], np.float32)
            out.append(Detections(boxes, np.array([0.9], np.float32), np.array([1], np.int64)))
        return out

    def close(self) -> None:
        self.closed = True


def item(cam: str, seq: int, value: int) -> ItemMsg:
    pixels = np.full((3, *HW), value, np.uint8)
    return ItemMsg(cam, seq, seq, time.time(), "wallclock", 64, 48, 0.5, 4, 0, 48, 64,
                   pixels, {"preprocess": 1.0})  # fmt: skip


def stage_of(instances: int, live: frozenset[str] = frozenset(), **kw: object) -> DetectStage:
    SlowBackend.opened = []
    cfg = DetectStageConfig(max_batch=1, max_wait_ms=0, realtime_cameras=live,
                            instances=instances)  # fmt: skip
    stage = DetectStage(lambda: SlowBackend(**kw), cfg)  # type: ignore[arg-type]
    wakes = threading.Semaphore(0)
    stage.set_waker(wakes.release)
    stage.setup()
    stage.wakes = wakes  # type: ignore[attr-defined]
    return stage


def run_until(stage: DetectStage, n: int, timeout_s: float = 5.0) -> list[Message]:
    """Tick whenever the stage says (as the runner does) until ``n`` messages came out."""
    out: list[Message] = []
    t_end = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < t_end:
        d = stage.next_deadline()
        if d is not None and d <= time.monotonic():
            out += stage.tick()
        else:
            stage.wakes.acquire(timeout=0.01)  # type: ignore[attr-defined]
    return out


def boxes_by_frame(msgs: list[Message]) -> dict[tuple[str, int], list[float]]:
    return {(m.camera_id, m.seq): m.boxes.tolist()[0] for m in msgs if isinstance(m, DetectionsMsg)}


def test_two_instances_run_at_once_and_give_what_one_gives() -> None:
    live = frozenset("abcd")
    items = [item(c, s, 10 * i + s) for i, c in enumerate("abcd") for s in range(3)]
    results = {}
    for k in (1, 2):
        stage = stage_of(k, live)
        out: list[Message] = []
        for s in range(3):  # one frame per camera per round, as cameras deliver them
            for it in items:
                if it.seq == s:
                    out += stage.process(it)
            out += run_until(stage, 4 * (s + 1) - len(out))
        results[k] = boxes_by_frame(out)
        assert not [m for m in out if isinstance(m, DropMsg)]
        backends = SlowBackend.opened
        stage.close()
        assert len(backends) == k and all(b.closed for b in backends)
        if k == 2:  # both copies worked, and at the same time
            a, b = backends
            assert a.calls and b.calls
            overlap = [1 for s0, e0, _ in a.calls for s1, e1, _ in b.calls if s0 < e1 and s1 < e0]
            assert overlap, (a.calls, b.calls)
    assert len(results[1]) == 12 and results[2] == results[1]


def test_no_batch_is_due_while_every_instance_is_busy_and_the_newest_frame_waits() -> None:
    stage = stage_of(2, frozenset("abc"), seconds=0.3)
    for cam in "ab":
        stage.process(item(cam, 0, 1))
    assert stage.tick() == []  # both started; nothing finished yet
    assert stage.next_deadline() is None  # every instance busy: c's frame waits
    stage.process(item("c", 0, 3))
    out = list(stage.process(item("c", 1, 4)))  # newest frame wins while it waits
    assert [(m.camera_id, m.seq, m.reason) for m in out if isinstance(m, DropMsg)] == [
        ("c", 0, "superseded")
    ]
    got = run_until(stage, 3)
    assert sorted((m.camera_id, m.seq) for m in got) == [("a", 0), ("b", 0), ("c", 1)]
    stage.close()


def test_offline_backlog_waits_for_an_instance_and_end_follows_every_result() -> None:
    stage = stage_of(2)  # offline camera: nothing is dropped, a full batch runs at once
    out: list[Message] = []
    for s in range(6):
        out += stage.process(item("f", s, s))
    out += stage.process(EndMsg("f", 5))
    assert isinstance(out[-1], EndMsg)
    assert sorted(m.seq for m in out if isinstance(m, DetectionsMsg)) == list(range(6))
    stage.close()


def test_close_sends_batches_already_running_and_counts_the_waiting_ones() -> None:
    stage = stage_of(2, frozenset("abc"), seconds=0.2)
    for cam in "abc":
        stage.process(item(cam, 0, 1))
    stage.tick()  # a and b start; c waits
    out = stage.close()
    assert sorted((m.camera_id, type(m).__name__) for m in out) == [
        ("a", "DetectionsMsg"),
        ("b", "DetectionsMsg"),
        ("c", "DropMsg"),
    ]
    assert [m.reason for m in out if isinstance(m, DropMsg)] == ["shutdown"]


def test_a_failing_batch_becomes_error_tombstones_and_frees_its_instance() -> None:
    stage = stage_of(2, frozenset("ab"), fail_on=7)
    stage.process(item("a", 0, 7))
    stage.process(item("b", 0, 2))
    got = run_until(stage, 2)
    assert sorted((m.camera_id, type(m).__name__) for m in got) == [
        ("a", "DropMsg"),
        ("b", "DetectionsMsg"),
    ]
    assert [m.reason for m in got if isinstance(m, DropMsg)] == ["error"]
    stage.process(item("a", 1, 3))  # both instances free again
    assert [m.seq for m in run_until(stage, 1)] == [1]
    stage.close()


@pytest.mark.parametrize(
    ("instances", "backend", "device", "threads", "cpus", "want"),
    [
        ("auto", "onnxruntime", "cpu", 0, 2, (2, 1)),  # this machine kind
        ("auto", "onnxruntime", "cpu", 0, 16, (2, 8)),  # cores shared out
        ("auto", "onnxruntime", "cpu", 0, 1, (1, 0)),  # one core: one copy
        ("auto", "onnxruntime", "cuda", 0, 16, (1, 0)),  # a GPU batches instead
        ("auto", "torch", "cpu", 0, 8, (1, 0)),  # torch's thread pool is per process
        ("auto", "tensorrt", "cuda:0", 0, 8, (1, 0)),
        (4, "onnxruntime", "cuda", 0, 8, (1, 0)),  # asked for, but a GPU batches instead
        (3, "onnxruntime", "cpu", 0, 8, (3, 2)),
        (2, "onnxruntime", "cpu", 4, 8, (2, 4)),  # threads set by hand stay as set
        ("auto", "onnxruntime", "cpu", 1, 2, (2, 1)),  # 2 x 1 thread fit 2 cores
        ("auto", "onnxruntime", "cpu", 4, 4, (1, 4)),  # 2 x 4 would oversubscribe 4 cores
        ("auto", "onnxruntime", "cpu", 2, 4, (2, 2)),
        (1, "onnxruntime", "cpu", 0, 8, (1, 0)),
    ],
)
def test_instances_resolve(
    instances: int | str, backend: str, device: str, threads: int, cpus: int, want: tuple
) -> None:
    assert model_instances(instances, backend, device, threads, cpus) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 17, -1])
def test_instances_out_of_range_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="instances"):
        ModelConfig(random_weights=True, arch="yolo_nas_s", instances=bad)
