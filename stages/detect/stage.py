"""The detect stage: deadline-aware batches of letterboxed items → one backend call → detections.

``process(item)`` only queues an `ItemMsg` in a `pipeline.batching.BatchPolicy` (newest frame
wins: a live camera's older waiting frame is replaced, ``DropMsg`` reason ``superseded``);
``tick`` runs the batch that is due. The runner reads every message already waiting on the
socket before it ticks, and blocks no longer than `next_deadline`, so a batch leaves when it
is full or ``max_wait_ms`` after its first slot was filled, and always holds the newest frames
that arrived while the previous batch ran. Items whose shm slot was overwritten before the
gather are dropped with reason ``overwritten``.

Every detection message's ``stage_ts`` says where its time in detect went: ``detect_in`` (the
item arrived), ``detect_batch`` (its batch started), ``detect_gather`` (pixels gathered),
``detect_infer`` (the backend returned: forward pass and NMS), then ``detect`` (boxes mapped,
message built); the sinks publish them as ``latency_ms`` (tests/bench/bench_latency_budget.py).

The batch is gathered by `stages.detect.gather` (host array, or pinned slabs → device tensor
with CUDA and the torch backend), the backend runs once, and boxes are mapped back to source
pixels with each item's letterbox meta, exactly as `Detector.detect` does — so the pipeline's
detections equal `edgestream detect`'s frame for frame.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from pipeline.batching import BatchPolicy
from pipeline.messages import DetectionsMsg, DropMsg, EndMsg, ItemMsg, Message
from pipeline.runner import FatalStageError
from stages.detect.appearance import describe
from stages.detect.batch_calibration import BatchPlan, CalibrationKey, CalibrationSpec, calibrate
from stages.detect.config import MAX_INSTANCES, BatchingConfig
from stages.detect.gather import CudaGatherer, Gathered, HostGatherer
from stages.detect.types import Backend, Detections

log = logging.getLogger("edgestream.detect.stage")

STAGE = "detect"


class DetectStageConfig(BatchingConfig):
    """The batching section as it is (`BatchingConfig`: max_batch, max_wait_ms,
    slots_per_camera, max_frame_age_ms, calibrate; one definition of each) and what the
    wiring adds at run time:

    realtime_cameras: the live cameras (newest frame wins); the others are never dropped. Any
        container (the runtime's policy object, which follows live camera changes).
    appearance: compute each detection's appearance descriptor for the tracker
        (`stages.detect.appearance`, from the letterboxed image the model saw, on its device).
    calibration: measure at set-up what each batch size buys on the loaded model (cached) and
        batch only as far as it raises throughput, ``max_batch`` being the upper bound
        (`stages.detect.batch_calibration`); None: batch up to ``max_batch`` as given.
    instances: copies of the model (``open_backend`` called once each) that run batches at
        once, each in its own thread (`model.instances`: on a CPU, two single-threaded ONNX
        Runtime sessions do more than one with two threads). A batch is formed when a copy is
        free, so frames still wait in the newest-wins slots, never in a copy's queue. 1: the
        batch runs in the runner's thread, as before. CUDA: always 1 (the GPU batches).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    realtime_cameras: Any = Field(default_factory=frozenset)
    appearance: bool = False
    calibration: CalibrationSpec | None = None
    instances: int = Field(default=1, ge=1, le=MAX_INSTANCES)


def _torch_cuda_device(backend: Backend) -> Any | None:
    """The CUDA device of a torch backend, else None (host path)."""
    if getattr(backend, "name", None) != "torch":
        return None
    device = getattr(backend, "device", None)
    return device if getattr(device, "type", None) == "cuda" else None


def infer_device_batch(backend: Any, batch: Any) -> list[Detections]:
    """Run the torch backend on a uint8 CUDA tensor already on its device.

    `TorchBackend.infer` takes host arrays (and stages them through its own pinned buffer);
    the device batch gathered from pinned slabs goes to `TorchBackend.infer_device` instead,
    on the current stream.
    """
    return backend.infer_device(batch)


@dataclass
class _LaneResult:
    """One batch's outcome: its detection messages, the items whose pixels were overwritten
    before the gather, frames run and seconds in gather + inference + mapping."""

    messages: list[Message]
    lost: list[ItemMsg]
    frames: int
    seconds: float


class DetectStage:
    """``setup() / process(msg) / tick(now) / close()`` around one backend."""

    def __init__(
        self,
        open_backend: Callable[[], Backend],
        config: DetectStageConfig,
        on_batch: Callable[[int, float], None] | None = None,
        on_drop: Callable[[DropMsg], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.open_backend = open_backend
        self.config = config
        self.on_batch = on_batch  # (batch size, seconds in gather + inference + mapping)
        self.on_drop = on_drop
        self.on_ready = on_ready  # after the model is loaded and has run once (warm)
        self.policy: BatchPolicy[ItemMsg] = BatchPolicy(
            config.max_batch, config.max_wait_ms, config.slots_per_camera, config.max_frame_age_ms
        )
        self.backend: Backend | None = None
        self.plan: BatchPlan | None = None  # what calibration chose (None: as configured)
        self._gather: HostGatherer | CudaGatherer | None = None
        self.batches = 0
        self.frames = 0
        # more model instances (`DetectStageConfig.instances`): lane 0 is self.backend and
        # self._gather; a lane is free or runs one batch in the pool; finished batches wait in
        # _done until tick() hands their messages to the runner (which owns the sockets)
        self._lanes: list[tuple[Backend, HostGatherer]] = []
        self._free: list[int] = []
        self._pool: ThreadPoolExecutor | None = None
        self._done: queue.SimpleQueue[tuple[int, Future[_LaneResult], list[ItemMsg]]] = (
            queue.SimpleQueue()
        )
        self._wake: Callable[[], None] = lambda: None

    def setup(self) -> None:
        self.backend = self.open_backend()
        if self.backend.max_batch < self.config.max_batch:
            raise ValueError(
                f"detect: max_batch {self.config.max_batch} exceeds the backend's "
                f"{self.backend.max_batch}"
            )
        hw = self.backend.info.input_hw
        device = _torch_cuda_device(self.backend)
        if device is not None:
            self._gather = CudaGatherer(self.config.max_batch, hw, device)
            log.info("detect: pinned-slab gather on %s (own CUDA stream)", device)
        else:
            self._gather = HostGatherer(self.config.max_batch, hw)
        if self.on_ready is not None:
            self._warm_up()
        if self.config.calibration is not None:
            self._calibrate(self.config.calibration)
        if self.config.instances > 1 and device is None:
            self._open_lanes(self.config.instances)
        if self.on_ready is not None:
            self.on_ready()

    def _warm_up(self) -> None:
        """One inference on a blank image: the first call of a runtime allocates and tunes
        (ONNX Runtime, cuDNN), which should not be a camera's first frame's latency."""
        assert self.backend is not None
        t0 = time.perf_counter()
        self.backend.infer(np.zeros((1, 3, *self.input_hw), np.uint8))
        log.info(
            "detect: model ready (warm-up inference %.0f ms)", 1e3 * (time.perf_counter() - t0)
        )

    def _calibrate(self, spec: CalibrationSpec) -> None:
        """Measure (or read from the cache) ms per image by batch size and batch only as far
        as it pays; the policy is rebuilt before any frame arrived."""
        assert self.backend is not None
        key = CalibrationKey.for_model(spec.weights, self.backend.name, spec.device,
                                       self.input_hw, spec.threads, self.config.max_batch,
                                       spec.arch)  # fmt: skip
        t0 = time.perf_counter()
        plan = calibrate(self.backend.infer, key, self.config.max_wait_ms, spec.cache_dir,
                         spec.gain, spec.clock)  # fmt: skip
        self.plan = plan
        self.policy = BatchPolicy(plan.max_batch, plan.max_wait_ms, self.config.slots_per_camera,
                                  self.config.max_frame_age_ms)  # fmt: skip
        log.info("detect: %s (%.1f s; batching.calibrate: false batches up to max_batch %d as "
                 "configured)", plan.describe(), time.perf_counter() - t0,
                 self.config.max_batch)  # fmt: skip

    def _open_lanes(self, n: int) -> None:
        """Copies 2..n of the model, each with its own gather buffer, and the pool they run in."""
        assert self.backend is not None and isinstance(self._gather, HostGatherer)
        hw = self.input_hw
        lanes = [(self.backend, self._gather)]
        for _ in range(n - 1):
            backend = self.open_backend()
            backend.infer(np.zeros((1, 3, *hw), np.uint8))  # warm, as lane 0 is
            lanes.append((backend, HostGatherer(self.policy.max_batch, hw)))
        self._lanes = lanes
        self._free = list(range(n))
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="detect-lane")
        log.info("detect: %d model instances run batches at once (model.instances)", n)

    def set_waker(self, wake: Callable[[], None]) -> None:
        """The runner's thread-safe nudge: called when a lane finished a batch, so the runner
        ticks at once instead of at its next poll."""
        self._wake = wake

    @property
    def input_hw(self) -> tuple[int, int]:
        assert self.backend is not None
        return self.backend.info.input_hw

    def next_deadline(self) -> float | None:
        """Monotonic time the next batch is due (None: nothing waiting); the runner ticks then.
        With lanes: now while a finished batch waits to be sent; no batch is due while every
        lane is busy (its frames keep waiting in the newest-wins slots)."""
        if not self._lanes:
            return self.policy.deadline()
        if not self._done.empty():
            return 0.0
        return self.policy.deadline() if self._free else None

    def process(self, msg: Message) -> Iterable[Message]:
        if isinstance(msg, ItemMsg):
            shape = tuple(msg.pixels.shape)
            if shape[-2:] != tuple(self.input_hw):
                raise FatalStageError(
                    f"detect: preprocess letterboxed to {shape[-2]}x{shape[-1]} but the model "
                    f"takes {self.input_hw[0]}x{self.input_hw[1]} (the weights file does not "
                    "say its input size; re-export it with edgestream export)"
                )
            msg.stage_ts["detect_in"] = time.time()  # the breakdown: hop vs batching wait
            realtime = msg.camera_id in self.config.realtime_cameras
            old = self.policy.add(msg.camera_id, msg, time.monotonic(), msg.capture_ts, realtime)
            out: list[Message] = [self._drop(i, "superseded") for i in old]
            if not realtime and len(self.policy) >= self.policy.max_batch:
                out += self._run_due(limit=1, wait=True)  # offline backlog: a full batch runs now
            return out
        if isinstance(msg, EndMsg):  # what waits (this camera's last frames among it) runs first
            return [*self.flush(), msg]
        if isinstance(msg, DropMsg):
            return [msg]
        log.warning("detect: ignoring unexpected %s", type(msg).__name__)
        return []

    def tick(self, now: float | None = None) -> Iterable[Message]:
        """The batch that is due, if one is: one batch per tick, so its results leave at once
        (the runner sends them, reads what arrived meanwhile, and ticks again). Running every
        due batch in one tick held the first batch's results until the last had run: at batch
        1 and 8 cameras, ~7 inference times between detect and track."""
        return self._run_due(limit=1)

    def flush(self) -> list[Message]:
        """Run everything still waiting (shutdown: what was queued is not lost)."""
        out: list[Message] = []
        while len(self.policy):
            taken = self.policy.take(time.monotonic(), time.time(), force=True)
            out += [self._drop(i, "superseded") for i in taken.superseded]
            if taken.batch:
                out += self._start(taken.batch)
        return out + self._finish(wait_all=True)

    def close(self) -> list[Message]:
        """Release the backend. Items still waiting are dropped (``shutdown``, counted) rather
        than run: on a CPU one more batch can take longer than the whole stop budget. Batches
        already running on other lanes finish and are sent (nothing is lost after detection
        has begun)."""
        out: list[Message] = self._finish(wait_all=True)
        out += [self._drop(i, "shutdown") for i in self.policy.drain()]
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for backend, gatherer in self._lanes[1:]:
            gatherer.close()
            backend.close()
        self._lanes, self._free = [], []
        if self._gather is not None:
            self._gather.close()
            self._gather = None
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        return out

    # ------------------------------------------------------------------------------ internals
    def _run_due(self, limit: int | None = None, wait: bool = False) -> list[Message]:
        """One lane: run the due batch (``limit`` of them) here. Lanes: what finished, then a
        due batch on each free lane; ``wait`` (an offline backlog): wait for a lane when none
        is free, so the backlog runs as fast as the lanes allow and never piles up."""
        if self._lanes:
            out = self._finish(wait_one=wait and not self._free)
            while self._free:
                taken = self.policy.take(time.monotonic(), time.time())
                out += [self._drop(i, "superseded") for i in taken.superseded]
                if not taken.batch:
                    break
                out += self._start(taken.batch)
            return out
        out = []
        runs = 0
        while limit is None or runs < limit:
            taken = self.policy.take(time.monotonic(), time.time())
            out += [self._drop(i, "superseded") for i in taken.superseded]
            if not taken.batch:
                return out
            out += self._run(taken.batch)
            runs += 1
        return out

    def _start(self, items: list[ItemMsg]) -> list[Message]:
        """One lane: run ``items`` now. Lanes: on a free lane (waiting for one if need be)."""
        if not self._lanes:
            return self._run(items)
        assert self._pool is not None
        out = [] if self._free else self._finish(wait_one=True)
        lane = self._free.pop()
        backend, gatherer = self._lanes[lane]
        future = self._pool.submit(self._infer, backend, gatherer, items)

        def done(f: Future[_LaneResult]) -> None:
            self._done.put((lane, f, items))
            self._wake()

        future.add_done_callback(done)
        return out

    def _finish(self, wait_one: bool = False, wait_all: bool = False) -> list[Message]:
        """The messages of the lanes' finished batches (waiting for one, or for all)."""
        out: list[Message] = []
        while self._lanes:
            busy = len(self._lanes) - len(self._free)
            block = busy > 0 and (wait_all or (wait_one and not out))
            try:
                lane, future, items = self._done.get(block=block)
            except queue.Empty:
                return out
            self._free.append(lane)
            try:
                result = future.result()
            except Exception:  # this batch only: its frames become tombstones (counted)
                log.exception("detect: a batch of %d frame(s) failed on lane %d", len(items), lane)
                out += [self._drop(i, "error") for i in items]
                continue
            out += self._account(result)
        return out

    def _run(self, items: list[ItemMsg]) -> list[Message]:
        assert self.backend is not None and self._gather is not None
        return self._account(self._infer(self.backend, self._gather, items))

    def _account(self, result: _LaneResult) -> list[Message]:
        """Count a finished batch (in the runner's thread: the callbacks are not thread-safe)."""
        out = [self._drop(i, "overwritten") for i in result.lost]
        if result.frames:
            self.batches += 1
            self.frames += result.frames
            if self.on_batch is not None:
                self.on_batch(result.frames, result.seconds)
        return out + result.messages

    def _infer(
        self, backend: Backend, gatherer: HostGatherer | CudaGatherer, items: list[ItemMsg]
    ) -> _LaneResult:
        """Gather, infer and build the detection messages of one batch (any thread: touches
        only its lane's backend and buffers)."""
        t0 = time.perf_counter()
        t_batch = time.time()
        g: Gathered = gatherer.gather(items)
        if not g.items:
            return _LaneResult([], g.lost, 0, 0.0)
        t_gathered = time.time()
        if isinstance(g.batch, np.ndarray):
            dets = backend.infer(g.batch)
        else:
            with self._gather_stream():
                dets = infer_device_batch(backend, g.batch)
        t_inferred = time.time()
        marks = {"detect_batch": t_batch, "detect_gather": t_gathered, "detect_infer": t_inferred}
        features: list[np.ndarray | None] = [None] * len(dets)
        if self.config.appearance:  # boxes are still in the letterboxed image's pixels here
            features = list(describe(g.batch, [det.boxes for det in dets]))
        now = time.time()
        out: list[Message] = []
        for item, det, feat in zip(g.items, dets, features, strict=True):
            boxes = item.letterbox.to_source(det.boxes)
            out.append(
                DetectionsMsg(
                    camera_id=item.camera_id,
                    frame_id=item.frame_id,
                    seq=item.seq,
                    capture_ts=item.capture_ts,
                    width=item.width,
                    height=item.height,
                    boxes=np.ascontiguousarray(boxes, np.float32),
                    scores=np.ascontiguousarray(det.scores, np.float32),
                    class_ids=np.ascontiguousarray(det.class_ids, np.int64),
                    stage_ts={**item.stage_ts, **marks, STAGE: now},
                    features=feat,
                )
            )
        return _LaneResult(out, g.lost, len(g.items), time.perf_counter() - t0)

    def _gather_stream(self) -> Any:
        import torch

        assert isinstance(self._gather, CudaGatherer)
        return torch.cuda.stream(self._gather.stream)

    def _drop(self, item: ItemMsg, reason: str) -> DropMsg:
        drop = DropMsg(item.camera_id, item.seq, STAGE, reason, frame_id=item.frame_id)
        if self.on_drop is not None:
            self.on_drop(drop)
        return drop
