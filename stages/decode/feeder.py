"""The decode stage adapter: one `CameraSource` thread per camera → `FrameMsg`s on the frames edge.

Camera threads never touch the socket (ZeroMQ sockets are single-threaded): each frame is put
in one bounded hand-off queue, and one sender thread numbers and sends them.

* Live cameras (``realtime``): sent without blocking; on an ipc edge the sender puts the
  pixels in the camera's own shared-memory ring and sends only a descriptor. When the
  pipeline falls behind, the ring wraps and the oldest frames still queued are overwritten —
  preprocess drops them as
  ``overwritten`` (drop-oldest, counted); a full hand-off queue or socket drops the newest
  (``queue_full``, counted). A camera never waits for the pipeline.
* Offline cameras (``realtime: false``): pixels travel inline in the message and every put and
  send blocks: the back-pressure reaches the decoder and nothing is lost. (A ring without
  acknowledgements cannot promise that: a producer that may not overwrite must know when the
  consumer is done with a slot.)

``seq`` is assigned by the sender thread to frames actually sent, so it is contiguous per
camera; an `EndMsg` with the last ``seq`` follows the last frame of a file that ended (not one
stopped by shutdown). Camera state changes are logged by the source (one line each) and
reported through ``on_state`` (the ``camera_up`` gauge).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.messages import EndMsg, FrameMsg, Message
from pipeline.transport import Sender
from stages.decode import CameraConfig, CameraSource, CameraState, DecodedFrame

log = logging.getLogger("edgestream.decode")

STAGE = "decode"
_END = "end"


@dataclass
class DecodeCounters:
    sent: Counter[str] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (camera, reason)
    up: dict[str, bool] = field(default_factory=dict)


class DecodeFeeder:
    """The `FrameSink` of every camera of this process, and the sender thread behind it.

    cameras: (camera id, `CameraConfig`). sender: the frames edge (with a shm pool on ipc).
    queue_size: hand-off capacity between camera threads and the sender.
    """

    def __init__(
        self,
        cameras: Sequence[tuple[str, CameraConfig]],
        sender: Sender,
        queue_size: int = 16,
        on_state: Callable[[str, CameraState, str], None] | None = None,
    ) -> None:
        self.configs = dict(cameras)
        self.sender = sender
        self.on_state_cb = on_state
        self.counters = DecodeCounters()
        self._q: queue.Queue[tuple[str, object] | None] = queue.Queue(queue_size)
        self._next_seq: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.sources = [CameraSource(cid, cfg, self) for cid, cfg in cameras]
        self._thread = threading.Thread(target=self._send_loop, name="decode-sender", daemon=True)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._thread.start()
        for s in self.sources:
            s.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the cameras, then the sender (what is queued is sent if the edge takes it)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for s in self.sources:
            s.stop(max(0.1, deadline - time.monotonic()))
        self._q.put(None)
        self._thread.join(max(0.1, deadline - time.monotonic()))

    # ------------------------------------------------------------------ FrameSink
    def on_frame(self, frame: DecodedFrame) -> None:
        cfg = self.configs[frame.camera_id]
        cam = frame.camera_id
        msg = FrameMsg(
            camera_id=cam,
            frame_id=frame.frame_id,
            seq=0,  # numbered by the sender thread
            capture_ts=frame.capture_ts,
            capture_ts_source=frame.capture_ts_source,
            width=frame.width,
            height=frame.height,
            pixels=frame.rgb,
            stage_ts={STAGE: time.time()},
        )
        if not cfg.realtime:
            while not self._stopping.is_set():
                try:
                    self._q.put((cam, msg), timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        try:
            self._q.put_nowait((cam, msg))
        except queue.Full:
            self._drop(cam, "queue_full")

    def on_state(self, camera_id: str, old: CameraState, new: CameraState, reason: str) -> None:
        self.counters.up[camera_id] = new == CameraState.STREAMING
        if self.on_state_cb is not None:
            self.on_state_cb(camera_id, new, reason)
        if new == CameraState.STOPPED and not self._stopping.is_set():
            self._q.put((camera_id, _END))  # the file ended (or failed for good)

    # ------------------------------------------------------------------ sender thread
    def _send_loop(self) -> None:
        while True:
            entry = self._q.get()
            if entry is None:
                return
            cam, payload = entry
            try:
                self._send(cam, payload)
            except Exception:
                log.exception("decode: sending a frame of camera %s failed", cam)

    def _send(self, cam: str, payload: object) -> None:
        realtime = self.configs[cam].realtime
        if isinstance(payload, str):  # _END
            end = EndMsg(cam, self._next_seq[cam] - 1)
            if self.sender.send(end, block=True):
                log.info("camera %s: ended after %d frame(s)", cam, self._next_seq[cam])
            return
        assert isinstance(payload, FrameMsg)
        msg: Message = _with_seq(payload, self._next_seq[cam])
        if self.sender.send(msg, block=not realtime):
            self._next_seq[cam] += 1
            self.counters.sent[cam] += 1
        elif realtime:
            self._drop(cam, "queue_full")

    def _drop(self, cam: str, reason: str) -> None:
        with self._lock:
            self.counters.dropped[(cam, reason)] += 1


def _with_seq(msg: FrameMsg, seq: int) -> FrameMsg:
    from dataclasses import replace

    return replace(msg, seq=seq)
