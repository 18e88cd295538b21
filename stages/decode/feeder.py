"""The decode stage adapter: one `CameraSource` thread per camera → `FrameMsg`s on the frames edge.

Camera threads never touch the socket (ZeroMQ sockets are single-threaded): they hand each
frame to this feeder, and one sender thread numbers and sends them.

* Live cameras (``realtime``): **the newest frame wins**, as ahead of detect. Each camera has
  one mailbox slot: a frame not sent yet is replaced by the camera's next one and counted
  (``superseded``). The sender sends only when the edge has room (it waits for that instead of
  having a send refused), serving the cameras round-robin, so a busy pipeline never refuses a
  frame (no ``queue_full``) and always gets each camera's newest frame next. On an ipc edge the
  pixels go into the camera's own shared-memory ring and only a descriptor is sent; a worker
  that falls further behind than the ring is deep drops the frame as ``overwritten``
  (counted). A camera never waits for the pipeline.
* Offline cameras (``realtime: false``): pixels travel inline in the message and every hand-off
  and send blocks: the back-pressure reaches the decoder and nothing is lost. (A ring without
  acknowledgements cannot promise that: a producer that may not overwrite must know when the
  consumer is done with a slot.)

``seq`` is assigned by the sender thread to frames actually sent, so it is contiguous per
camera; an `EndMsg` with the last ``seq`` follows the last frame of a file that ended (not one
stopped by shutdown). A live frame still waiting in its slot when the feeder stops is dropped
as ``shutdown`` (counted). Camera state changes are logged by the source (one line each) and
reported through ``on_state`` (the ``camera_up`` gauge).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.messages import EndMsg, FrameMsg
from pipeline.transport import Sender
from stages.decode import CameraConfig, CameraSource, CameraState, DecodedFrame
from stages.decode.pacing import RatePacer

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
    queue_size: offline frames (and end markers) that may wait for the sender in order.
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
        self.queue_size = queue_size
        self._cv = threading.Condition()
        self._fifo: deque[tuple[str, FrameMsg | str]] = deque()  # offline frames, end markers
        self._latest: dict[str, FrameMsg] = {}  # live: each camera's newest frame not sent yet
        self._served: dict[str, int] = {}  # live camera -> when it was last sent (serial)
        self._serial = 0
        self._closed = False
        self._next_seq: Counter[str] = Counter()
        self._stopping = threading.Event()
        self._caps: dict[str, tuple[float, RatePacer]] = {}  # live camera -> forward cap
        self.sources = [CameraSource(cid, cfg, self) for cid, cfg in cameras]
        self._thread = threading.Thread(target=self._send_loop, name="decode-sender", daemon=True)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._thread.start()
        for s in self.sources:
            s.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the cameras, then the sender (what waits is sent if the edge takes it now)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout_s
        for s in self.sources:
            s.stop(max(0.1, deadline - time.monotonic()))
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(max(0.1, deadline - time.monotonic()))

    # ------------------------------------------------------------------ shedding
    def set_caps(self, caps: Mapping[str, float]) -> None:
        """Forward at most ``caps[camera]`` frames/s of these live cameras, the others
        uncapped (`pipeline.shedding`). A camera keeps its schedule when its cap is unchanged."""
        new: dict[str, tuple[float, RatePacer]] = {}
        for cam, fps in caps.items():
            cfg = self.configs.get(cam)
            if cfg is None or not cfg.realtime or fps <= 0:
                continue
            old = self._caps.get(cam)
            new[cam] = old if old is not None and old[0] == fps else (fps, RatePacer(fps))
        self._caps = new  # one assignment: camera threads see the old or the new dict

    def admit(self, camera_id: str, t: float) -> bool:
        """Called by a camera's thread before it converts a frame it would forward (stream
        time ``t``): False when the camera's cap sheds it (counted: ``shed``)."""
        cap = self._caps.get(camera_id)
        if cap is None or cap[1].should_forward(t):
            return True
        with self._cv:
            self.counters.dropped[(camera_id, "shed")] += 1
        return False

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
        with self._cv:
            if cfg.realtime:
                if self._latest.pop(cam, None) is not None:
                    self.counters.dropped[(cam, "superseded")] += 1
                self._latest[cam] = msg
            else:
                while len(self._fifo) >= self.queue_size:
                    if self._stopping.is_set():
                        return
                    self._cv.wait(0.1)
                self._fifo.append((cam, msg))
            self._cv.notify_all()

    def on_state(self, camera_id: str, old: CameraState, new: CameraState, reason: str) -> None:
        self.counters.up[camera_id] = new == CameraState.STREAMING
        if self.on_state_cb is not None:
            self.on_state_cb(camera_id, new, reason)
        if new == CameraState.STOPPED and not self._stopping.is_set():
            with self._cv:  # the file ended (or failed for good); its last frame goes first
                self._fifo.append((camera_id, _END))
                self._cv.notify_all()

    def end_pending(self, camera_id: str) -> bool:
        """Whether an end marker of ``camera_id`` still waits to be sent (live camera control
        reopens a camera only after its old end went out: `stages.decode.control`)."""
        with self._cv:
            return any(c == camera_id and p == _END for c, p in self._fifo)

    # ------------------------------------------------------------------ sender thread
    def _send_loop(self) -> None:
        while True:
            ordered: tuple[str, FrameMsg | str] | None = None
            first: str | None = None
            with self._cv:
                while not (self._fifo or self._latest or self._closed):
                    self._cv.wait()
                if self._closed:
                    break
                if self._fifo and self._fifo[0][1] == _END and self._fifo[0][0] in self._latest:
                    first = self._fifo[0][0]  # the camera's last frame goes before its end
                elif self._fifo:
                    ordered = self._fifo.popleft()
                    self._cv.notify_all()  # room for a blocked offline camera
            try:
                if ordered is not None:
                    self._send_ordered(*ordered)
                else:
                    self._send_newest(first)
            except Exception:
                log.exception("decode: sending a frame failed")
        self._flush_live()
        with self._cv:
            rest, self._fifo = list(self._fifo), deque()
        for entry in rest:  # what the edge takes now (end markers: their files ended)
            self._send_ordered(*entry)

    def _send_ordered(self, cam: str, payload: FrameMsg | str) -> None:
        if isinstance(payload, str):  # _END
            end = EndMsg(cam, self._next_seq[cam] - 1)
            if self.sender.send(end, block=True):
                log.info("camera %s: ended after %d frame(s)", cam, self._next_seq[cam])
            return
        if self.sender.send(_with_seq(payload, self._next_seq[cam]), block=True):
            self._sent(cam)

    def _send_newest(self, cam: str | None) -> None:
        """Wait (briefly) for room on the edge, then send one live camera's newest frame:
        ``cam``'s, else the camera sent longest ago. A frame that arrives meanwhile replaces
        the waiting one, so what leaves is always the newest."""
        if not self.sender.wait_connected(0.1):  # no room yet: back to the loop
            if self.sender.stop is not None and self.sender.stop.is_set():
                time.sleep(0.02)  # stopping: the wait returns at once; the feeder closes soon
            return
        with self._cv:
            if cam is None:
                if not self._latest:
                    return
                cam = min(self._latest, key=lambda c: self._served.get(c, 0))
            msg = self._latest.pop(cam, None)
            self._serial += 1
            self._served[cam] = self._serial
        if msg is None:
            return
        if self.sender.send(_with_seq(msg, self._next_seq[cam]), block=False):
            self._sent(cam)
            return
        with self._cv:  # refused after all (a race with the room check): wait again
            if cam in self._latest:
                self.counters.dropped[(cam, "superseded")] += 1
            else:
                self._latest[cam] = msg

    def _flush_live(self) -> None:
        """Stopping: each live camera's waiting frame goes if the edge takes it now, else it is
        dropped as ``shutdown`` (counted)."""
        with self._cv:
            waiting, self._latest = self._latest, {}
        for cam, msg in waiting.items():
            if self.sender.send(_with_seq(msg, self._next_seq[cam]), block=False):
                self._sent(cam)
            else:
                self._drop(cam, "shutdown")

    def _sent(self, cam: str) -> None:
        self._next_seq[cam] += 1
        self.counters.sent[cam] += 1

    def _drop(self, cam: str, reason: str) -> None:
        with self._cv:
            self.counters.dropped[(cam, reason)] += 1


def _with_seq(msg: FrameMsg, seq: int) -> FrameMsg:
    from dataclasses import replace

    return replace(msg, seq=seq)
