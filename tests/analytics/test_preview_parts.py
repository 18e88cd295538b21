"""The preview's parts wired together in one process over real ZeroMQ ipc sockets: decode's
`FrameTap`, the sink's `PreviewServer`, the HTTP server's `PreviewClient` and `HealthServer`
routes. Seconds, no model; `test_preview.py` runs the same through a whole pipeline."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.config.preview import PreviewConfig
from pipeline.config.zones import LineConfig
from pipeline.health import HealthServer
from pipeline.messages import FrameMsg
from pipeline.payloads import FrameResult, TrackedObject
from pipeline.preview import PreviewClient
from stages.analytics import CameraRegions
from stages.analytics.preview import FrameTap, PreviewServer
from stages.sinks.video import REGION_COLOUR, track_colour

T0 = 1_750_000_000.0
W, H = 640, 360


class Sender:
    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.stop = None

    def send(self, msg: Any, block: bool = False) -> bool:
        self.sent.append(msg)
        return True


def frame(camera: str, frame_id: int) -> tuple[FrameMsg, FrameResult]:
    rng = np.random.default_rng(frame_id)
    rgb = (rng.integers(0, 60, (H, W, 3))).astype(np.uint8)  # dark noise: no box colour in it
    msg = FrameMsg(camera, frame_id, frame_id, T0 + frame_id, "wallclock", W, H, rgb)
    box = (100.0 + frame_id, 80.0, 220.0 + frame_id, 300.0)
    result = FrameResult(camera, frame_id, T0 + frame_id, W, H,
                         [TrackedObject(7, 0, "person", 0.9, box)])  # fmt: skip
    return msg, result


@pytest.fixture
def parts(tmp_path: Path) -> Any:
    stop = threading.Event()
    sender = Sender()
    tap = FrameTap(sender, tmp_path, stop)
    regions = {"cam": CameraRegions(lines=(LineConfig(id="l", points=[(500, 360), (500, 0)]),))}
    server = PreviewServer(
        PreviewConfig(enabled=True, fps=10, jpeg_quality=95), tmp_path, stop, regions.get
    )
    client = PreviewClient(tmp_path, lambda: ["cam", "idle"], fps=10)
    yield tap, server, client, sender
    stop.set()
    time.sleep(0.3)


def test_a_watched_camera_gets_its_frame_drawn_with_its_own_result(parts: Any) -> None:
    tap, server, client, sender = parts
    msg, result = frame("cam", 5)
    assert tap.send(msg) and sender.sent == [msg]  # the tap forwards everything
    assert client.snapshot("cam", wait_s=0.3) is None  # watched from now; nothing encoded yet
    assert server.encoded == 0
    # results of other frames do not match; the frame's own does
    server.observe(frame("cam", 4)[1])
    server.observe(result)
    snap = client.snapshot("cam", wait_s=5)
    assert snap is not None and snap.frame_id == 5
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(snap.jpeg, np.uint8), 1), cv2.COLOR_BGR2RGB)
    colour = np.array(track_colour(7))
    x1, y1, _, y2 = (round(v) for v in result.objects[0].box)
    left = img[y1 + 60 : y2 - 5, x1].astype(int)
    assert (np.abs(left - colour).max(axis=1) < 40).mean() > 0.8
    inside = img[y1 + 60 : y2 - 5, x1 + 10].astype(int)  # not drawn: the frame's noise
    assert (np.abs(inside - colour).max(axis=1) < 40).mean() < 0.1
    line = img[50:300, 500].astype(int)
    assert (np.abs(line - np.array(REGION_COLOUR)).max(axis=1) < 40).mean() > 0.8


def test_a_camera_nobody_watches_costs_nothing(parts: Any) -> None:
    tap, server, _, _ = parts
    msg, result = frame("idle", 3)
    tap.send(msg)
    server.observe(result)
    time.sleep(0.5)
    assert server.encoded == 0 and tap.served == 0
    assert server.stats()["watched"] == 0


def test_http_routes(parts: Any, tmp_path: Path) -> None:
    tap, server, client, _ = parts
    msg, result = frame("cam", 9)
    tap.send(msg)
    with HealthServer("127.0.0.1", 0, preview=client) as http:
        try:
            urllib.request.urlopen(f"{http.url}/cameras/nope/snapshot.jpg", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
        got: dict[str, Any] = {}

        def fetch() -> None:
            with urllib.request.urlopen(f"{http.url}/cameras/cam/snapshot.jpg", timeout=10) as r:
                got.update(status=r.status, type=r.headers["Content-Type"],
                           frame=r.headers["X-Frame-Id"], body=r.read())  # fmt: skip

        t = threading.Thread(target=fetch)
        t.start()
        time.sleep(0.5)  # the request marked the camera watched: its frame is fetched
        server.observe(result)
        t.join(10)
        assert got["status"] == 200 and got["type"] == "image/jpeg" and got["frame"] == "9"
        assert got["body"][:2] == b"\xff\xd8"
    with HealthServer("127.0.0.1", 0) as off:
        try:
            urllib.request.urlopen(f"{off.url}/cameras/cam/stream.mjpg", timeout=10)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404 and b"preview is off" in exc.read()
