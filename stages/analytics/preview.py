"""The camera preview's two ends in the stage processes (see `pipeline.preview` for the why).

* `FrameTap` (decode process): wraps the frames sender, keeps a reference to the last frame
  sent per camera, and answers ``frame <camera>`` on ``preview-decode.sock`` with it.
* `PreviewServer` (sink process): answers ``snapshot <camera>`` on ``preview-sink.sock`` with
  the camera's latest annotated JPEG, and while a camera is watched fetches a frame from decode
  at most ``fps`` times a second, holds it until its result is published, draws it
  (`stages.sinks.video.draw_tracks`, `draw_regions`: one drawing for video and preview) and
  encodes it. `observe` (called by the sink stage for every frame, through `ZoneAnalytics`'s
  chain) keeps the recent results of watched cameras only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from pipeline.config.preview import PreviewConfig
from pipeline.messages import FrameMsg
from pipeline.payloads import FrameResult
from pipeline.preview import endpoint, request
from stages.analytics.geometry import scaled
from stages.analytics.stage import CameraRegions
from stages.sinks.video import draw_regions, draw_tracks

log = logging.getLogger("edgestream.preview")

RESULTS_KEPT = 128  # per watched camera: ~5 s at 25 fps, enough to outlast the pipeline's latency
PENDING_TIMEOUT_S = 5.0


def _bind(ctx: zmq.Context[Any], url: str) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    path = Path(url[len("ipc://") :])
    path.unlink(missing_ok=True)  # left by a killed incarnation of this process
    sock.bind(url)
    return sock


class FrameTap:
    """Decode side: ``send`` forwards to ``sender`` and remembers each camera's last frame;
    a thread serves them on ``preview-decode.sock``. Everything else is the sender's."""

    def __init__(self, sender: Any, directory: Path, stop: Any) -> None:
        self._sender = sender
        self.latest: dict[str, FrameMsg] = {}
        self.served = 0
        self._stop = stop
        self._thread = threading.Thread(
            target=self._serve,
            args=(endpoint(directory, "decode"),),
            name="preview-frames",
            daemon=True,
        )
        self._thread.start()

    def send(self, msg: Any, *args: Any, **kw: Any) -> Any:
        ok = self._sender.send(msg, *args, **kw)
        if ok and isinstance(msg, FrameMsg) and isinstance(msg.pixels, np.ndarray):
            self.latest[msg.camera_id] = msg  # a reference: decode made a new array per frame
        return ok

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sender, name)

    def _serve(self, url: str) -> None:
        ctx: zmq.Context[Any] = zmq.Context.instance()
        sock = _bind(ctx, url)
        try:
            while not self._stop.is_set():
                if not sock.poll(200):
                    continue
                parts = sock.recv_multipart()
                cam = parts[1].decode() if len(parts) == 2 and parts[0] == b"frame" else ""
                msg = self.latest.get(cam)
                if msg is None:
                    sock.send_multipart([b"none"])
                    continue
                assert isinstance(msg.pixels, np.ndarray)
                pixels = np.ascontiguousarray(msg.pixels)
                head = {"frame_id": msg.frame_id, "shape": list(pixels.shape)}
                sock.send_multipart([b"ok", json.dumps(head).encode(), pixels.data], copy=False)
                self.served += 1
        except zmq.ZMQError:
            if not self._stop.is_set():
                log.exception("preview: decode frame server failed")
        finally:
            sock.close()


class PreviewServer:
    """Sink side: the latest annotated JPEG per watched camera (see the module doc).

    regions: camera id -> its zones and lines (drawn), or None.
    """

    def __init__(
        self,
        config: PreviewConfig,
        directory: Path,
        stop: Any,
        regions: Callable[[str], CameraRegions | None] = lambda _cam: None,
    ) -> None:
        self.config = config
        self.regions = regions
        self._decode_url = endpoint(directory, "decode")
        self._url = endpoint(directory, "sink")
        self._stop = stop
        self._lock = threading.Lock()
        self._watched: dict[str, float] = {}  # camera -> monotonic time of the last request
        self._results: dict[str, deque[FrameResult]] = {}
        self._pending: dict[str, tuple[int, np.ndarray, float]] = {}
        self._next_fetch: dict[str, float] = {}
        self._jpeg: dict[str, tuple[bytes, int, float]] = {}
        self.encoded = 0
        self.missed = 0  # fetched frames whose result never came (dropped before detect)
        self._thread = threading.Thread(target=self._run, name="preview", daemon=True)
        self._thread.start()

    # -- the sink stage's thread ----------------------------------------------------------
    def observe(self, frame: FrameResult) -> FrameResult:
        """Keep ``frame`` if its camera is watched (a deque append); returns it unchanged."""
        if frame.camera in self._watched:
            with self._lock:
                q = self._results.get(frame.camera)
                if q is not None:
                    q.append(frame)
        return frame

    # -- the preview thread ---------------------------------------------------------------
    def _run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context.instance()
        sock = _bind(ctx, self._url)
        try:
            while not self._stop.is_set():
                if sock.poll(50):
                    self._answer(sock)
                self._work(ctx)
        except zmq.ZMQError:
            if not self._stop.is_set():
                log.exception("preview: sink server failed")
        finally:
            sock.close()

    def _answer(self, sock: zmq.Socket[Any]) -> None:
        parts = sock.recv_multipart()
        if len(parts) != 2 or parts[0] != b"snapshot":
            sock.send_multipart([b"bad request"])
            return
        cam = parts[1].decode(errors="replace")
        with self._lock:
            if cam not in self._watched:
                self._results[cam] = deque(maxlen=RESULTS_KEPT)
            self._watched[cam] = time.monotonic()
        got = self._jpeg.get(cam)
        if got is None:
            sock.send_multipart([b"wait"])
            return
        jpeg, frame_id, capture_ts = got
        meta = json.dumps({"frame_id": frame_id, "capture_ts": capture_ts}).encode()
        sock.send_multipart([b"ok", jpeg, meta])

    def _work(self, ctx: zmq.Context[Any]) -> None:
        now = time.monotonic()
        for cam, seen in list(self._watched.items()):
            if now - seen > self.config.watch_timeout_s:  # nobody watches: forget it all
                with self._lock:
                    del self._watched[cam]
                    self._results.pop(cam, None)
                self._pending.pop(cam, None)
                self._jpeg.pop(cam, None)
                continue
            pending = self._pending.get(cam)
            if pending is None:
                if now >= self._next_fetch.get(cam, 0.0):
                    self._next_fetch[cam] = now + 1.0 / self.config.fps
                    self._fetch(ctx, cam, now)
                continue
            frame_id, rgb, since = pending
            with self._lock:
                results = list(self._results.get(cam, ()))
            match = next((r for r in results if r.frame_id == frame_id), None)
            if match is not None:
                del self._pending[cam]
                self._encode(cam, rgb, match)
            elif now - since > PENDING_TIMEOUT_S or any(
                r.frame_id > frame_id + 50 for r in results[-1:]
            ):
                del self._pending[cam]
                self.missed += 1

    def _fetch(self, ctx: zmq.Context[Any], cam: str, now: float) -> None:
        reply = request(ctx, self._decode_url, [b"frame", cam.encode()], timeout_ms=500)
        if not reply or reply[0] != b"ok" or len(reply) != 3:
            return
        head = json.loads(reply[1])
        shape = tuple(int(v) for v in head["shape"])
        rgb = np.frombuffer(reply[2], np.uint8).reshape(shape)
        self._pending[cam] = (int(head["frame_id"]), rgb, now)

    def _encode(self, cam: str, rgb: np.ndarray, result: FrameResult) -> None:
        objects = [o for o in result.objects if o.track_id is not None]
        img = draw_tracks(rgb, objects, f"{cam}  frame {result.frame_id}")
        regions = self.regions(cam)
        if regions is not None:
            h, w = img.shape[:2]
            zones = [(z.id, scaled(list(z.points), z.normalized, w, h)) for z in regions.zones]
            lines = [(ln.id, scaled(list(ln.points), ln.normalized, w, h)) for ln in regions.lines]
            draw_regions(img, zones, lines, {"zones": result.zones, "lines": result.lines})
        if img.shape[1] > self.config.max_width:
            f = self.config.max_width / img.shape[1]
            img = cv2.resize(
                img,
                (self.config.max_width, max(1, round(img.shape[0] * f))),
                interpolation=cv2.INTER_AREA,
            )
        params = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
        if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):  # OpenCV >= 4.5.5
            # full-resolution colour (4:4:4): 1-2 px coloured box edges stay their colour
            params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params)
        if ok:
            self._jpeg[cam] = (buf.tobytes(), result.frame_id, result.capture_ts)
            self.encoded += 1

    def stats(self) -> dict[str, Any]:
        return {"encoded": self.encoded, "missed": self.missed, "watched": len(self._watched)}
