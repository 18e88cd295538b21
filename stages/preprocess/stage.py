"""The preprocess stage: frame in (shm ring or inline), letterboxed uint8 CHW item out.

Letterboxing is `stages.detect.preprocess.letterbox`, the exact preprocessing of `edgestream
detect`, so the pipeline's detections equal the command's. The output goes into a slot of this
worker's own shared-memory slab (same host: only a descriptor travels to detect) or inline in
the message (``inline=True``, for a tcp edge to a detect stage on another host).

A frame whose ring slot was overwritten before it was read (the camera lapped a slow worker)
becomes a `DropMsg` with reason ``overwritten``: downstream reordering does not wait for it,
and the drop is counted. `DropMsg` and `EndMsg` pass through unchanged.

`LetterboxSender` is the same letterbox done in a decode process (``preprocess.where:
decode``): it wraps decode's sender on the items edge, so a frame goes from the decoder straight
to detect — one hop and one full-frame copy through shared memory fewer, and no worker
processes. That is what a CPU box wants (the model is the bottleneck, a hop is latency); on a
GPU box with many cameras, workers letterbox in parallel off the decode processes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.messages import DropMsg, EndMsg, FrameMsg, ItemMsg, Message, ShmRef
from pipeline.payloads import LetterboxMeta
from pipeline.shm import ShmPool, ShmReader, ShmRing
from stages.detect.preprocess import letterbox, resize_to_for

log = logging.getLogger("edgestream.preprocess")

STAGE = "preprocess"


@dataclass(frozen=True)
class PreprocessStageConfig:
    """slab_name: name of this worker's output ring (None with ``inline``).
    slab_slots: slots in it. Each holds one (3, H, W) item until detect has read it; size it to
        cover the items queued between here and the detect stage (queue capacity + a batch),
        or items are overwritten (dropped) before detect reads them.
    input_hw: model input (height, width); the longest side is resized to 4 px less (636 for
        640, as in training). inline: send pixels in the message instead.
    """

    slab_name: str | None
    slab_slots: int = 32
    input_hw: tuple[int, int] = (640, 640)
    inline: bool = False


class PreprocessStage:
    """``setup() / process(msg) / close()``: letterbox each `FrameMsg` into an `ItemMsg`."""

    def __init__(
        self,
        config: PreprocessStageConfig,
        on_drop: Callable[[DropMsg], None] | None = None,
    ) -> None:
        if not config.inline and not config.slab_name:
            raise ValueError("preprocess: slab_name is required unless inline=True")
        self.config = config
        self.on_drop = on_drop
        self._reader = ShmReader()
        self._slab: ShmRing | None = None
        self._resize_to = resize_to_for(config.input_hw)
        self._frame_buf: np.ndarray | None = None
        self.processed = 0
        self.dropped = 0

    def setup(self) -> None:
        if not self.config.inline:
            h, w = self.config.input_hw
            assert self.config.slab_name is not None
            self._slab = ShmRing.create(self.config.slab_name, self.config.slab_slots, 3 * h * w)

    def process(self, msg: Message) -> Iterable[Message]:
        if not isinstance(msg, FrameMsg):
            if isinstance(msg, DropMsg | EndMsg):
                return [msg]
            log.warning("preprocess: ignoring unexpected %s", type(msg).__name__)
            return []
        if isinstance(msg.pixels, ShmRef):
            rgb = self._reader.read(msg.pixels, out=self._frame_out(msg))
            if rgb is None:
                return [self._drop(msg, "overwritten")]
        else:
            rgb = msg.pixels
        pixels: ShmRef | np.ndarray
        if self._slab is not None and isinstance(msg.pixels, ShmRef):
            with self._slab.writing((3, *self.config.input_hw)) as w:
                _, meta = letterbox(rgb, w.array, self.config.input_hw, self._resize_to)
            pixels = w.ref
        else:  # inline in, inline out: an offline frame, or a tcp edge
            pixels, meta = letterbox(rgb, None, self.config.input_hw, self._resize_to)
        self.processed += 1
        return [_item(msg, meta, pixels)]

    def close(self) -> None:
        self._reader.close()
        if self._slab is not None:
            self._slab.close()
            self._slab = None

    def _frame_out(self, msg: FrameMsg) -> np.ndarray:
        """A reusable buffer for frames copied out of a ring."""
        shape = (msg.height, msg.width, 3)
        if self._frame_buf is None or self._frame_buf.shape != shape:
            self._frame_buf = np.empty(shape, np.uint8)
        return self._frame_buf

    def _drop(self, msg: FrameMsg, reason: str) -> DropMsg:
        self.dropped += 1
        drop = DropMsg(msg.camera_id, msg.seq, STAGE, reason, frame_id=msg.frame_id)
        if self.on_drop is not None:
            self.on_drop(drop)
        return drop


class LetterboxSender:
    """Decode side of ``preprocess.where: decode``: ``send(FrameMsg)`` letterboxes the frame
    and sends the `ItemMsg` (stamped ``preprocess``) through ``sender``; everything else
    passes as it is. Used from one thread (the feeder's sender thread), like the sender.

    sender: the items edge's `pipeline.transport.Sender` (with decode's shm pool on ipc).
    input_hw: the model input (height, width).
    A live send on an ipc edge letterboxes straight into the next slot of the camera's ring
    (the ring the sender would copy it into) and sends the descriptor: no second copy of the
    item. The feeder sends only once the edge has room, so a refused send is rare; its slot is
    simply not read (the frame is counted by the feeder, as any refused send). A blocking
    (offline) send or a tcp edge sends the pixels themselves, zero-copy, so each gets a new
    array.
    """

    def __init__(self, sender: Any, input_hw: tuple[int, int]) -> None:
        self.sender = sender
        self.input_hw = input_hw
        self._resize_to = resize_to_for(input_hw)
        pool, inline = getattr(sender, "shm", None), getattr(sender, "inline", True)
        self._pool: ShmPool | None = pool if pool is not None and not inline else None

    @property
    def stop(self) -> Any:
        return self.sender.stop

    def wait_connected(self, timeout_s: float) -> bool:
        return bool(self.sender.wait_connected(timeout_s))

    def send(self, msg: Message, block: bool = False, *args: Any, **kw: Any) -> bool:
        if isinstance(msg, FrameMsg):
            msg = self.item(msg, in_ring=not block)
        return bool(self.sender.send(msg, block, *args, **kw))

    def item(self, msg: FrameMsg, in_ring: bool = False) -> ItemMsg:
        """``msg`` letterboxed: into the camera's ring with ``in_ring`` on an ipc edge (the
        item carries the slot's descriptor), else into a new array."""
        if not isinstance(msg.pixels, np.ndarray):
            raise TypeError("decode letterboxes the frames it decoded (ndarray pixels)")
        if in_ring and self._pool is not None:
            shape = (3, *self.input_hw)
            ring = self._pool.ring_for(msg.camera_id, math.prod(shape))
            with ring.writing(shape) as w:
                _, meta = letterbox(msg.pixels, w.array, self.input_hw, self._resize_to)
            return _item(msg, meta, w.ref)
        pixels, meta = letterbox(msg.pixels, None, self.input_hw, self._resize_to)
        return _item(msg, meta, pixels)

    def close(self) -> None:
        self.sender.close()


def _item(msg: FrameMsg, meta: LetterboxMeta, pixels: ShmRef | np.ndarray) -> ItemMsg:
    """The letterboxed item of ``msg``, stamped ``preprocess`` now (workers and decode alike)."""
    return ItemMsg.from_frame(msg, meta, pixels, {**msg.stage_ts, STAGE: time.time()})
