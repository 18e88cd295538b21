"""Building a Redis client from `RedisSinkConfig`: credentials, TLS, redaction, error messages.

Secrets are read once, by `connect()`, and never stored on an object that is logged. Every
string that reaches a log line or an exception raised to the user goes through `Redactor`,
which removes the password (wherever it came from) and any ``user:password@`` in a URL.

redis-py's own retries are turned off (``Retry(NoBackoff(), 0)``): the sink owns the retry
policy (backoff, buffering, counting), and a hidden retry inside a pipeline would only delay
how fast an outage is noticed.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stages.sinks.redis.config import RedisSinkConfig

_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]*:)[^@\s]*@")


class Redactor:
    """Replaces known secrets and URL passwords in text with ``***``."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        self._secrets = tuple(s for s in secrets if s)

    def __call__(self, text: object) -> str:
        out = _URL_PASSWORD.sub(r"\1***@", str(text))
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return out


def redact_url(url: str) -> str:
    return Redactor()(url)


def read_password(cfg: RedisSinkConfig) -> str | None:
    """The password from ``password_file``, else ``password_env``, else the URL's, else None.

    A file or variable that is configured but missing is a configuration error (ValueError):
    silently connecting without a password would only fail later with a vaguer message.
    """
    if cfg.password_file is not None:
        path = Path(cfg.password_file)
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read password_file {path}: {exc.strerror}") from None
    if cfg.password_env is not None:
        value = os.environ.get(cfg.password_env)
        if value is None:
            raise ValueError(f"password_env names {cfg.password_env}, which is not set")
        return value
    url_password = urlsplit(cfg.url).password
    return unquote(url_password) if url_password else None


@dataclass(frozen=True)
class Connection:
    """A client plus what is safe to show: ``display_url`` has no password in it."""

    client: redis.Redis
    display_url: str
    username: str
    redact: Redactor


def connect(cfg: RedisSinkConfig) -> Connection:
    """A client for ``cfg`` (no I/O yet: redis-py connects on the first command).

    Raises ValueError for configuration problems (missing secret or TLS file).
    """
    password = read_password(cfg)
    url_parts = urlsplit(cfg.url)
    username = cfg.username or (unquote(url_parts.username) if url_parts.username else None)
    redact = Redactor((password,) if password else ())
    kwargs: dict[str, object] = {
        "username": username,
        "password": password,
        "socket_connect_timeout": cfg.connect_timeout_s,
        "socket_timeout": cfg.socket_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    if cfg.url.startswith("rediss://"):
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(cfg, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path} is not a readable file")
        kwargs.update(
            ssl_ca_certs=None if cfg.tls_ca_file is None else str(cfg.tls_ca_file),
            ssl_certfile=None if cfg.tls_cert_file is None else str(cfg.tls_cert_file),
            ssl_keyfile=None if cfg.tls_key_file is None else str(cfg.tls_key_file),
            ssl_cert_reqs="required",
            ssl_check_hostname=cfg.tls_check_hostname,
        )
    client = redis.Redis.from_url(cfg.url, **kwargs)
    return Connection(client, redact_url(cfg.url), username or "default", redact)


def describe_error(exc: BaseException, conn: Connection) -> str:
    """A one-line, redacted explanation of a Redis failure with what to check."""
    msg = str(exc) or type(exc).__name__
    where = conn.display_url
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in msg or "NOAUTH" in msg:
        text = (
            f"authentication failed at {where} as user {conn.username!r}: {msg} "
            "(check username and password_env / password_file)"
        )
    elif isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in msg:
        text = (
            f"user {conn.username!r} lacks a permission at {where}: {msg} "
            "(the ACL needs xadd, xrange, xinfo, ping, and hset/publish when enabled)"
        )
    elif "CERTIFICATE_VERIFY_FAILED" in msg or isinstance(exc, ssl.SSLCertVerificationError):
        text = (
            f"TLS certificate verification failed for {where}: {msg} "
            "(check tls_ca_file and tls_check_hostname)"
        )
    elif "SSL" in msg or isinstance(exc, ssl.SSLError):
        text = f"TLS error talking to {where}: {msg} (check tls_* files and the server's TLS)"
    elif isinstance(exc, redis.TimeoutError):
        text = f"no reply from {where} within the timeout: {msg}"
    elif isinstance(exc, (redis.ConnectionError, OSError)):
        text = f"cannot reach {where}: {msg}"
    else:
        text = f"redis error at {where}: {type(exc).__name__}: {msg}"
    return conn.redact(text)
