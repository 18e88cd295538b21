"""The runtime's stages in memory (no sockets, no processes): preprocess through a real shm
ring, detect with a fake backend, reordering track glue, sink glue."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.messages import DetectionsMsg, DropMsg, EndMsg, FrameMsg, ItemMsg, TrackedMsg
from pipeline.shm import ShmRing, ring_name
from stages.detect.preprocess import letterbox
from stages.detect.stage import DetectStage, DetectStageConfig
from stages.detect.types import Detections, ModelInfo
from stages.preprocess import PreprocessStage, PreprocessStageConfig
from stages.sinks.stage import SinkStage
from stages.track.pipeline_stage import OrderedTrackConfig, OrderedTrackStage

HW = (64, 64)


@pytest.fixture
def shm_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("pipeline.shm.SHM_DIR", tmp_path)
    return tmp_path


def frame(cam: str, seq: int, pixels: Any, h: int = 48, w: int = 80, ts: float = 0.0) -> FrameMsg:
    return FrameMsg(cam, seq, seq, ts or time.time(), "wallclock", w, h, pixels, {"decode": 1.0})


def test_preprocess_letterboxes_from_a_ring_into_its_slab(shm_dir: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    src = ShmRing.create(ring_name("t", "frames"), 2, img.nbytes)
    stage = PreprocessStage(PreprocessStageConfig(ring_name("t", "slab"), 4, HW))
    stage.setup()
    try:
        (item,) = stage.process(frame("a", 0, src.write(img)))
        assert isinstance(item, ItemMsg) and item.seq == 0 and "preprocess" in item.stage_ts
        want, meta = letterbox(img, input_hw=HW, resize_to=60)
        assert item.letterbox == meta
        slab = ShmRing.attach(item.pixels.ring)  # type: ignore[union-attr]
        np.testing.assert_array_equal(slab.read(item.pixels), want)  # type: ignore[arg-type]
        slab.close()
        # the camera lapped the worker: the frame is gone → tombstone, not a stale picture
        old = src.write(img)
        src.write(img), src.write(img)
        (drop,) = stage.process(frame("a", 1, old))
        assert isinstance(drop, DropMsg) and drop.reason == "overwritten" and drop.seq == 1
        # inline frames (offline, or a tcp edge) give inline items; tombstones pass through
        (inline,) = stage.process(frame("a", 2, img))
        assert isinstance(inline.pixels, np.ndarray)  # type: ignore[union-attr]
        np.testing.assert_array_equal(inline.pixels, want)  # type: ignore[union-attr]
        end = EndMsg("a", 2)
        assert list(stage.process(end)) == [end]
    finally:
        stage.close()
        src.close()
    assert list(shm_dir.iterdir()) == []


class FakeBackend:
    """Returns one box per image at (mean pixel value) so results can be traced to items."""

    name = "fake"

    def __init__(self, max_batch: int = 8) -> None:
        self.max_batch = max_batch
        self.info = ModelInfo(input_hw=HW, num_classes=3)
        self.batches: list[int] = []

    def infer(self, batch: np.ndarray) -> list[Detections]:
        self.batches.append(len(batch))
        out = []
        for img in batch:
            v = float(img.mean())
            boxes = np.array([[v, v, v + 10, v + 10]], np.float32)
            out.append(Detections(boxes, np.array([0.9], np.float32), np.array([1], np.int64)))
        return out

    def close(self) -> None:
        pass


def item(cam: str, seq: int, value: int, ts: float | None = None) -> ItemMsg:
    pixels = np.full((3, *HW), value, np.uint8)
    return ItemMsg(cam, seq, seq, ts or time.time(), "wallclock", 160, 96, 0.4, 12, 0, 96, 160,
                   pixels, {"preprocess": 1.0})  # fmt: skip


def test_detect_batches_maps_to_source_and_newest_frame_wins() -> None:
    backend = FakeBackend()
    cfg = DetectStageConfig(max_batch=3, max_wait_ms=1000, max_frame_age_ms=100,
                            realtime_cameras=frozenset({"live"}))  # fmt: skip
    stage = DetectStage(lambda: backend, cfg)
    stage.setup()
    assert list(stage.process(item("a", 0, 10))) == []  # waits for company
    assert list(stage.process(item("b", 0, 20))) == []
    out = list(stage.process(item("a", 1, 30)))  # offline and full: one backend call at once
    assert backend.batches == [3]
    assert [(m.camera_id, m.seq) for m in out if isinstance(m, DetectionsMsg)] == [
        ("a", 0),
        ("b", 0),
        ("a", 1),
    ]
    d = out[1]
    assert isinstance(d, DetectionsMsg) and "detect" in d.stage_ts
    # (20 - pad_left 0, 20 - pad_top 12) / scale 0.4
    np.testing.assert_allclose(d.boxes, [[50, 20, 75, 45]], rtol=1e-6)
    # a live item far older than max_frame_age_ms is still detected while it is the newest;
    # a newer frame of the same camera replaces it (superseded); offline items are never
    old = time.time() - 1.0
    assert list(stage.process(item("live", 0, 1, ts=old))) == []
    out = list(stage.process(item("live", 1, 2)))
    assert [(type(m).__name__, m.seq, getattr(m, "reason", None)) for m in out] == [
        ("DropMsg", 0, "superseded")
    ]
    stage.process(item("file", 0, 1, ts=old))
    assert list(stage.tick()) == []  # not due before max_wait_ms
    stage.policy.max_wait_s = 0.0
    due = list(stage.tick())
    assert [(m.camera_id, m.seq) for m in due] == [("live", 1), ("file", 0)]
    end = EndMsg("a", 1)
    assert list(stage.process(end)) == [end]
    stage.close()


def test_detect_stage_adds_appearance_descriptors_from_the_image_the_model_saw() -> None:
    from stages.detect.appearance import DIM, describe

    backend = FakeBackend()
    stage = DetectStage(lambda: backend, DetectStageConfig(max_batch=2, max_wait_ms=1000,
                                                           appearance=True))  # fmt: skip
    stage.setup()
    items = [item("a", 0, 40), item("a", 1, 90)]
    items[0].pixels[0, 30:60, 30:60] = 250  # something to see inside the first box
    out = [m for it in items for m in stage.process(it) if isinstance(m, DetectionsMsg)]
    stage.close()
    assert [m.features.shape for m in out] == [(1, DIM), (1, DIM)]
    # the letterbox-space boxes the fake backend returned, on the letterboxed pixels
    batch = np.stack([it.pixels for it in items])
    want = describe(batch, [np.array([[v, v, v + 10, v + 10]], np.float32) for v in (
        float(items[0].pixels.mean()), 90.0)])  # fmt: skip
    for got, w in zip(out, want, strict=True):
        np.testing.assert_allclose(got.features, w, atol=1e-6)
    plain = DetectStage(lambda: FakeBackend(), DetectStageConfig(max_batch=1))
    plain.setup()
    (msg,) = plain.process(item("a", 0, 40))
    plain.close()
    assert isinstance(msg, DetectionsMsg) and msg.features.shape == (1, 0)  # none asked for


def dets(cam: str, seq: int, n: int = 1) -> DetectionsMsg:
    boxes = np.tile(np.array([[10, 10, 50, 80]], np.float32), (n, 1)) + seq
    scores, classes = np.full(n, 0.9, np.float32), np.zeros(n, np.int64)
    return DetectionsMsg(cam, seq, seq, 1000.0 + seq / 10, 640, 480, boxes, scores, classes)


def test_track_glue_orders_frames_and_forwards_end_after_the_last() -> None:
    stage = OrderedTrackStage(OrderedTrackConfig(class_names=("person",)))
    stage.setup()
    assert list(stage.process(dets("a", 1))) == []  # 0 still on its way
    assert list(stage.process(EndMsg("a", 3))) == []
    out = list(stage.process(dets("a", 0)))
    assert [m.seq for m in out] == [0, 1]  # type: ignore[union-attr]
    assert list(stage.process(dets("a", 3))) == []
    out = list(stage.process(DropMsg("a", 2, "detect", "stale")))  # tombstone fills the gap
    assert [type(m).__name__ for m in out] == ["TrackedMsg", "EndMsg"]
    t = out[0]
    assert isinstance(t, TrackedMsg) and t.seq == 3 and "track" in t.stage_ts
    # every detection is published; confirmed tracks carry their id (min_hits 3 → frame 3)
    assert len(t.objects) == 1 and t.objects[0].class_name == "person"
    assert t.objects[0].box == (13.0, 13.0, 53.0, 83.0)
    stage.close()


class ListSink:
    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.closed = 0

    def setup(self) -> None:
        pass

    def process(self, frame: Any) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed += 1


def tracked(cam: str, seq: int, ts: float) -> TrackedMsg:
    return TrackedMsg(cam, seq, seq, ts, 640, 480, (), (), {"detect": ts})


def test_sink_glue_publishes_every_result_and_ends_offline_runs() -> None:
    sink = ListSink()
    done: list[bool] = []
    published: list[str] = []
    stage = SinkStage([sink], expected_cameras=["f1", "f2"], on_done=lambda: done.append(True),
                      on_published=lambda cam, lat, ts: published.append(cam))  # fmt: skip
    stage.setup()
    now = time.time()
    # nothing is dropped after detection: an old result is published, live or not
    assert list(stage.process(tracked("f1", 0, now - 100))) == []
    assert list(stage.process(tracked("live", 0, now - 10))) == []
    stage.process(tracked("live", 1, now))
    assert published == ["f1", "live", "live"] and len(sink.frames) == 3
    assert stage.stats() == {"published": 3, "unwritten": {}, "unwritten_offline": {}}
    stage.process(EndMsg("f1", 0))
    assert not done
    stage.process(EndMsg("f2", -1))
    assert done == [True] and sink.closed == 1
    stage.close()
    assert sink.closed == 1


def test_no_segments_left_by_these_tests() -> None:
    assert not [p for p in Path("/dev/shm").glob(f"edgestream-t-{os.getpid()}-*")]


def test_sink_measures_file_cameras_from_receive_not_from_media_time() -> None:
    """A file read offline runs ahead of its media time (capture_ts = open time + pts): its
    latency is receive -> publish; a live camera's stays capture -> publish."""
    latency: dict[str, float] = {}
    stage = SinkStage([ListSink()], file_cameras={"file"},
                      on_published=lambda cam, lat, ts: latency.update({cam: lat}))  # fmt: skip
    stage.setup()
    now = time.time()
    ahead = TrackedMsg("file", 0, 0, now + 60, 640, 480, (), (), {"decode": now - 0.2})
    stage.process(ahead)
    stage.process(TrackedMsg("live", 0, 0, now - 0.5, 640, 480, (), (), {"decode": now - 0.1}))
    stage.close()
    assert 0.2 <= latency["file"] < 5
    assert 0.5 <= latency["live"] < 5
