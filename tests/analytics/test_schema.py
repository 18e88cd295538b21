"""Zone and line events and counts on the wire: the codec, the reference dicts and the schemas
(1.1: optional ``zones`` / ``lines`` in detections, a new ``analytics_event`` document) agree;
a 1.0 document still validates; the JSON lines sink writes the events."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from pipeline.config.zones import LineConfig, ZoneConfig
from pipeline.payloads import AnalyticsEvent, FrameResult, TrackedObject
from stages.analytics import CameraRegions, ZoneAnalytics
from stages.sinks import schemas
from stages.sinks.codec import encode_frame
from stages.sinks.jsonl import JsonlSink, JsonlSinkConfig

T0 = 1_750_000_000.0


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = schemas.load(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def crossing_frames() -> list[FrameResult]:
    analytics = ZoneAnalytics(
        {
            "cam": CameraRegions(
                zones=(ZoneConfig(id="right", points=[(300, 0), (640, 0), (640, 480)]),),
                lines=(LineConfig(id="door", points=[(300, 480), (300, 0)]),),
            )
        }
    )
    out = []
    for i, x in enumerate(np.linspace(200, 500, 40)):
        box = (x - 10, 40.0, x + 10, 100.0)
        frame = FrameResult(
            "cam", i, T0 + i / 25, 640, 480, [TrackedObject(5, 0, "person", 0.9, box)]
        )
        out.append(analytics.process(frame))
    return out


def test_events_and_counts_encode_as_the_reference_and_validate() -> None:
    frames = crossing_frames()
    det_v = validator(schemas.DETECTIONS_V1)
    ev_v = validator(schemas.ANALYTICS_EVENT_V1)
    kinds = []
    for frame in frames:
        pending = encode_frame(frame)
        det = json.loads(pending[0].finalize(T0 + 100))
        ref = json.loads(json.dumps(frame.to_json_dict(T0 + 100)))
        assert det.keys() == ref.keys()
        assert det["lines"] == ref["lines"] and det["zones"] == ref["zones"]
        assert det["schema_version"] == "1.1"
        det_v.validate(det)
        docs = [json.loads(p.finalize(T0 + 100)) for p in pending[1:]]
        assert docs == json.loads(json.dumps(frame.analytics_json_dicts(T0 + 100)))
        for doc in docs:
            ev_v.validate(doc)
            kinds.append((doc["kind"], doc.get("line") or doc.get("zone"), doc.get("direction")))
    assert sorted(kinds) == [("line_cross", "door", "in"), ("zone_enter", "right", None)]
    last = json.loads(encode_frame(frames[-1])[0].finalize(T0 + 100))
    assert last["lines"] == {
        "door": {"in": 1, "out": 0, "by_class": {"person": {"in": 1, "out": 0}}}
    }
    assert last["zones"] == {"right": {"occupancy": 1, "by_class": {"person": 1}}}


def test_schema_rejects_malformed_events_and_accepts_1_0_documents() -> None:
    ev_v = validator(schemas.ANALYTICS_EVENT_V1)
    frame = FrameResult(
        "cam",
        3,
        T0,
        640,
        480,
        analytics_events=[
            AnalyticsEvent("zone_exit", "z", 1, 0, "person", T0, dwell_s=2.5, entered_ts=T0 - 2.5)
        ],
    )
    good = frame.analytics_json_dicts(T0 + 1)[0]
    ev_v.validate(good)
    assert good["msg_id"] == "cam:3:1:zone_exit:z"
    for bad in (
        {k: v for k, v in good.items() if k != "dwell_s"},  # zone_exit without its dwell
        {**good, "kind": "line_cross"},  # a crossing needs line and direction
        {**good, "dwell_s": -1},
        {**good, "kind": "zone_wander"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            ev_v.validate(bad)
    # a 1.0 detections document (no zones/lines) is still valid 1.x
    old = json.loads(encode_frame(FrameResult("cam", 1, T0, 640, 480))[0].finalize(T0 + 1))
    old["schema_version"] = "1.0"
    validator(schemas.DETECTIONS_V1).validate(old)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "line_cross"}, "direction"),
        ({"direction": "in"}, "direction"),
        ({"kind": "zone_exit"}, "dwell_s"),
        ({"region": "a:b"}, "region"),
        ({"kind": "teleport"}, "kind"),
    ],
)
def test_analytics_event_rejects_bad_fields(kwargs: dict, match: str) -> None:
    base = {
        "kind": "zone_enter",
        "region": "z",
        "track_id": 1,
        "class_id": 0,
        "class_name": "person",
        "event_ts": T0,
    }
    with pytest.raises(ValueError, match=match):
        AnalyticsEvent(**(base | kwargs))


def test_jsonl_sink_writes_the_events(tmp_path: Path) -> None:
    sink = JsonlSink(JsonlSinkConfig(path=tmp_path / "out.jsonl"))
    sink.setup()
    for frame in crossing_frames():
        sink.process(frame)
    sink.close()
    docs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    events = [d for d in docs if d["type"] == "analytics_event"]
    assert [e["kind"] for e in events] in (
        ["zone_enter", "line_cross"],
        ["line_cross", "zone_enter"],
    )
    assert sink.stats()["events_published"] == 2


def test_tail_prints_zone_and_line_events() -> None:
    from stages.sinks.cli import _row

    frame = crossing_frames()
    docs = [d for f in frame for d in f.analytics_json_dicts(T0 + 100)]
    rows = [_row(d) for d in docs]
    assert any("line_cross door in  track 5  person" in r for r in rows), rows
    assert any("zone_enter right" in r for r in rows), rows
