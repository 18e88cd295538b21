"""HTTP sources from in-process HTTP servers: MJPEG (multipart/x-mixed-replace) and HLS."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stages.decode import CameraState

S = CameraState


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def http_server() -> Iterator[Callable[[type[http.server.BaseHTTPRequestHandler]], int]]:
    servers: list[_Server] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler]) -> int:
        srv = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return int(srv.server_address[1])

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


class MjpegHandler(http.server.BaseHTTPRequestHandler):
    """An IP-camera style MJPEG stream: 20 fps JPEGs, red square moving, until the client leaves."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        i = 0
        try:
            while i < 2000:
                img = np.zeros((240, 320, 3), np.uint8)
                img[100:140, (i * 5) % 280 : (i * 5) % 280 + 40] = (0, 0, 255)  # BGR red
                ok, jpg = cv2.imencode(".jpg", img)
                assert ok
                self.wfile.write(
                    b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                    + str(len(jpg)).encode()
                    + b"\r\n\r\n"
                    + jpg.tobytes()
                    + b"\r\n"
                )
                self.wfile.flush()
                i += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_mjpeg_over_http(http_server, camera) -> None:
    port = http_server(MjpegHandler)
    src, sink = camera(f"http://127.0.0.1:{port}/video.mjpg")
    assert sink.wait_frames(20, 10), sink.states
    f = sink.frames[0]
    assert f.rgb.shape == (240, 320, 3)
    red = f.rgb[120, (f.frame_id * 5) % 280 + 20]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60  # RGB order
    assert f.capture_ts_source == "wallclock"
    assert src.state == S.STREAMING


def test_hls_over_http(http_server, camera, clips, tmp_path: Path) -> None:
    hls = tmp_path / "hls"
    hls.mkdir()
    with av.open(str(clips["h264"])) as inp, av.open(
        str(hls / "index.m3u8"), "w", format="hls",
        options={"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"},
    ) as out:  # fmt: skip
        ost = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(video=0):
            if packet.size:
                packet.stream = ost
                out.mux(packet)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(hls))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    port = http_server(handler)
    _src, sink = camera(f"http://127.0.0.1:{port}/index.m3u8")
    assert sink.wait_frames(100, 15), sink.states
    assert sink.frames[0].rgb.shape == (240, 320, 3)
    # a VOD playlist ends: for a live kind of source that is a disconnect, retried with backoff
    assert sink.wait_state(S.BACKOFF, 10) is not None
    assert "stream ended" in sink.reasons(S.BACKOFF)[0]
