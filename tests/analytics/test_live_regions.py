"""Zones and lines changed while the sink runs: a new config on the sink's control queue
replaces them (the wiring in `pipeline.procs`; the supervisor gives the sink that queue)."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from typing import Any

from pipeline.config import validate_config
from pipeline.payloads import FrameResult, TrackedObject
from pipeline.procs import ChildSpec, _sink_enrich
from pipeline.stats import Reporter

T0 = 1_750_000_000.0


def config(line_x: float | None) -> Any:
    cam: dict[str, Any] = {"id": "gate", "url": "rtsp://cam.local/s"}
    if line_x is not None:
        cam["lines"] = [{"id": "door", "points": [[line_x, 480], [line_x, 0]]}]
    return validate_config(
        {
            "version": 1,
            "cameras": [cam],
            "model": {"random_weights": True, "arch": "yolo_nas_n"},
            "sinks": {"jsonl": {"path": "/tmp/never-written.jsonl"}},
        },
        check_files=False,
    )


def walk(enrich: Any, start: int) -> list[str]:
    """A person walks from x 100 to 500: the line ids it crossed."""
    out = []
    for i in range(41):
        x = 100 + 10 * i
        box = (x - 10.0, 100.0, x + 10.0, 160.0)
        frame = FrameResult("gate", start + i, T0 + start + i, 640, 480,
                            [TrackedObject(start, 0, "person", 0.9, box)])  # fmt: skip
        out += [e.region for e in enrich(frame).analytics_events]
    return out


def test_a_new_config_replaces_the_zones_and_lines() -> None:
    control: Any = multiprocessing.get_context("spawn").Queue()
    spec = ChildSpec("sink", 0, "t", 0, control=control)
    stop = threading.Event()
    reporter = Reporter("sink", queue.Queue())
    try:
        enrich = _sink_enrich(spec, config(None), reporter, stop)
        assert enrich is not None  # a control queue: ready for zones added later
        assert walk(enrich, 1) == []
        control.put((1, config(300)))
        deadline = time.monotonic() + 10
        while reporter.snapshot().get("control_generation") != 1:
            assert time.monotonic() < deadline, "the sink never applied generation 1"
            time.sleep(0.05)
        assert walk(enrich, 100) == ["door"]
    finally:
        stop.set()
