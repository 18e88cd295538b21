"""Per-camera decode configuration: one frozen dataclass, validated where it is built.

Every duration is in seconds (``*_s``) and every rate in frames per second. Defaults suit a
live IP camera on a LAN; tests shrink the timeouts and backoffs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pipeline.redact import redact_url

Transport = Literal["tcp", "udp"]
SourceKind = Literal["rtsp", "http", "file", "v4l2"]
ThreadType = Literal["auto", "frame", "slice"]


@dataclass(frozen=True)
class CameraConfig:
    """How to open, decode, pace and supervise one camera.

    Attributes:
        url: ``rtsp://[user:pass@]host[:port]/path``, ``http(s)://`` (MJPEG, HLS ``.m3u8``),
            a file path (or ``file://``), or a V4L2 device (``/dev/videoN`` or ``v4l2:///dev/videoN``).
            Credentials in it are redacted in every log line, error and stat.
        transport: RTSP lower transport. ``"tcp"`` (default) interleaves RTP in the RTSP TCP
            connection: no packet loss (so no smeared frames), works through NAT and firewalls,
            and a dead server shows up as a closed socket; it costs head-of-line latency when the
            link is congested. ``"udp"`` has the lowest latency on a clean LAN but loses packets
            under load (each loss corrupts a frame until the next key frame) and needs open UDP
            ports. Ignored for other sources.
        loop: file sources only: restart from the beginning at end of file instead of stopping.
        realtime: file sources only: pace frames to the file's own frame rate (simulates a live
            camera, drops are then possible downstream); ``False`` reads as fast as the decoder
            goes (offline processing: nothing is dropped, back-pressure comes from the sink).
        detect_fps: forward at most this many frames per second, spread evenly over the
            stream's own timeline (``None``: forward every decoded frame). Every frame is still
            decoded (inter-frame codecs need them); the ones not forwarded are counted as skipped.
        open_timeout_s: bound on connecting: DNS, TCP, RTSP handshake and probing up to the first
            packet. A host that accepts and never answers fails after this long.
        read_timeout_s: bound on one blocking read from the demuxer once streaming (PyAV's
            interrupt callback; FFmpeg's RTSP demuxer gives up after about twice this).
        stall_timeout_s: no decoded frame for this long while streaming → ``stalled``, detected by
            a watchdog independently of FFmpeg, then the connection is dropped and retried.
        first_frame_timeout_s: after connecting, how long packets may flow without a decodable
            frame before the connection is dropped. Longer than the stall timeout because a
            decoder can only start at a key frame, and cameras with long GOPs ("smart codec"
            modes) send one every 4-10 s; a stream that never yields a frame is corrupt.
        backoff_min_s, backoff_max_s: reconnect delay, doubling after each failed attempt from
            the minimum to the maximum, with ±``backoff_jitter`` relative jitter so that many
            cameras behind one failed switch do not reconnect in lock-step. Reset to the minimum
            once a connection has streamed for ``backoff_reset_s``.
        hwaccel: ``None`` (software), ``"cuda"`` or another FFmpeg hw device type (``"vaapi"``,
            ``"qsv"``...). When the device or codec is unavailable, decoding falls back to
            software once, with a warning, and stays there for this camera.
        decoder_threads: FFmpeg decoder threads for this camera; ``0`` lets FFmpeg choose (one per
            core). Default 1: a host runs many cameras, which already spreads decoding over the
            cores, and frame threading adds ``threads - 1`` frames of latency. Raise it for a few
            high-resolution cameras on a many-core host.
        decoder_thread_type: ``"auto"`` (frame + slice), ``"frame"`` or ``"slice"`` (no extra
            latency, parallel only if the encoder wrote several slices).
        options: extra FFmpeg demuxer options passed as they are (e.g. V4L2 ``video_size``,
            ``input_format``; HTTP ``headers``). They override the ones built here.
    """

    url: str
    transport: Transport = "tcp"
    loop: bool = False
    realtime: bool = True
    detect_fps: float | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    stall_timeout_s: float = 10.0
    first_frame_timeout_s: float = 20.0
    backoff_min_s: float = 1.0
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.2
    backoff_reset_s: float = 10.0
    hwaccel: str | None = None
    decoder_threads: int = 1
    decoder_thread_type: ThreadType = "auto"
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.url:
            problems.append("url is empty")
        if self.transport not in ("tcp", "udp"):
            problems.append(f"transport must be 'tcp' or 'udp', not {self.transport!r}")
        if self.detect_fps is not None and not self.detect_fps > 0:
            problems.append(f"detect_fps must be > 0 or None, not {self.detect_fps}")
        for name in (
            "open_timeout_s",
            "read_timeout_s",
            "stall_timeout_s",
            "first_frame_timeout_s",
            "backoff_min_s",
        ):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, not {getattr(self, name)}")
        if self.backoff_max_s < self.backoff_min_s:
            problems.append(
                f"backoff_max_s ({self.backoff_max_s}) must be >= backoff_min_s "
                f"({self.backoff_min_s})"
            )
        if not 0 <= self.backoff_jitter < 1:
            problems.append(f"backoff_jitter must be in [0, 1), not {self.backoff_jitter}")
        if self.decoder_threads < 0:
            problems.append(f"decoder_threads must be >= 0, not {self.decoder_threads}")
        if self.decoder_thread_type not in ("auto", "frame", "slice"):
            problems.append(f"decoder_thread_type {self.decoder_thread_type!r} is not valid")
        if problems:
            raise ValueError(f"camera {redact_url(self.url)}: " + "; ".join(problems))

    @property
    def kind(self) -> SourceKind:
        """Which opener serves this URL: rtsp, http (MJPEG/HLS), file or v4l2."""
        lower = self.url.lower()
        if lower.startswith(("rtsp://", "rtsps://")):
            return "rtsp"
        if lower.startswith(("http://", "https://")):
            return "http"
        if lower.startswith("v4l2://") or (lower.startswith("/dev/video")):
            return "v4l2"
        return "file"

    @property
    def is_live(self) -> bool:
        """Live sources are reconnected forever; files end (or loop)."""
        return self.kind != "file"

    @property
    def path(self) -> str:
        """The URL as FFmpeg wants it (``file://`` and ``v4l2://`` prefixes removed)."""
        if self.url.startswith("file://"):
            return self.url[len("file://") :]
        if self.url.startswith("v4l2://"):
            return self.url[len("v4l2://") :]
        return os.path.expanduser(self.url) if self.kind == "file" else self.url
