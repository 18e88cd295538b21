"""Messages, encoding, schemas, buffer and config: no Redis needed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import make_frame

from pipeline.payloads import FrameResult, TrackedObject
from stages.sinks.codec import encode_frame
from stages.sinks.messages import track_events_from
from stages.sinks.redis.buffer import EntryIds, Item, OutageBuffer
from stages.sinks.redis.config import RedisSinkConfig
from stages.sinks.redis.connection import Redactor, read_password, redact_url
from stages.track.types import TrackEvent, TrackEventKind

T0 = 1_750_000_000.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"camera": "cam 1"}, "spaces"),
        ({"camera": ""}, "non-empty"),
        ({"frame_id": -1}, "frame_id"),
        ({"capture_ts": math.nan}, "capture_ts"),
        ({"capture_ts": 0.0}, "capture_ts"),
        ({"width": 0}, "width"),
    ],
)
def test_frame_result_rejects_bad_fields(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {
        "camera": "cam1",
        "frame_id": 1,
        "capture_ts": T0,
        "width": 640,
        "height": 480,
    }
    with pytest.raises(ValueError, match=match):
        FrameResult(**(base | kwargs))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score": 1.5}, "score"),
        ({"box": (10, 10, 5, 20)}, "x2 >= x1"),
        ({"box": (0, 0, math.inf, 1)}, "finite"),
        ({"class_id": -1}, "class_id"),
        ({"track_id": -3}, "track_id"),
    ],
)
def test_tracked_object_rejects_bad_fields(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {
        "track_id": 1,
        "class_id": 0,
        "class_name": "person",
        "score": 0.5,
        "box": (0, 0, 1, 1),
    }
    with pytest.raises(ValueError, match=match):
        TrackedObject(**(base | kwargs))


@pytest.mark.parametrize("stage_ts", [True, False])
def test_encoding_matches_json_dict_and_schema(stage_ts: bool, validators: dict) -> None:
    frame = make_frame("cam-1", 7, T0, n_objects=5, events=True)
    if not stage_ts:
        frame = FrameResult("cam-1", 7, T0, 1920, 1080, frame.objects, {}, frame.events)
    pending = encode_frame(frame)
    assert [p.kind for p in pending] == ["detections", "track_event"]
    publish_ts = T0 + 0.1234
    det = json.loads(pending[0].finalize(publish_ts))
    expected = frame.to_json_dict(publish_ts)
    assert det.keys() == expected.keys()
    assert det["latency_ms"] == pytest.approx(expected["latency_ms"], abs=0.01)
    assert det["publish_ts"] == pytest.approx(publish_ts, abs=1e-6)
    assert {k: v for k, v in det.items() if k not in ("latency_ms", "publish_ts")} == {
        k: v for k, v in expected.items() if k not in ("latency_ms", "publish_ts")
    }
    assert det["msg_id"] == "cam-1:7"
    assert det["objects"][1]["box_norm"] == pytest.approx(
        [10 / 1920, 20 / 1080, 60.5 / 1920, 120.25 / 1080], abs=1e-5
    )
    validators["detections"].validate(det)
    event = json.loads(pending[1].finalize(publish_ts))
    assert event == json.loads(json.dumps(frame.event_json_dicts(publish_ts)[0]))
    assert event["msg_id"] == "cam-1:7:8:new"
    validators["track_event"].validate(event)


def test_schema_rejects_what_consumers_must_not_see(validators: dict) -> None:
    doc = json.loads(encode_frame(make_frame("c", 1, T0))[0].finalize(T0 + 1))
    validators["detections"].validate(doc)
    for bad in (
        {**doc, "schema_version": "2.0"},
        {**doc, "objects": [{**doc["objects"][0], "box": [1, 2, 3]}]},
        {k: v for k, v in doc.items() if k != "frame_id"},
    ):
        assert not validators["detections"].is_valid(bad)


def test_untracked_objects_and_unicode_names(validators: dict) -> None:
    obj = TrackedObject(None, 3, "café ☕", 0.25, (1, 2, 3, 4))
    frame = FrameResult("cam1", 0, T0, 100, 100, [obj])
    doc = json.loads(encode_frame(frame)[0].finalize(T0 + 0.05))
    assert doc["objects"][0]["track_id"] is None
    assert doc["objects"][0]["class_name"] == "café ☕"
    assert doc["latency_ms"] == {"publish": pytest.approx(50.0, abs=0.01)}
    validators["detections"].validate(doc)


def test_track_events_from_tracker_events() -> None:
    events = [
        TrackEvent(TrackEventKind.NEW, 4, 2, T0 + 1, T0, T0 + 1),
        TrackEvent(TrackEventKind.REMOVED, 5, 99, T0 + 1, T0 - 5, T0 - 2),
    ]
    out = track_events_from(events, ["person", "bicycle", "car"])
    assert [(e.kind, e.track_id, e.class_name) for e in out] == [
        ("new", 4, "car"),
        ("removed", 5, "class_99"),
    ]
    assert out[1].first_seen_ts == T0 - 5 and out[1].last_seen_ts == T0 - 2


def _item(key: str, ms: int, seq: int, nbytes: int = 100) -> Item:
    frame = make_frame("cam1", seq, T0)
    return Item(encode_frame(frame)[0], key, ms, seq, 0.0, nbytes=nbytes)


def test_buffer_bounds_drop_oldest_fresh_never_in_flight_or_retried() -> None:
    buf = OutageBuffer(max_messages=4, max_bytes=10_000)
    items = [_item("k", 1, i) for i in range(8)]
    for it in items[:4]:
        assert buf.put(it) == []
    batch = buf.take(2)  # items 0, 1 in flight
    assert buf.put(items[4]) == [items[2]]
    assert buf.put(items[5]) == [items[3]]
    assert buf.messages == 4
    buf.requeue(batch)  # the flush failed: 0, 1 may have been written; they must not be dropped
    assert buf.put(items[6]) == [items[4]]
    assert buf.put(items[7]) == [items[5]]
    assert [i.seq_hint for i in buf.take(10)] == [0, 1, 6, 7]
    assert buf.nbytes == 400

    full = OutageBuffer(max_messages=2, max_bytes=10_000)
    full.put(items[0])
    full.put(items[1])
    full.requeue(full.take(2))
    assert full.put(items[2]) == [items[2]]  # only unknown-fate entries: the new one goes
    assert full.messages == 2


def test_buffer_bounds_bytes() -> None:
    buf = OutageBuffer(max_messages=100, max_bytes=250)
    dropped = [buf.put(_item("k", 1, i, nbytes=100)) for i in range(3)]
    assert dropped[2] and dropped[2][0].seq_hint == 0
    assert buf.nbytes == 200 and len(buf.queue) == 2


def test_entry_ids_follow_capture_time_and_clamp_regressions() -> None:
    ids = EntryIds()
    a, b, c = _item("k", 1000, 5), _item("k", 1033, 6), _item("k", 900, 7)
    other = _item("k2", 10, 0)
    for it in (a, b, c, other):
        ids.assign(it)
    assert (a.entry_id, b.entry_id, c.entry_id) == ("1000-5", "1033-6", "1033-7")
    assert other.entry_id == "10-0"
    assert ids.clamped == 1


def test_config_validation(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not read here\n")
    with pytest.raises(ValueError, match="rediss://"):
        RedisSinkConfig(url="redis://h", tls_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValueError, match="file not found"):  # checked when the config is made
        RedisSinkConfig(url="rediss://h", tls_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="camera"):
        RedisSinkConfig(key_template="detections")
    with pytest.raises(ValueError, match="url"):
        RedisSinkConfig(url="http://h")
    with pytest.raises(ValueError, match="max_buffer_bytes"):
        RedisSinkConfig(max_buffer_bytes=0)


def test_passwords_from_env_and_file_and_redaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ES_TEST_PW", "from-env")
    (tmp_path / "pw").write_text("from-file\n")
    assert read_password(RedisSinkConfig(password_env="ES_TEST_PW")) == "from-env"
    cfg = RedisSinkConfig(password_env="ES_TEST_PW", password_file=tmp_path / "pw")
    assert read_password(cfg) == "from-file"
    assert read_password(RedisSinkConfig(url="redis://u:p%40ss@h:1/0")) == "p@ss"
    with pytest.raises(ValueError, match="ES_TEST_MISSING"):
        read_password(RedisSinkConfig(password_env="ES_TEST_MISSING"))
    with pytest.raises(ValueError, match="password_file"):
        read_password(RedisSinkConfig(password_file=tmp_path / "nope"))
    assert redact_url("rediss://user:hunter2@host:6380/0") == "rediss://user:***@host:6380/0"
    assert "hunter2" not in Redactor(("hunter2",))("auth hunter2 failed")


def test_frame_result_from_a_real_tracker(validators: dict) -> None:
    import numpy as np

    from stages.sinks.messages import tracked_objects
    from stages.track.config import TrackerConfig
    from stages.track.tracker import Tracker

    tracker = Tracker(TrackerConfig(), frame_rate_hz=30)
    boxes = np.array([[10, 10, 50, 80], [100, 100, 150, 200]], np.float32)
    events = []
    scores, class_ids = np.array([0.9, 0.8], np.float32), np.array([0, 2])
    for i in range(5):
        out = tracker.update(boxes + i, scores, class_ids, T0 + i)
        events += out.events
    frame = FrameResult(
        "cam1",
        4,
        T0 + 4,
        640,
        480,
        tracked_objects(boxes + 4, scores, class_ids, out.tracks, ["person", "bicycle", "car"]),
        events=track_events_from(events, ["person", "bicycle", "car"]),
    )
    assert sorted((o.track_id, o.class_name) for o in frame.objects) == [(1, "person"), (2, "car")]
    assert {(e.kind, e.track_id) for e in frame.events} == {("new", 1), ("new", 2)}
    for pending in encode_frame(frame):
        doc = json.loads(pending.finalize(T0 + 5))
        validators[doc["type"]].validate(doc)


def test_box_norm_is_clipped_to_the_unit_range(validators: dict) -> None:
    # a tracked (Kalman) box may reach past the image edge: box keeps its pixels, box_norm
    # stays within the schema's 0..1 (it reached 1.00364 before)
    obj = TrackedObject(3, 0, "car", 0.9, (-12.0, 5.0, 1927.0, 1083.9))
    frame = FrameResult("c", 1, T0, 1920, 1080, (obj,), {"decode": T0})
    want = [0.0, 5 / 1080, 1.0, 1.0]
    for doc in (
        json.loads(encode_frame(frame)[0].finalize(T0 + 0.1)),
        json.loads(json.dumps(frame.to_json_dict(T0 + 0.1))),
    ):
        (o,) = doc["objects"]
        assert o["box"] == [-12.0, 5.0, 1927.0, 1083.9]
        assert o["box_norm"] == pytest.approx(want, abs=1e-5)
        validators["detections"].validate(doc)
    bad = json.loads(encode_frame(frame)[0].finalize(T0 + 0.1))
    bad["objects"][0]["box_norm"][2] = 1.00364
    with pytest.raises(jsonschema.ValidationError):
        validators["detections"].validate(bad)
