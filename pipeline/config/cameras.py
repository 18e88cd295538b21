"""Camera settings: `camera_defaults`, one entry of `cameras`, and their merge."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    model_validator,
)

from pipeline.config.base import (
    CAMERA_ID_PATTERN,
    ConfigProblems,
    EnvStr,
    ExistingFile,
    StrictModel,
    _check_files,
    _expand,
    _resolve_path,
    read_secret_file,
)
from pipeline.config.zones import Lines, Zones
from pipeline.redact import redact_url


class CameraDefaults(StrictModel):
    """Decode settings shared by every camera (`stages.decode.CameraConfig`, less the url).

    Any camera entry may set any of these again for itself.
    """

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
    frame_rate_hz: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="The camera's real frame rate (frames/s, 0 < f <= 1000), used by the tracker "
        "to turn lost_track_seconds into frames; null uses tracker.default_frame_rate_hz.",
    )
    classes: list[int | str] | None = Field(
        default=None,
        min_length=1,
        description="Publish only these classes (class names as the model names them, or class "
        "ids); the others are dropped before tracking. null: every class.",
    )
    zones: Zones = Field(
        default_factory=list,
        description="Polygons counted per track (zone_enter/zone_exit events, occupancy); "
        "usually set per camera. See pipeline.config.zones.ZoneConfig.",
    )
    lines: Lines = Field(
        default_factory=list,
        description="Directed lines counted per track (line_cross events with direction); "
        "usually set per camera. See pipeline.config.zones.LineConfig.",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraDefaults:
        if self.backoff_max_s < self.backoff_min_s:
            raise ConfigProblems(
                [(("backoff_max_s",), f"must be >= backoff_min_s ({self.backoff_min_s})")]
            )
        return self


_DEFAULT_FIELDS = tuple(CameraDefaults.model_fields)


def url_kind(url: str) -> Literal["rtsp", "http", "file", "v4l2"]:
    """Which opener serves ``url`` (the same rule as `stages.decode.CameraConfig.kind`)."""
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lower.startswith(("http://", "https://")):
        return "http"
    if lower.startswith("v4l2://") or lower.startswith("/dev/video"):
        return "v4l2"
    return "file"


def _camera_url(value: str, info: ValidationInfo) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if url_kind(value) != "file":
        if "://" not in value or not value.split("://", 1)[1]:
            raise ValueError(f"{redact_url(value)} has no host")
        return value
    raw = value[len("file://") :] if value.startswith("file://") else value
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", raw):
        raise ValueError(
            f"unsupported URL scheme in {redact_url(value)} (rtsp, rtsps, http, https, file, "
            "v4l2 or a file path)"
        )
    path = _resolve_path(Path(raw), info)
    if _check_files(info) and not path.is_file():
        raise ValueError(f"video file not found: {path}")
    return str(path)


class CameraEntry(CameraDefaults):
    """One camera: its id and url, plus any `CameraDefaults` field as an override."""

    id: str = Field(
        ...,
        pattern=CAMERA_ID_PATTERN,
        description="Camera id: 1-64 of [A-Za-z0-9_.-]; unique; names Redis keys and metrics.",
    )
    url: Annotated[str, BeforeValidator(_expand), AfterValidator(_camera_url)] = Field(
        ...,
        description="rtsp[s]://[user[:${PASSWORD}]@]host[:port]/path, http(s):// (MJPEG, HLS), a "
        "video file path (relative to this file) or /dev/videoN. Passwords belong in ${VAR} or "
        "password_file; they are redacted in every log line and error.",
    )
    password_file: ExistingFile | None = Field(
        default=None,
        description="File holding the password of the url's user (a mounted secret; trailing "
        "newline stripped), inserted into the url when the camera opens.",
    )
    realtime: bool | None = Field(
        default=None,
        description="Override of the top-level realtime for this camera (null: inherit).",
    )

    @model_validator(mode="after")
    def _password_needs_user(self) -> CameraEntry:
        if self.password_file is not None:
            parts = urlsplit(self.url)
            if url_kind(self.url) == "file" or not parts.username:
                raise ConfigProblems(
                    [(("password_file",), "needs a user name in the url (scheme://user@host/...)")]
                )
            if parts.password:
                raise ConfigProblems(
                    [(("password_file",), "the url already has a password; keep only one")]
                )
        return self


class CameraSettings(CameraDefaults):
    """The effective settings of one camera: `camera_defaults` merged with its entry."""

    id: str = Field(..., description="Camera id.")
    url: str = Field(..., description="Camera url (may hold a password: log `redacted_url`).")
    password_file: Path | None = Field(
        default=None, description="Password file for the url's user."
    )
    realtime: bool = Field(
        default=True, description="Live policy: drop oldest (true) or block (false)."
    )

    @property
    def kind(self) -> Literal["rtsp", "http", "file", "v4l2"]:
        return url_kind(self.url)

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)


def camera_url_with_password(settings: CameraSettings) -> str:
    """The url to open, with ``password_file``'s password inserted (percent-encoded)."""
    if settings.password_file is None:
        return settings.url
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(settings.url)
    password = quote(read_secret_file(settings.password_file), safe="")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def parse_camera_arg(text: str) -> tuple[str, str]:
    """``"ID=URL"`` (the ``--camera`` flag) -> ``(id, url)``, with a clear error."""
    cid, sep, url = text.partition("=")
    if not sep or not cid or not url:
        raise ValueError(f"--camera takes ID=URL, got {redact_url(text)!r}")
    if not re.match(CAMERA_ID_PATTERN, cid):
        raise ValueError(f"--camera id {cid!r} must be 1-64 of [A-Za-z0-9_.-]")
    return cid, url
