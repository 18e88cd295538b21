"""Camera settings: `camera_defaults`, one entry of `cameras`, and their merge.

Composes the decode stage's own `DecodeSettings` (so, like `pipeline` and `loading`, this is
config wiring: `pipeline.config` exports its names lazily).
"""

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
    ExistingFile,
    _check_files,
    _expand,
    _resolve_path,
    read_secret_file,
)
from pipeline.config.zones import Lines, Zones
from pipeline.redact import redact_url
from stages.decode.config import DecodeSettings, url_kind


class CameraDefaults(DecodeSettings):
    """What every camera inherits: its decode settings (`stages.decode.config.DecodeSettings`,
    declared there once) and the per-camera settings of the later stages (frame rate for the
    tracker, class filter, zones and lines).

    Any camera entry may set any of these again for itself.
    """

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


_DEFAULT_FIELDS = tuple(CameraDefaults.model_fields)


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
