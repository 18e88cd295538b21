"""Turning PyAV/FFmpeg exceptions into one clear, redacted line per failure."""

from __future__ import annotations

import av.error

from pipeline.redact import redact_text, url_secrets
from stages.decode.config import CameraConfig


class StreamStalled(Exception):
    """No frame decoded for ``stall_timeout_s`` although the demuxer kept returning."""


def describe_error(exc: BaseException, cfg: CameraConfig, during: str) -> str:
    """A short reason naming the problem, e.g. ``"connect: 401 Unauthorized (bad credentials)"``.

    ``during`` is ``"connect"`` or ``"read"``. The text is redacted (FFmpeg quotes the URL).
    """
    hint: str
    if isinstance(exc, av.error.HTTPUnauthorizedError):
        hint = "401 Unauthorized: missing or wrong credentials"
    elif isinstance(exc, av.error.HTTPForbiddenError):
        hint = "403 Forbidden: the account may not open this stream"
    elif isinstance(exc, av.error.HTTPNotFoundError):
        hint = "404 Not Found: no stream at this path"
    elif isinstance(exc, av.error.HTTPError | av.error.HTTPClientError | av.error.HTTPServerError):
        hint = f"HTTP error: {exc}"
    elif isinstance(exc, av.error.ConnectionRefusedError):
        hint = "connection refused: server down or wrong port"
    elif isinstance(exc, av.error.ExitError | av.error.TimeoutError | TimeoutError):
        limit = cfg.open_timeout_s if during == "connect" else cfg.read_timeout_s
        hint = f"timed out: no answer within {limit:g} s"
    elif isinstance(exc, av.error.InvalidDataError) and during == "connect":
        hint = (
            f"no valid media within {cfg.open_timeout_s:g} s "
            "(a silent server, not a media server, or corrupt input)"
        )
    elif isinstance(exc, av.error.FileNotFoundError | FileNotFoundError):
        hint = "no such file or device"
    elif isinstance(exc, StreamStalled):
        hint = str(exc)
    else:
        hint = f"{type(exc).__name__}: {exc}"
    return redact_text(f"{during}: {hint}", url_secrets(cfg.url))


def is_permanent_for_file(exc: BaseException) -> bool:
    """Errors a local file will not recover from by retrying (missing, unreadable, not media)."""
    return isinstance(
        exc,
        av.error.FileNotFoundError
        | FileNotFoundError
        | av.error.InvalidDataError
        | av.error.PermissionError
        | PermissionError
        | IsADirectoryError,
    )
