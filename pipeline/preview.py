"""The camera preview's plumbing: where its sockets are, and the HTTP server's client.

Frames and tracks meet in the sink process: the sink has every camera's results (boxes, ids,
zone and line counts) in order; the decode process has the pixels (the pipeline's messages
stop carrying them at detect, and shared-memory slots are recycled long before a result is
published). So, only while someone is watching a camera:

1. the HTTP handler (supervisor) asks the sink process for the camera's latest JPEG over a
   ZeroMQ REQ socket (``preview-sink.sock``); the request is what marks the camera watched;
2. the sink process asks decode (``preview-decode.sock``) for the camera's newest frame (decode
   keeps a reference to the last frame it sent per camera: no copy, no work), holds it until
   that frame's result arrives, draws boxes, ids, zones and lines on it and encodes a JPEG, at
   most ``preview.fps`` per second per watched camera (`stages.analytics.preview`).

A camera nobody asked about for ``watch_timeout_s`` costs nothing. Both sockets are ``ipc://``
files in the supervisor's run folder (``EDGESTREAM_PREVIEW_DIR``, set for the children), so the
preview works where decode and sink run in this process tree.

This module is the runtime side (no stage import): paths, the wire format, `PreviewClient`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

ENV_DIR = "EDGESTREAM_PREVIEW_DIR"
REQUEST_TIMEOUT_MS = 1000


def endpoint(directory: str | os.PathLike[str], who: str) -> str:
    """``ipc://<dir>/preview-<who>.sock`` (who: ``sink`` or ``decode``)."""
    return f"ipc://{Path(directory) / f'preview-{who}.sock'}"


def preview_dir() -> Path | None:
    """The folder of the preview sockets in a stage process (None: preview is off)."""
    value = os.environ.get(ENV_DIR)
    return Path(value) if value else None


def request(ctx: zmq.Context[Any], url: str, parts: list[bytes],
            timeout_ms: int = REQUEST_TIMEOUT_MS) -> list[bytes] | None:  # fmt: skip
    """One REQ/REP round trip on a fresh socket; None when no answer came in time."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    try:
        sock.connect(url)
        sock.send_multipart(parts)
        return list(sock.recv_multipart())
    except zmq.Again:
        return None
    finally:
        sock.close()


@dataclass(frozen=True)
class Snapshot:
    jpeg: bytes
    frame_id: int
    capture_ts: float


class PreviewClient:
    """What the HTTP server calls (`pipeline.health`): a camera's latest annotated JPEG.

    cameras: the camera ids that exist now (the supervisor's current config).
    """

    def __init__(
        self, directory: Path, cameras: Callable[[], Iterable[str]], fps: float = 2.0,
        max_streams: int = 4,
    ) -> None:  # fmt: skip
        self.url = endpoint(directory, "sink")
        self.cameras = cameras
        self.fps = fps
        self.max_streams = max_streams
        self._ctx: zmq.Context[Any] = zmq.Context.instance()
        self._streams = 0
        self._lock = threading.Lock()

    def known(self, camera: str) -> bool:
        return camera in set(self.cameras())

    def snapshot(self, camera: str, wait_s: float = 5.0) -> Snapshot | None:
        """The camera's latest JPEG; the first request of a camera waits up to ``wait_s``
        while the sink fetches, matches and encodes a frame. None: none came in time."""
        deadline = time.monotonic() + wait_s
        while True:
            reply = request(self._ctx, self.url, [b"snapshot", camera.encode()])
            if reply and reply[0] == b"ok" and len(reply) == 3:
                meta = json.loads(reply[2])
                return Snapshot(reply[1], int(meta["frame_id"]), float(meta["capture_ts"]))
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def open_stream(self) -> bool:
        """Reserve one of ``max_streams`` MJPEG clients; False when all are taken."""
        with self._lock:
            if self._streams >= self.max_streams:
                return False
            self._streams += 1
            return True

    def close_stream(self) -> None:
        with self._lock:
            self._streams -= 1


def preview_client(sup: Any, run_dir: Path | None) -> PreviewClient | None:
    """The supervisor's client when ``preview.enabled`` and the HTTP server runs (and exports
    `ENV_DIR` for the stage processes it starts next); None when the preview is off. Camera
    ids are read from ``sup.cfg`` on each request (live camera changes replace it)."""
    cfg = sup.cfg
    if not cfg.preview.enabled or cfg.metrics.port == 0 or run_dir is None:
        os.environ.pop(ENV_DIR, None)
        return None
    os.environ[ENV_DIR] = str(run_dir)
    p = cfg.preview
    return PreviewClient(run_dir, lambda: list(sup.cfg.camera_ids), p.fps, p.max_streams)
