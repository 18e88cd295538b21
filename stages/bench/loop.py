"""The baseline: a careful single-process loop, what one writes without a framework.

    python -m stages.bench.loop CONFIG.yaml COUNTERS.json

It reads the same config as ``edgestream run -c CONFIG.yaml`` (cameras, model, tracker, sinks)
and does the same work in one process:

- one PyAV decode thread per camera: a file is played in real time (and looped), frames are
  sampled at the camera's ``detect_fps`` (`stages.decode.pacing.RatePacer`, as decode does),
  and only the newest sampled frame is kept (a frame not yet taken is replaced: ``superseded``);
  its capture time is decode's: the sender's RTCP clock on RTSP, a file's due time on its
  paced timeline (`stages.decode.pacing.RealtimeClock`), else receive wall clock;
- one inference loop: the cameras' newest frames in round robin (one at a time on the CPU,
  where batching buys nothing; up to ``batching.max_batch`` of them per call on a GPU), through
  `stages.detect.detector.Detector` on the backend the pipeline would open
  (`pipeline.procs.open_backend_from`);
- the same tracker (`stages.track.tracker.Tracker`, one per camera, the config's settings) and
  the same published document (`pipeline.payloads.FrameResult`), written by XADD to Redis or
  to ``<camera>.jsonl`` like the sinks do.

It prints ``READY`` once the model is loaded and the cameras are opening, ``FIRST <unix ts>``
at its first published frame, and on SIGTERM/SIGINT stops, counts the frames still waiting
(``shutdown``) and writes COUNTERS.json in the shape of ``Pipeline.stats()["cameras"]``
(``sent``, ``published``, ``dropped`` by ``stage/reason``).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import PipelineConfig, load_config
from pipeline.payloads import FrameResult

log = logging.getLogger("edgestream.bench.loop")


@dataclass
class Slot:
    """One camera's newest frame (None: taken) and its counters."""

    frame: np.ndarray | None = None
    capture_ts: float = 0.0
    decoded_ts: float = 0.0  # when decode handed it over (the "decode" stage time)
    frame_id: int = -1
    offered: int = 0
    superseded: int = 0
    published: int = 0


class Loop:
    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.cond = threading.Condition()
        self.slots = {c.id: Slot() for c in cfg.cameras}
        self.first_publish: float | None = None

    # ------------------------------------------------------------------ decode, per camera
    def decode(self, cam: str) -> None:
        import av

        from pipeline.config import camera_url_with_password
        from pipeline.procs import camera_config
        from stages.decode.opener import configure_video_stream
        from stages.decode.pacing import RatePacer, RealtimeClock
        from stages.decode.timestamps import RtcpClock

        settings = self.cfg.camera(cam)
        url = camera_url_with_password(settings)
        pacer = RatePacer(settings.detect_fps)
        slot = self.slots[cam]
        while not self.stop.is_set():
            # capture time as the pipeline takes it: the sender's RTCP clock on RTSP, else ours
            rtcp = RtcpClock(name=cam) if url.startswith("rtsp") else None
            try:
                with av.open(url, timeout=(10.0, 10.0)) as container:
                    # decoder threads as the pipeline's decode sets them (1 by default: frame
                    # threading adds a frame of latency per extra thread)
                    stream = configure_video_stream(container, camera_config(cam, self.cfg))
                    # a file played live: paced, and captured when due, as decode does
                    clock = RealtimeClock(self.stop)
                    for packet in container.demux(stream):
                        if rtcp is not None:
                            rtcp.observe_packet(packet)
                        try:
                            frames = packet.decode()
                        except av.error.InvalidDataError:  # a corrupt packet: skip it
                            continue
                        for frame in frames:
                            if self.stop.is_set():
                                return
                            t = float(frame.time or 0.0)
                            if settings.loop:  # a file played as a live camera
                                clock.wait_until(t)
                                if self.stop.is_set():
                                    return
                            if not pacer.should_forward(t):
                                continue
                            rgb = frame.to_ndarray(format="rgb24")
                            if rtcp is not None:
                                ts = rtcp.capture_time(t)[0]
                            else:
                                ts = clock.capture_time(t) if settings.loop else time.time()
                            with self.cond:
                                if slot.frame is not None:
                                    slot.superseded += 1
                                slot.frame, slot.capture_ts = rgb, ts
                                slot.decoded_ts = time.time()
                                slot.frame_id += 1
                                slot.offered += 1
                                self.cond.notify()
            except av.error.FFmpegError as exc:
                log.warning("%s: %s; reopening in 1 s", cam, exc)
                self.stop.wait(1.0)
            pacer.reset()

    # ------------------------------------------------------------------ inference loop
    def infer(self, detector: Any, batch: int, write: Any) -> None:
        from pipeline.procs import tracker_config
        from stages.sinks.messages import tracked_objects
        from stages.track.tracker import Tracker

        rates = {
            c.id: c.frame_rate_hz or c.detect_fps or 25.0 for c in self.cfg.effective_cameras()
        }
        trackers = {
            cam: Tracker(tracker_config(self.cfg), frame_rate_hz=rates[cam]) for cam in self.slots
        }
        names = detector.class_names
        appearance = self.cfg.tracker.appearance_weight > 0
        cams, turn = list(self.slots), 0
        while not self.stop.is_set():
            with self.cond:
                # round robin from the camera after the last one served: cameras whose frames
                # arrive together would otherwise be served in the same order every time, and
                # the last ones superseded every time
                order = cams[turn:] + cams[:turn]
                ready = [cam for cam in order if self.slots[cam].frame is not None]
                if not ready:
                    self.cond.wait(0.1)
                    continue
                turn = (cams.index(ready[:batch][-1]) + 1) % len(cams)
                taken: list[tuple[str, int, float, float, np.ndarray]] = []
                for cam in ready[:batch]:
                    s = self.slots[cam]
                    assert s.frame is not None
                    taken.append((cam, s.frame_id, s.capture_ts, s.decoded_ts, s.frame))
                    s.frame = None
            images = [f for *_, f in taken]
            if appearance:
                results = detector.detect_with_features(images)
            else:
                results = [(d, None) for d in detector.detect(images)]
            t_detect = time.time()
            for (cam, fid, ts, decoded, img), (det, feats) in zip(taken, results, strict=True):
                out = trackers[cam].update(det.boxes, det.scores, det.class_ids, ts, features=feats)
                # the published objects as the track stage builds them (one definition)
                objects = tracked_objects(det.boxes, det.scores, det.class_ids, out.tracks, names)
                h, w = img.shape[:2]
                result = FrameResult(
                    cam,
                    fid,
                    ts,
                    w,
                    h,
                    objects,
                    stage_ts={"decode": decoded, "detect": t_detect, "track": time.time()},
                )
                write(cam, result)
                self.slots[cam].published += 1
                if self.first_publish is None:
                    self.first_publish = time.time()
                    print(f"FIRST {self.first_publish:.6f}", flush=True)

    def counters(self) -> dict[str, Any]:
        with self.cond:
            out = {}
            for cam, s in self.slots.items():
                waiting = int(s.frame is not None)
                out[cam] = {
                    "sent": s.offered,
                    "published": s.published,
                    "dropped": {"loop/superseded": s.superseded, "loop/shutdown": waiting},
                }
            return out


def open_writer(cfg: PipelineConfig) -> tuple[Any, Any]:
    """``(write(camera, FrameResult), close())`` for the config's Redis or JSON lines sink."""
    from stages.sinks.codec import dumps

    if cfg.sinks.redis is not None:
        import redis

        r = cfg.sinks.redis
        client = redis.Redis.from_url(r.url)
        client.ping()

        def xadd(cam: str, result: FrameResult) -> None:
            body = dumps(result.to_json_dict(time.time()))
            client.xadd(
                r.key_template.format(camera=cam), {"data": body}, maxlen=r.maxlen, approximate=True
            )

        return xadd, client.close
    if cfg.sinks.jsonl is None:
        raise ValueError("the loop needs sinks.redis or sinks.jsonl in the config")
    template = str(cfg.sinks.jsonl.path)
    files: dict[str, Any] = {}

    def write(cam: str, result: FrameResult) -> None:
        f = files.get(cam)
        if f is None:
            path = Path(template.format(camera=cam))
            path.parent.mkdir(parents=True, exist_ok=True)
            f = files[cam] = path.open("wb")
        f.write(dumps(result.to_json_dict(time.time())) + b"\n")

    def close() -> None:
        for f in files.values():
            f.close()

    return write, close


def run(cfg: PipelineConfig, counters_path: Path) -> int:
    from pipeline.procs import open_backend_from
    from stages.detect.detector import Detector

    loop = Loop(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: loop.stop.set())
    backend = open_backend_from(cfg)
    detector = Detector(backend, cfg.model.class_names)
    detector.detect([np.zeros((64, 64, 3), np.uint8)])  # warm-up, as the detect stage does
    on_gpu = str(cfg.model.device).startswith("cuda")
    batch = min(cfg.batching.max_batch, backend.max_batch) if on_gpu else 1
    write, close = open_writer(cfg)
    threads = [
        threading.Thread(target=loop.decode, args=(cam,), name=f"decode-{cam}", daemon=True)
        for cam in loop.slots
    ]
    for t in threads:
        t.start()
    print("READY", flush=True)
    try:
        loop.infer(detector, batch, write)
    finally:
        loop.stop.set()
        for t in threads:
            t.join(5.0)
        close()
        detector.close()
        counters_path.write_text(json.dumps(loop.counters()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m stages.bench.loop CONFIG.yaml COUNTERS.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="loop: %(levelname)s %(message)s")
    return run(load_config(args[0]), Path(args[1]))


if __name__ == "__main__":
    sys.exit(main())
