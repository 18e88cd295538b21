"""Wire encoding of the pipeline messages: round trips, zero-copy decode, clear errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import zmq

from pipeline.messages import (
    WIRE_VERSION,
    DetectionsMsg,
    DropMsg,
    EndMsg,
    FrameMsg,
    ItemMsg,
    MessageError,
    ShmRef,
    TrackedMsg,
    decode,
    encode,
    with_stage_ts,
)
from pipeline.payloads import FrameResult, LetterboxMeta, TrackedObject, TrackLifecycleEvent

RNG = np.random.default_rng(0)


def frame(pixels: object = None, h: int = 48, w: int = 64) -> FrameMsg:
    if pixels is None:
        pixels = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return FrameMsg(
        camera_id="cam-1",
        frame_id=17,
        seq=5,
        capture_ts=1_700_000_000.25,
        capture_ts_source="rtcp",
        width=w,
        height=h,
        pixels=pixels,  # type: ignore[arg-type]
        stage_ts={"decode": 1_700_000_000.3},
    )


def detections(n: int = 3) -> DetectionsMsg:
    return DetectionsMsg(
        camera_id="cam-1",
        frame_id=17,
        seq=5,
        capture_ts=1_700_000_000.25,
        width=64,
        height=48,
        boxes=RNG.random((n, 4), dtype=np.float32) * 40,
        scores=RNG.random(n, dtype=np.float32),
        class_ids=RNG.integers(0, 80, n).astype(np.int64),
        stage_ts={"decode": 1.0, "detect": 2.0},
    )


def tracked() -> TrackedMsg:
    result = FrameResult(
        camera="cam-1",
        frame_id=17,
        capture_ts=1_700_000_000.25,
        width=64,
        height=48,
        objects=[
            TrackedObject(3, 0, "person", 0.9, (1.0, 2.0, 30.5, 40.25)),
            TrackedObject(None, 2, "car", 0.4, (0.0, 0.0, 1.0, 1.0)),
        ],
        stage_ts={"decode": 1.0, "track": 3.0},
        events=[TrackLifecycleEvent("new", 3, 0, "person", 10.0, 9.0, 10.0)],
    )
    return TrackedMsg.from_frame_result(result, seq=5)


def roundtrip(msg: object) -> object:
    return decode(encode(msg))  # type: ignore[arg-type]


def test_frame_inline_roundtrip() -> None:
    msg = frame()
    got = roundtrip(msg)
    assert isinstance(got, FrameMsg)
    assert got == msg  # pixels are compare=False: checked below
    assert np.array_equal(got.pixels, msg.pixels)  # type: ignore[arg-type]
    assert got.stage_ts == {"decode": 1_700_000_000.3}


def test_frame_shm_ref_roundtrip_has_no_buffer() -> None:
    ref = ShmRef("edgestream-p-1-frames", 3, 42, (48, 64, 3))
    parts = encode(frame(ref))
    assert len(parts) == 1
    got = decode(parts)
    assert isinstance(got, FrameMsg) and got.pixels == ref


def test_item_roundtrip_and_letterbox_meta() -> None:
    meta = LetterboxMeta(src_h=48, src_w=64, scale=9.9375, pad_top=82, pad_left=2)
    px = RNG.integers(0, 256, (3, 640, 640), dtype=np.uint8)
    item = ItemMsg.from_frame(frame(), meta, px, {"decode": 1.0, "preprocess": 2.0})
    got = roundtrip(item)
    assert isinstance(got, ItemMsg)
    assert got == item and got.letterbox == meta
    assert np.array_equal(got.pixels, px)  # type: ignore[arg-type]


def test_detections_roundtrip_dtypes_and_empty() -> None:
    for n in (0, 5):
        msg = detections(n)
        got = roundtrip(msg)
        assert isinstance(got, DetectionsMsg)
        assert got == msg
        for name in ("boxes", "scores", "class_ids"):
            a, b = getattr(got, name), getattr(msg, name)
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_detections_carry_appearance_features_or_none() -> None:
    msg = detections(3)
    assert msg.features is not None and msg.features.shape == (3, 0)  # None means none
    feats = np.arange(3 * 24, dtype=np.float32).reshape(3, 24)
    got = roundtrip(replace(msg, features=feats))
    assert isinstance(got, DetectionsMsg) and got.features is not None
    assert got.features.dtype == np.float32 and np.array_equal(got.features, feats)
    with pytest.raises(MessageError, match=r"features must be an \(N, D\) array, N = 3"):
        replace(msg, features=np.zeros((2, 24), np.float32))


def test_tracked_roundtrip_to_frame_result() -> None:
    msg = tracked()
    got = roundtrip(msg)
    assert got == msg
    assert isinstance(got, TrackedMsg)
    result = got.to_frame_result()
    assert result.objects[0].track_id == 3 and result.objects[1].track_id is None
    assert result.events[0].kind == "new"
    assert result.to_json_dict(5.0) == msg.to_frame_result().to_json_dict(5.0)


def test_control_messages_roundtrip() -> None:
    for msg in (DropMsg("c", 4, "detect", "too_old", 9), DropMsg("c", 4, "x", "y"), EndMsg("c", 7)):
        assert roundtrip(msg) == msg


def test_with_stage_ts_copies() -> None:
    msg = detections()
    out = with_stage_ts(msg, "track", 9.0)
    assert out.stage_ts == {"decode": 1.0, "detect": 2.0, "track": 9.0}  # type: ignore[union-attr]
    assert msg.stage_ts == {"decode": 1.0, "detect": 2.0}


def test_decode_is_zero_copy_over_zmq_frames() -> None:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://zc")
        b.connect("inproc://zc")
        msg = frame(h=480, w=640)
        a.send_multipart(encode(msg), copy=False)
        parts = b.recv_multipart(copy=False)
        got = decode(parts)
        assert isinstance(got, FrameMsg) and isinstance(got.pixels, np.ndarray)
        assert np.array_equal(got.pixels, msg.pixels)  # type: ignore[arg-type]
        assert not got.pixels.flags.writeable  # a view over the frame, not a copy
        assert np.shares_memory(got.pixels, np.frombuffer(parts[1].buffer, np.uint8))
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def test_non_contiguous_array_is_encoded_in_logical_order() -> None:
    big = RNG.integers(0, 256, (48, 128, 3), dtype=np.uint8)
    view = big[:, ::2]
    got = roundtrip(frame(view))
    assert np.array_equal(got.pixels, view)  # type: ignore[attr-defined]


def _header(parts: list) -> dict:
    return json.loads(bytes(parts[0]))


def _with_header(parts: list, **changes: object) -> list:
    h = _header(parts)
    h.update(changes)
    return [json.dumps(h).encode(), *parts[1:]]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda p: [], "empty message"),
        (lambda p: [b"\xff\xfe", *p[1:]], "not valid UTF-8 JSON"),
        (lambda p: [b"{not json", *p[1:]], "not valid UTF-8 JSON"),
        (lambda p: [b"[1, 2]", *p[1:]], "must be a JSON object"),
        (lambda p: _with_header(p, v=WIRE_VERSION + 1), "unsupported message version"),
        (lambda p: _with_header(p, type="bogus"), "unknown message type 'bogus'"),
        (lambda p: p[:1], "announces 1 buffer(s), message has 0"),
        (lambda p: [*p, b"extra"], "announces 1 buffer(s), message has 2"),
        (lambda p: [p[0], bytes(p[1])[:-1]], "needs"),
        (lambda p: _with_header(p, seq="5"), "frame.seq must be int"),
        (lambda p: _with_header(p, seq=True), "frame.seq must be int"),
        (lambda p: _with_header(p, capture_ts=None), "capture_ts must be float"),
        (lambda p: _with_header(p, stage_ts={"a": "x"}), "stage_ts must map"),
        (lambda p: _with_header(p, width=65), "pixels must be uint8 (48, 65, 3)"),
        (lambda p: _with_header(p, camera_id=""), "camera_id must be a non-empty"),
        (lambda p: _with_header(p, surprise=1), "unknown field(s) ['surprise']"),
        (
            lambda p: _with_header(
                p, buffers=[{"name": "pixels", "dtype": "complex128", "shape": [48, 64, 3]}]
            ),
            "unsupported dtype",
        ),
        (
            lambda p: _with_header(
                p, buffers=[{"name": "pixels", "dtype": "uint8", "shape": [48, -64, 3]}]
            ),
            "non-negative ints",
        ),
    ],
)
def test_malformed_frames_raise_clear_errors(mutate: object, error: str) -> None:
    parts = encode(frame())
    with pytest.raises(MessageError) as info:
        decode(mutate(parts))  # type: ignore[operator]
    assert error in str(info.value)


def test_missing_field_is_named() -> None:
    parts = encode(frame())
    h = _header(parts)
    del h["frame_id"]
    with pytest.raises(MessageError, match="missing field 'frame_id'"):
        decode([json.dumps(h).encode(), parts[1]])


def test_bad_tracked_object_and_bad_shm_descriptor() -> None:
    parts = encode(tracked())
    h = _header(parts)
    h["objects"][0][3] = 7.0  # score outside [0, 1]
    with pytest.raises(MessageError, match=r"tracked.objects\[0\]: score must be in"):
        decode([json.dumps(h).encode()])
    parts = encode(frame(ShmRef("r", 0, 2, (48, 64, 3))))
    h = _header(parts)
    h["pixels"]["shm"]["slot"] = -1
    with pytest.raises(MessageError, match="bad shm descriptor"):
        decode([json.dumps(h).encode()])


def test_detections_shapes_are_checked_when_built() -> None:
    with pytest.raises(MessageError, match="same length"):
        DetectionsMsg("c", 0, 0, 1.0, 4, 4, np.zeros((2, 4), np.float32),
                      np.zeros(3, np.float32), np.zeros(2, np.int64))  # fmt: skip
    with pytest.raises(MessageError, match="must be float32"):
        DetectionsMsg("c", 0, 0, 1.0, 4, 4, np.zeros((2, 4)),
                      np.zeros(2, np.float32), np.zeros(2, np.int64))  # fmt: skip


def test_encode_refuses_foreign_objects_and_nan() -> None:
    with pytest.raises(MessageError, match="not a pipeline message"):
        encode("hello")  # type: ignore[arg-type]
    bad = FrameMsg("c", 0, 0, float("nan"), "wallclock", 64, 48, frame().pixels)
    with pytest.raises(MessageError, match="not JSON-serialisable"):
        encode(bad)
