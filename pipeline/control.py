"""The ``control`` section and the bearer token that guards the write endpoints.

``GET /cameras`` is served wherever ``/metrics`` is (same host and port, no token: it says no
more than the metrics do, URLs redacted). ``POST``/``PATCH``/``DELETE /cameras`` and ``POST
/reload`` change what the pipeline runs, so they need ``Authorization: Bearer <token>``, the
token read from ``control.token_file`` (a mounted secret; trailing newline stripped) or the
environment variable ``control.token_env``. With neither configured the write endpoints are
off: they answer 403 saying so and how to turn them on. A request without a token is 401, one
with a wrong token 403; both change nothing. Tokens are compared with `hmac.compare_digest`
(time independent of where they differ) and masked in every log line of the process that
loaded them (`mask_in_logs`).

This module must not import `pipeline.config` (which imports it) nor anything in `stages/`.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

log = logging.getLogger("edgestream.control")

MIN_TOKEN_CHARS = 16
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ControlConfig(BaseModel):
    """Live operations (``/cameras`` writes, ``/reload``): who may change a running pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_file: Path | None = Field(
        default=None,
        description="File holding the bearer token for POST/PATCH/DELETE /cameras and POST "
        f"/reload (>= {MIN_TOKEN_CHARS} characters, trailing newline stripped; relative to the "
        "config file). Re-read on reload. Neither this nor token_env: writes are off.",
    )
    token_env: str | None = Field(
        default=None,
        description="Environment variable holding the bearer token (alternative to token_file; "
        "if both are set, token_file wins).",
    )

    @field_validator("token_file")
    @classmethod
    def _existing(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        ctx = info.context if isinstance(info.context, dict) else {}
        value = Path(os.path.expanduser(str(value)))
        base = ctx.get("base_dir")
        if not value.is_absolute() and base is not None:
            value = Path(base) / value
        if ctx.get("check_files", True) and not value.is_file():
            raise ValueError(f"token file not found: {value}")
        return value

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        return value


class TokenError(ValueError):
    """The configured token cannot be used (unreadable file, unset variable, too short)."""


def load_token(section: ControlConfig | None, env: Any = None) -> str | None:
    """The token ``section`` names, or None when writes are off (nothing configured).

    Raises `TokenError` when one is configured but unusable: writes must not silently stay
    open or silently turn off."""
    if section is None:
        return None
    env = os.environ if env is None else env
    if section.token_file is not None:
        try:
            token = Path(section.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenError(
                f"control.token_file {section.token_file}: {exc.strerror or exc}"
            ) from None
        where = f"control.token_file {section.token_file}"
    elif section.token_env is not None:
        token = env.get(section.token_env, "").strip()
        if not token:
            raise TokenError(f"control.token_env: ${section.token_env} is not set or empty")
        where = f"control.token_env ${section.token_env}"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"{where}: the token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(e.g. `openssl rand -hex 24`)"
        )
    mask_in_logs(token)
    return token


WRITES_OFF = (
    "live camera changes are off: no token configured. Set control.token_file (a file holding "
    f"a secret of >= {MIN_TOKEN_CHARS} characters) or control.token_env in the config, restart, "
    "and send it as 'Authorization: Bearer <token>'"
)


def check_bearer(header: str | None, token: str | None) -> tuple[int, str] | None:
    """None when ``header`` carries ``token``; else (HTTP status, reason): 403 writes off,
    401 no bearer token, 403 wrong token. The reason never quotes what was sent."""
    if token is None:
        return 403, WRITES_OFF
    if not header:
        return 401, "this endpoint needs 'Authorization: Bearer <token>' (control.token_file)"
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401, "the Authorization header must be 'Bearer <token>'"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return 403, "wrong token"
    return None


def mask_in_logs(*secrets: str) -> None:
    """Add ``secrets`` to the redaction of this process's log handlers (`pipeline.logs`)."""
    from pipeline.logs import RedactFilter

    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, RedactFilter):
                f.add(s for s in secrets if s)


def read_control(q: Any) -> tuple[int, Any] | None:
    """The newest ``(generation, config)`` waiting on a child's control queue (the older ones
    are superseded: each carries the whole camera list), or None. ``config`` None: the
    generation the child started with (it got that config at spawn)."""
    if q is None:
        return None
    import queue

    latest = None
    while True:
        try:
            latest = q.get_nowait()
        except queue.Empty:
            return latest
        except (OSError, ValueError, EOFError):  # closed by a stopping supervisor
            return latest
