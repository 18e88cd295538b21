"""The output contract of the decode stage: frames, states, stats, and the sink protocol.

A :class:`~stages.decode.source.CameraSource` calls its :class:`FrameSink` from the camera's own
thread. The sink must return quickly (copy into a ring slot, enqueue, drop): a slow sink slows
only its own camera, and the camera's stall watchdog does not count time spent in the sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

import numpy as np

CaptureTsSource = Literal["rtcp", "wallclock", "file"]


class CameraState(str, Enum):
    """Where a camera is in its life cycle (see :mod:`stages.decode.source`)."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    BACKOFF = "backoff"
    STOPPED = "stopped"


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded picture, as handed to the next stage.

    Attributes:
        camera_id: the camera's id, as given to its source.
        frame_id: monotonic per camera across reconnects and loops: the index of the decoded
            frame, so gaps show frames skipped by ``detect_fps``.
        capture_ts: capture time, seconds since the Unix epoch (see ``capture_ts_source``).
        capture_ts_source: ``"rtcp"`` — the camera's clock, from RTCP sender reports (NTP time
            mapped to this frame's RTP timestamp); ``"wallclock"`` — this host's clock when the
            frame left the decoder (no sender report yet, or a source without one);
            ``"file"`` — the frame's media time on a wall clock: played live (``realtime``),
            the time it is due on the paced timeline (the first frame's release + its media
            time since); read offline, the time the source was opened plus its media time.
        pts: the frame's presentation timestamp in seconds on the stream's timeline (``None``
            when the stream has none). Restarts on reconnect; use ``frame_id`` for order.
        width, height: picture size in pixels.
        rgb: the picture, shape ``(height, width, 3)``, dtype uint8, RGB channel order.
    """

    camera_id: str
    frame_id: int
    capture_ts: float
    capture_ts_source: CaptureTsSource
    pts: float | None
    width: int
    height: int
    rgb: np.ndarray = field(repr=False, compare=False)


class FrameSink(Protocol):
    """Where a camera delivers frames and state changes (called from the camera's thread)."""

    def on_frame(self, frame: DecodedFrame) -> None: ...

    def on_state(self, camera_id: str, old: CameraState, new: CameraState, reason: str) -> None: ...


@dataclass(frozen=True)
class CameraStats:
    """A snapshot of one camera's counters (monotonic since the source was created).

    The runtime exports these as Prometheus counters/gauges, labelled by camera id.

    ``frames_skipped`` are decoded frames not forwarded because of ``detect_fps``;
    ``corrupt_packets`` are packets FFmpeg flagged corrupt or could not decode (skipped);
    ``corrupt_frames`` are frames the decoder output with concealed errors (still forwarded);
    ``reconnects`` counts connection attempts after the first; ``stalls`` entries into
    ``stalled``; ``transitions`` counts every ``"old->new"`` state change.
    """

    camera_id: str
    state: CameraState
    frames_decoded: int
    frames_forwarded: int
    frames_skipped: int
    corrupt_packets: int
    corrupt_frames: int
    sink_errors: int
    reconnects: int
    stalls: int
    transitions: dict[str, int]
    last_error: str | None
    last_frame_age_s: float | None
    hwaccel_active: bool
