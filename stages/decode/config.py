"""Per-camera decode settings: one pydantic model, the single definition of each setting.

`DecodeSettings` is what ``camera_defaults`` (and any camera entry) of the pipeline config
holds for decoding, as it is; `CameraConfig` is one source as this stage opens it (the url with
its password inserted, and the live policy). Schema only: loading a config does not load the
decoder.

Every duration is in seconds (``*_s``) and every rate in frames per second. Defaults suit a
live IP camera on a LAN; tests shrink the timeouts and backoffs.
"""

from __future__ import annotations

import os
import zlib
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from pipeline.config.base import EnvStr, StrictModel

Transport = Literal["tcp", "udp"]
SourceKind = Literal["rtsp", "http", "file", "v4l2"]
ThreadType = Literal["auto", "frame", "slice"]


def url_kind(url: str) -> SourceKind:
    """Which opener serves ``url``: rtsp[s]://, http(s)://, a V4L2 device, else a file."""
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lower.startswith(("http://", "https://")):
        return "http"
    if lower.startswith("v4l2://") or lower.startswith("/dev/video"):
        return "v4l2"
    return "file"


class DecodeSettings(StrictModel):
    """How one camera is read and decoded (``camera_defaults``; any camera may override)."""

    transport: Literal["tcp", "udp"] = Field(
        default="tcp",
        description="RTSP lower transport: tcp (no packet loss, works through NAT; default) or "
        "udp (lowest latency on a clean LAN, loses packets under load). Ignored for other sources.",
    )
    loop: bool = Field(
        default=False, description="File sources only: restart at end of file instead of ending."
    )
    detect_fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Forward at most this many frames per second to detection (frames/s, "
        "0 < fps <= 1000), spread over the stream's timeline; null forwards every frame.",
    )
    open_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Bound on connecting up to the first packet (s, 0 < t <= 600).",
    )
    read_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Bound on one blocking demuxer read (s, 0 < t <= 600).",
    )
    stall_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="No decoded frame for this long while streaming marks the camera stalled "
        "and reconnects (s, 0 < t <= 600).",
    )
    first_frame_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="After connecting, how long packets may flow without a decodable frame "
        "(s, 0 < t <= 600); longer than the stall timeout for long-GOP cameras.",
    )
    backoff_min_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="First reconnect delay (s, 0 < t <= 3600); doubles per failure.",
    )
    backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest reconnect delay (s, 0 < t <= 3600, >= backoff_min_s).",
    )
    backoff_jitter: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Relative random jitter on each reconnect delay (fraction, 0 <= j < 1), so "
        "cameras behind one failed switch do not reconnect in lock-step.",
    )
    backoff_reset_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Streaming this long resets the reconnect delay to the minimum (s, 0..3600).",
    )
    hwaccel: EnvStr | None = Field(
        default=None,
        description="FFmpeg hardware decoder device type (cuda, vaapi, qsv...); null decodes in "
        "software. Falls back to software once, with a warning, when unavailable.",
    )
    decoder_threads: int = Field(
        default=1,
        ge=0,
        le=64,
        description="FFmpeg decoder threads per camera (count, 0..64; 0 lets FFmpeg choose). "
        "1 suits many cameras per host; each extra frame thread adds a frame of latency.",
    )
    decoder_thread_type: Literal["auto", "frame", "slice"] = Field(
        default="auto",
        description="FFmpeg threading: auto (frame + slice), frame or slice (no latency).",
    )
    options: dict[str, EnvStr] = Field(
        default_factory=dict,
        description="Extra FFmpeg demuxer options passed as they are (strings); a camera's "
        "options are merged over these key by key.",
    )

    @field_validator("backoff_max_s")
    @classmethod
    def _backoff_order(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("backoff_min_s")
        if low is not None and value < low:
            raise ValueError(f"must be >= backoff_min_s ({low})")
        return value


class CameraConfig(DecodeSettings):
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

    url: str = Field(..., min_length=1, description="The url to open (may hold a password).")
    realtime: bool = Field(
        default=True, description="Live policy: drop the oldest (true) or block (false)."
    )

    def __init__(self, url: str | None = None, /, **data: Any) -> None:
        if url is not None:
            data["url"] = url
        super().__init__(**data)

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


CAMERAS_PER_DECODE_PROCESS = 16


class DecodeStageConfig(StrictModel):
    """How many decode processes run the cameras."""

    processes: int | Literal["auto"] = Field(
        default="auto",
        description="Decode processes (1..16, or auto: one per 16 cameras). Each camera runs in "
        "one of them (chosen by a hash of its id, so a camera never moves while others are "
        "added or removed). One process runs a thread per camera, and their per-frame Python "
        "work shares one GIL: past ~16 busy cameras it stops keeping up, and then collapses "
        "(here, 24 cameras at 100 frames/s: 735 of 2400 frames/s leave one process, all of them "
        "leave two). Needs the frames edge on auto (ipc) when more than 1.",
    )

    shed: bool = Field(
        default=True,
        description="Shed at the source: a live camera whose frames detect keeps dropping as "
        "superseded (over 20 % of what decode sends) gets its forwarded rate capped near what "
        "detect takes; the rest are counted as decode/shed and cost no conversion, copy or "
        "letterbox. false: decode forwards every frame the camera's detect_fps allows.",
    )

    @field_validator("processes")
    @classmethod
    def _range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 16:
            raise ValueError("must be 1..16 or auto")
        return v

    def resolve(self, cameras: int) -> int:
        """The number of decode processes for ``cameras`` cameras."""
        if isinstance(self.processes, int):
            return self.processes
        return min(16, -(-max(1, cameras) // CAMERAS_PER_DECODE_PROCESS))


def decode_shard(camera_id: str, shards: int) -> int:
    """Which of ``shards`` decode processes runs ``camera_id``: a stable hash of the id, so a
    camera stays where it is when others are added or removed (CRC-32: ids that differ in a
    number spread evenly)."""
    return zlib.crc32(camera_id.encode()) % shards if shards > 1 else 0
