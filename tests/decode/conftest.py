"""Fixtures for the decode tests: the GStreamer RTSP server, generated clips, frame sinks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rtsp_harness import RtspServer, gstreamer_missing, make_clip

from stages.decode import CameraConfig, CameraSource, CameraState, DecodedFrame

MEDIA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "media"

# Short timeouts so that every failure path runs in seconds (production defaults are 10/5/10 s).
FAST = dict(
    open_timeout_s=3.0,
    read_timeout_s=1.0,
    stall_timeout_s=2.0,
    backoff_min_s=0.2,
    backoff_max_s=1.0,
    backoff_reset_s=2.0,
)


@pytest.fixture(scope="session")
def gst_reason() -> str | None:
    return gstreamer_missing()


@pytest.fixture
def rtsp_factory(
    gst_reason: str | None, require: Callable[[str | None], None]
) -> Iterator[Callable[..., RtspServer]]:
    """Start RTSP servers; every one is killed (with its process group) at teardown."""
    require(gst_reason)
    servers: list[RtspServer] = []

    def start(*mounts: str, auth: str | None = None) -> RtspServer:
        server = RtspServer(mounts or ("/live=live:320x240@25",), auth=auth)
        servers.append(server)
        return server

    yield start
    errors = []
    for server in servers:
        try:
            server.close()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small generated clips: H.264 (MP4 and Annex-B), H.265, MJPEG, plus damaged H.264."""
    d = tmp_path_factory.mktemp("clips")
    out = {
        "h264": make_clip(d / "h264.mp4"),
        "h264_es": make_clip(d / "h264.h264", fmt="h264", frames=150),
        "hevc": make_clip(d / "hevc.mp4", codec="libx265", frames=50),
        "mjpeg": make_clip(d / "mjpeg.avi", codec="mjpeg", frames=50),
    }
    data = out["h264_es"].read_bytes()
    (d / "truncated.h264").write_bytes(data[: len(data) // 2])
    out["truncated"] = d / "truncated.h264"
    flipped = bytearray(data)
    step = max(1, len(flipped) // 400)
    for i in range(200, len(flipped), step):  # deterministic: a flipped byte every `step`
        flipped[i] ^= 0xFF
    (d / "flipped.h264").write_bytes(bytes(flipped))
    out["flipped"] = d / "flipped.h264"
    # An MP4 cut in half: the index (moov) is at the end, so nothing is left to decode.
    mp4 = out["h264"].read_bytes()
    (d / "truncated.mp4").write_bytes(mp4[: len(mp4) // 2])
    out["truncated_mp4"] = d / "truncated.mp4"
    return out


class RecordingSink:
    """A FrameSink that keeps what it got (frames without pixels, to bound memory)."""

    def __init__(self, keep_pixels: int = 2) -> None:
        self.frames: list[DecodedFrame] = []
        self.arrivals: list[float] = []  # monotonic time of each on_frame
        self.arrivals_wall: list[float] = []  # time.time() of each on_frame
        self.states: list[tuple[float, CameraState, CameraState, str]] = []
        self.keep_pixels = keep_pixels
        self.cond = threading.Condition()

    def on_frame(self, frame: DecodedFrame) -> None:
        with self.cond:
            if len(self.frames) >= self.keep_pixels:
                object.__setattr__(frame, "rgb", None)
            self.frames.append(frame)
            self.arrivals.append(time.monotonic())
            self.arrivals_wall.append(time.time())
            self.cond.notify_all()

    def on_state(self, camera_id: str, old: CameraState, new: CameraState, reason: str) -> None:
        with self.cond:
            self.states.append((time.monotonic(), old, new, reason))
            self.cond.notify_all()

    def wait_for(self, pred: Callable[[], bool], timeout_s: float) -> bool:
        with self.cond:
            return self.cond.wait_for(pred, timeout_s)

    def wait_state(self, state: CameraState, timeout_s: float, after: float = 0.0) -> float | None:
        """Monotonic time the camera entered ``state`` (after ``after``), or None on timeout."""

        def hit() -> float | None:
            return next((t for t, _, new, _ in self.states if new == state and t >= after), None)

        self.wait_for(lambda: hit() is not None, timeout_s)
        return hit()

    def wait_frames(self, n: int, timeout_s: float, after: float = 0.0) -> bool:
        return self.wait_for(lambda: sum(1 for t in self.arrivals if t >= after) >= n, timeout_s)

    def rate(self, t0: float, t1: float) -> float:
        with self.cond:
            return sum(1 for t in self.arrivals if t0 <= t < t1) / (t1 - t0)

    def reasons(self, state: CameraState) -> list[str]:
        return [r for _, _, new, r in self.states if new == state]


@pytest.fixture
def camera() -> Iterator[Callable[..., tuple[CameraSource, RecordingSink]]]:
    """Build and start CameraSources; all are stopped (and must stop) at teardown."""
    started: list[CameraSource] = []

    def make(
        url: str, camera_id: str = "cam", **overrides: object
    ) -> tuple[CameraSource, RecordingSink]:
        cfg = CameraConfig(url=url, **{**FAST, **overrides})  # type: ignore[arg-type]
        sink = RecordingSink()
        source = CameraSource(camera_id, cfg, sink)
        source.start()
        started.append(source)
        return source, sink

    yield make
    stuck = [s.camera_id for s in started if not s.stop(timeout_s=10)]
    assert not stuck, f"cameras did not stop: {stuck}"
