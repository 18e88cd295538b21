"""Settings of the Redis sink (and of ``edgestream tail``, which shares the connection fields).

`RedisSinkConfig` is also the ``sinks.redis`` section of the pipeline config, as it is: the one
definition of every Redis setting (bounds and descriptions included). Schema only: it imports
nothing from the stages, so loading a config does not load the sink.

The settings in detail:

Connection
----------
url: ``redis://host:port/db`` or ``rediss://`` for TLS. Credentials may be in the URL but
    belong in ``password_env`` / ``password_file``: a URL ends up in shell history and
    process lists. Every log line and error shows the URL with its password redacted.
username: ACL user (Redis 6+); None uses the URL's user or ``default``.
password_env: name of an environment variable holding the password (it must be set when the
    config is made; its value is read at ``setup()``).
password_file: file holding the password (a mounted Secret); trailing newline stripped.
    Wins over ``password_env``, which wins over a password in the URL.
tls_ca_file / tls_cert_file / tls_key_file: PEM files for ``rediss://``: the CA that
    signed the server's certificate (None: the system store), and a client certificate and
    key when the server sets ``tls-auth-clients yes``.
tls_check_hostname: verify that the server certificate names the URL's host. Turn off
    only for servers reached by an address their certificate does not list.
connect_timeout_s / socket_timeout_s: bound every connect and every reply. A flush that
    gets no reply within ``socket_timeout_s`` counts as an outage and is retried.

Streams
-------
key_template: stream of detection messages, one per camera (one key per camera also
    spreads cameras over hash slots in Redis Cluster).
events_key_template: stream of track lifecycle events; None: events are not published.
maxlen: ``XADD ... MAXLEN ~ maxlen``: approximate cap on entries per stream (Redis trims
    whole nodes, so a stream holds slightly more). 30 fps x 10 min = 18000.
events_maxlen: the same for the events streams.
publish_channel: if set, each detections message is also PUBLISHed (same JSON) on this
    channel, for dashboards that want a push; Pub/Sub is fire-and-forget, streams are not.
latest_hash: if set, a hash per camera keeps the newest message (fields ``data``,
    ``frame_id``, ``entry_id``): what a dashboard reads on load.

Batching and outages
--------------------
flush_interval_ms: the longest a message waits in the sink before its flush starts, when
    Redis is up. 0 (default): at once when no flush is in flight, and what arrives during
    a flush goes in the next, so batches grow with the load by themselves (Nagle-like,
    without the wait). Higher: fewer round trips (each ~50-100 us of CPU), more latency.
max_batch_messages: messages per pipelined round trip; a full batch flushes at once.
max_buffer_messages / max_buffer_bytes: the outage buffer (queued plus in flight; bytes
    of JSON). When either is hit, the oldest queued message is dropped and counted
    (``dropped["buffer_full"]``): live consumers want the newest frames. Messages a failed
    flush had sent are kept (Redis may have them), so the count is exact. Size it as
    ``outage_s x cameras x fps`` messages of ~3 KB (20 objects).
reconnect_backoff_min_s / reconnect_backoff_max_s: wait between reconnect attempts,
    doubling from min to max, with +-20 % jitter so many edge boxes do not reconnect in
    lockstep. After an outage, the buffer is written within about max of this.
close_timeout_s: how long ``close()`` keeps trying to write what is buffered; what is left
    is counted as ``dropped["shutdown"]``. Results of offline cameras are waited for
    without this limit at the end of a run, and for this long after a stop request.
give_up_after_s: offline cameras (``realtime: false``) lose nothing to an outage: the sink
    holds the pipeline while its buffer is full and the run ends once every result is
    written. After an outage of this many seconds it gives up holding: offline results are
    then buffered like live ones, what is lost is counted (``dropped["gave_up"]``) and the
    run exits non-zero. None: never give up (wait for Redis as long as it takes).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from pipeline.config.base import (
    ConfigProblems,
    EnvStr,
    ExistingFile,
    StrictModel,
    _env_var_set,
    _expand,
)

DEFAULT_KEY_TEMPLATE = "edgestream:{camera}:detections"
DEFAULT_EVENTS_KEY_TEMPLATE = "edgestream:{camera}:events"


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
    return value


def _camera_template(value: str | None) -> str | None:
    if value is not None and "{camera}" not in value:
        raise ValueError("must contain {camera}")
    return value


CameraTemplate = Annotated[str, BeforeValidator(_expand), AfterValidator(_camera_template)]


class RedisSinkConfig(StrictModel):
    """Where and how the Redis sink writes. Every template takes ``{camera}``."""

    url: Annotated[str, BeforeValidator(_expand), AfterValidator(_redis_url)] = Field(
        default="redis://localhost:6379/0",
        description="redis://host:port/db, rediss:// (TLS) or unix://path. A password here "
        "should come from ${VAR}; better, use password_env or password_file.",
    )
    username: EnvStr | None = Field(
        default=None, description="ACL user (Redis 6+); null: from the url."
    )
    password_env: Annotated[str, AfterValidator(_env_var_set)] | None = Field(
        default=None,
        description="Name of the environment variable holding the password (must be set).",
    )
    password_file: ExistingFile | None = Field(
        default=None,
        description="File holding the password (a mounted secret); wins over password_env.",
    )
    tls_ca_file: ExistingFile | None = Field(default=None, description="PEM CA for rediss://.")
    tls_cert_file: ExistingFile | None = Field(default=None, description="PEM client certificate.")
    tls_key_file: ExistingFile | None = Field(default=None, description="PEM client key.")
    tls_check_hostname: bool = Field(
        default=True, description="Verify the server certificate names the url's host."
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, le=600, description="Connect bound (s, 0 < t <= 600)."
    )
    socket_timeout_s: float = Field(
        default=2.0, gt=0, le=600, description="Reply bound (s, 0 < t <= 600)."
    )
    key_template: CameraTemplate = Field(
        default=DEFAULT_KEY_TEMPLATE, description="Detections stream key; has {camera}."
    )
    events_key_template: CameraTemplate | None = Field(
        default=DEFAULT_EVENTS_KEY_TEMPLATE,
        description="Track events stream key with {camera}; null: events are not published.",
    )
    maxlen: int = Field(
        default=18_000,
        ge=1,
        le=100_000_000,
        description="Approximate entries kept per detections stream (count, 1..1e8; 30 fps x "
        "10 min = 18000).",
    )
    events_maxlen: int = Field(
        default=10_000,
        ge=1,
        le=100_000_000,
        description="Approximate entries per events stream (1..1e8).",
    )
    publish_channel: CameraTemplate | None = Field(
        default=None,
        description="Also PUBLISH each message on this channel (has {camera}); null: off.",
    )
    latest_hash: CameraTemplate | None = Field(
        default=None,
        description="Hash per camera keeping the newest message (has {camera}); null: off.",
    )
    flush_interval_ms: float = Field(
        default=0.0,
        ge=0,
        le=10_000,
        description="Longest a message waits before its flush starts (ms, 0..10000). 0: at "
        "once when no flush is in flight; what arrives during one goes in the next, so batches "
        "grow with the load by themselves. More trades latency for fewer round trips.",
    )
    max_batch_messages: int = Field(
        default=500, ge=1, le=100_000, description="Messages per pipelined round trip (1..100000)."
    )
    max_buffer_messages: int = Field(
        default=100_000,
        ge=1,
        le=100_000_000,
        description="Outage buffer in messages (1..1e8); when full, the oldest result of a live "
        "camera is dropped (counted) and realtime: false cameras wait for room.",
    )
    max_buffer_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        le=64 * 1024**3,
        description="Outage buffer in bytes of JSON (1 KiB..64 GiB).",
    )
    reconnect_backoff_min_s: float = Field(
        default=0.1, gt=0, le=3600, description="First reconnect wait (s, 0 < t <= 3600)."
    )
    reconnect_backoff_max_s: float = Field(
        default=5.0, gt=0, le=3600, description="Longest reconnect wait (s, 0 < t <= 3600)."
    )
    close_timeout_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="How long shutdown keeps writing the buffer (s, 0..600).",
    )
    give_up_after_s: float | None = Field(
        default=None,
        gt=0,
        le=31_536_000,
        description="realtime: false cameras lose nothing to a Redis outage: the sink holds the "
        "pipeline and the run ends once every result is written. After an outage this long "
        "(s) it stops holding them; what is then lost is counted and the run exits 3. "
        "null: never give up.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RedisSinkConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.events_key_template == self.key_template:
            problems.append((("events_key_template",), "must differ from key_template"))
        if self.reconnect_backoff_max_s < self.reconnect_backoff_min_s:
            problems.append((("reconnect_backoff_max_s",), "must be >= reconnect_backoff_min_s"))
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if any(f is not None for f in tls) and not self.url.startswith("rediss://"):
            problems.append((("url",), "tls_* files are set but the url is not rediss://"))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append((("tls_key_file",), "tls_cert_file and tls_key_file go together"))
        if problems:
            raise ConfigProblems(problems)
        return self

    def stream_key(self, camera: str) -> str:
        return self.key_template.format(camera=camera)
