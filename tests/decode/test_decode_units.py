"""Pure logic: redaction, config validation, backoff bounds, frame-rate decimation."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from stages.decode import CameraConfig, redact_text, redact_url
from stages.decode.backoff import Backoff
from stages.decode.pacing import RatePacer, RealtimeClock


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s?x=1", "rtsp://admin:***@10.0.0.5:554/s?x=1"),
        ("rtsp://admin:p%40ss@cam/s", "rtsp://admin:***@cam/s"),
        ("rtsp://u:pa@ss:w@cam/s", "rtsp://u:***@cam/s"),
        ("rtsp://admin@cam/s", "rtsp://admin@cam/s"),
        ("https://h/live.m3u8?token=abc&a=1", "https://h/live.m3u8?token=***&a=1"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_in_messages_and_literal_secrets() -> None:
    msg = "Server returned 401: 'rtsp://user:wrong@127.0.0.1:8554/live' (password wrong)"
    out = redact_text(msg, secrets=["wrong"])
    assert "wrong" not in out
    assert "rtsp://user:***@127.0.0.1:8554/live" in out


def test_config_validation_names_every_problem() -> None:
    with pytest.raises(ValueError) as e:
        CameraConfig(
            "rtsp://u:secret@cam/s",
            transport="http",
            detect_fps=0,
            backoff_min_s=5,  # type: ignore[arg-type]
            backoff_max_s=1,
        )
    msg = str(e.value)
    assert "transport" in msg and "detect_fps" in msg and "backoff_max_s" in msg
    assert "secret" not in msg


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("rtsp://cam/s", "rtsp", "rtsp://cam/s"),
        ("http://cam/mjpg", "http", "http://cam/mjpg"),
        ("https://cdn/x.m3u8", "http", "https://cdn/x.m3u8"),
        ("/dev/video2", "v4l2", "/dev/video2"),
        ("v4l2:///dev/video0", "v4l2", "/dev/video0"),
        ("file:///data/a.mp4", "file", "/data/a.mp4"),
        ("clip.mp4", "file", "clip.mp4"),
    ],
)
def test_source_kind(url: str, kind: str, path: str) -> None:
    cfg = CameraConfig(url)
    assert cfg.kind == kind
    assert cfg.path == path
    assert cfg.is_live == (kind != "file")


def test_backoff_doubles_with_jitter_within_bounds_and_resets() -> None:
    b = Backoff(1.0, 30.0, jitter=0.2, rng=random.Random(0))
    delays = [b.next_delay() for _ in range(10)]
    assert all(1.0 <= d <= 30.0 for d in delays)
    assert 1.0 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and 3.2 <= delays[2] <= 4.8
    assert all(24.0 <= d <= 30.0 for d in delays[6:])  # capped at max, jitter only downwards
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, not lock-step
    b.reset()
    assert b.next_delay() <= 1.2


@pytest.mark.parametrize(
    ("src_fps", "target"), [(25, 10), (30, 5), (25, 12.5), (12.5, 5), (25, 30)]
)
def test_rate_pacer_forwards_evenly(src_fps: float, target: float) -> None:
    pacer = RatePacer(target)
    times = [i / src_fps for i in range(int(src_fps * 20))]
    kept = [t for t in times if pacer.should_forward(t)]
    expected = min(src_fps, target) * 20
    assert abs(len(kept) - expected) <= 1
    gaps = [b - a for a, b in itertools.pairwise(kept)]
    # evenly spread: no gap shorter than one source frame, none longer than period + 1 frame
    assert min(gaps) >= 1 / src_fps - 1e-9
    assert max(gaps) <= 1 / min(target, src_fps) + 1 / src_fps + 1e-9


def test_rate_pacer_reanchors_on_timestamp_jumps() -> None:
    pacer = RatePacer(5)
    assert pacer.should_forward(100.0)
    assert not pacer.should_forward(100.04)
    assert pacer.should_forward(0.0)  # reconnect: pts restart
    assert pacer.should_forward(50.0)  # gap
    assert RatePacer(None).should_forward(1.0)


def test_realtime_capture_time_is_when_the_frame_is_due() -> None:
    """A file played live is captured when each frame is due on the paced timeline: the first
    frame's release plus its media time since; not the open time + pts, which also counted
    opening the file and decoding the first frame into every frame's latency."""
    clock = RealtimeClock(threading.Event())
    opened = time.time()
    time.sleep(0.05)  # opening and decoding the first frame
    clock.wait_until(10.0)  # the first frame (media 10 s) anchors the timeline
    released = time.time()
    assert released - 0.005 <= clock.capture_time(10.0) <= released
    assert clock.capture_time(10.0) - opened >= 0.05
    clock.wait_until(10.04)
    assert abs(clock.capture_time(10.04) - time.time()) < 0.01  # due now, after the wait
    assert clock.capture_time(10.04) - clock.capture_time(10.0) == pytest.approx(0.04)
    clock.wait_until(100.0)  # a jump: re-anchored, not slept for
    assert abs(clock.capture_time(100.0) - time.time()) < 0.01
