"""The JSON-lines sink: same documents as Redis, one per line, in order, nothing dropped."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import make_frame

from stages.sinks.jsonl import JsonlSink, JsonlSinkConfig


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_writes_schema_valid_lines_in_order(tmp_path: Path, validators: dict) -> None:
    out = tmp_path / "run" / "results.jsonl"
    sink = JsonlSink(JsonlSinkConfig(path=out))
    sink.setup()
    t0 = time.time() - 1
    for i in range(30):
        for cam in ("a", "b"):
            sink.process(make_frame(cam, i, t0 + i / 30, n_objects=i % 3, events=i % 10 == 0))
    sink.close()
    docs = _lines(out)
    assert len(docs) == 60 + 6
    for doc in docs:
        validators[doc["type"]].validate(doc)
    dets = [(d["camera"], d["frame_id"]) for d in docs if d["type"] == "detections"]
    assert dets == [(cam, i) for i in range(30) for cam in ("a", "b")]
    events = [d for d in docs if d["type"] == "track_event"]
    assert [e["frame_id"] for e in events] == [0, 0, 10, 10, 20, 20]
    assert sink.stats() == {"published": 60, "events_published": 6}


def test_per_camera_files_append_and_no_events(tmp_path: Path) -> None:
    cfg = JsonlSinkConfig(path=tmp_path / "{camera}.jsonl", events=False, append=True)
    t0 = time.time()
    for run in range(2):
        sink = JsonlSink(cfg)
        sink.setup()
        for cam in ("front/door", "yard"):
            sink.process(make_frame(cam, run, t0 + run, events=True))
        sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front_door.jsonl", "yard.jsonl"]
    docs = _lines(tmp_path / "front_door.jsonl")
    assert [(d["camera"], d["frame_id"], d["type"]) for d in docs] == [
        ("front/door", 0, "detections"),
        ("front/door", 1, "detections"),
    ]
