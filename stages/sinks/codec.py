"""Encoding of the sink documents to compact JSON bytes, in two steps.

A sink encodes a message when it receives it (so its exact size counts against the outage
buffer and the caller pays the JSON cost once) but only knows ``publish_ts`` when it writes it,
which may be seconds later after an outage. So `encode_frame` produces `Pending` messages whose
body stops just before the publish-time fields, and `Pending.finalize` appends them: a few
bytes of formatting per message instead of a second ``json.dumps``. The result is identical to
``json.dumps(frame.to_json_dict(publish_ts))`` up to number formatting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from stages.sinks.messages import (
    DETECTIONS_TYPE,
    TRACK_EVENT_TYPE,
    FrameResult,
    event_json_dict,
)


def dumps(doc: object) -> bytes:
    """Compact UTF-8 JSON, as every sink writes it."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Pending:
    """One encoded message waiting for its publish time.

    kind: ``detections`` or ``track_event`` (which stream it goes to).
    camera / frame_id / msg_id: identity, for keys, entry ids and deduplication.
    ts: the time its stream entry id derives from (capture time of the frame, unix s).
    """

    kind: str
    camera: str
    frame_id: int
    msg_id: str
    ts: float
    prefix: bytes

    @property
    def nbytes(self) -> int:
        """Buffer accounting: the body plus the ~60 bytes appended at publish time."""
        return len(self.prefix) + 64

    def finalize(self, publish_ts: float) -> bytes:
        if self.kind == DETECTIONS_TYPE:
            latency_ms = (publish_ts - self.ts) * 1e3
            return b'%s"publish":%.2f},"publish_ts":%.6f}' % (self.prefix, latency_ms, publish_ts)
        return b'%s,"publish_ts":%.6f}' % (self.prefix, publish_ts)


def encode_frame(frame: FrameResult) -> list[Pending]:
    """The detections message of ``frame`` followed by one message per track event."""
    doc = frame.to_json_dict(publish_ts=0.0)
    del doc["publish_ts"]
    del doc["latency_ms"]["publish"]
    body = dumps(doc)
    # body ends with '...,"latency_ms":{...}}': reopen the latency object for "publish".
    prefix = body[:-2] + (b"," if frame.stage_ts else b"")
    out = [
        Pending(
            DETECTIONS_TYPE, frame.camera, frame.frame_id, frame.msg_id, frame.capture_ts, prefix
        )
    ]
    for event in frame.events:
        edoc = event_json_dict(frame, event, publish_ts=0.0)
        del edoc["publish_ts"]
        out.append(
            Pending(
                TRACK_EVENT_TYPE,
                frame.camera,
                frame.frame_id,
                edoc["msg_id"],
                frame.capture_ts,
                dumps(edoc)[:-1],
            )
        )
    return out
