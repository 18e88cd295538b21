"""Credential redaction for URLs in log lines, errors and stats.

Camera URLs routinely carry credentials (``rtsp://user:pass@host/...``), and FFmpeg puts the
full URL into its error messages (PyAV's ``av.error.*`` carry the filename). Everything the
decode stage, the config and the logs write goes through :func:`redact_url` or
:func:`redact_text` first. It lives in the runtime because `pipeline.config` and
`pipeline.logs` need it and `pipeline/` imports nothing from `stages/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

# scheme://userinfo@ — userinfo is everything up to the last '@' before the host part.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^/@\s'\"]+)@")
# query parameters that commonly carry secrets (HLS tokens, camera APIs).
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:password|passwd|pwd|pass|token|auth|key|secret|signature)=)[^&#\s'\"]*",
    re.IGNORECASE,
)
REDACTED = "***"


def redact_url(url: str) -> str:
    """Return ``url`` with the password (and secret-looking query values) replaced by ``***``.

    The user name is kept (it tells an operator *which* account failed); the password never
    is. ``rtsp://admin:hunter2@10.0.0.5/stream`` → ``rtsp://admin:***@10.0.0.5/stream``.
    Strings that are not URLs are returned unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return redact_text(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{REDACTED}@{host}"
    return redact_text(urlunsplit(parts._replace(netloc=netloc)))


def url_secrets(url: str) -> tuple[str, ...]:
    """The literal password of ``url`` (raw and percent-decoded), for :func:`redact_text`."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ()
    if not password:
        return ()
    return tuple({password, unquote(password)})


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact every ``scheme://user:pass@``, secret query value and literal ``secrets`` in ``text``.

    Passing the camera's own password as ``secrets`` also catches it where it does not appear
    inside a URL (a library message that quotes it alone, a password containing ``/``).
    """
    for secret in secrets:
        if len(secret) >= 3:  # redacting "a" would shred every message
            text = text.replace(secret, REDACTED)

    def _userinfo(m: re.Match[str]) -> str:
        user, sep, _password = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user}{':' + REDACTED if sep else ''}@"

    text = _USERINFO.sub(_userinfo, text)
    return _SECRET_QUERY.sub(lambda m: m.group("key") + REDACTED, text)
