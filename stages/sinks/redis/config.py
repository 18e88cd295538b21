"""Settings of the Redis sink (and of ``edgestream tail``, which shares the connection fields)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_KEY_TEMPLATE = "edgestream:{camera}:detections"
DEFAULT_EVENTS_KEY_TEMPLATE = "edgestream:{camera}:events"


@dataclass(frozen=True)
class RedisSinkConfig:
    """Where and how the Redis sink writes. Every template takes ``{camera}``.

    Connection
    ----------
    url: ``redis://host:port/db`` or ``rediss://`` for TLS. Credentials may be in the URL but
        belong in ``password_env`` / ``password_file``: a URL ends up in shell history and
        process lists. Every log line and error shows the URL with its password redacted.
    username: ACL user (Redis 6+); None uses the URL's user or ``default``.
    password_env: name of an environment variable holding the password (read at ``setup()``).
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
        Redis is up. Lower: less latency, more round trips (each is ~50-100 us of CPU).
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

    url: str = "redis://localhost:6379/0"
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_check_hostname: bool = True
    connect_timeout_s: float = 2.0
    socket_timeout_s: float = 2.0

    key_template: str = DEFAULT_KEY_TEMPLATE
    events_key_template: str | None = DEFAULT_EVENTS_KEY_TEMPLATE
    maxlen: int = 18_000
    events_maxlen: int = 10_000
    publish_channel: str | None = None
    latest_hash: str | None = None

    flush_interval_ms: float = 10.0
    max_batch_messages: int = 500
    max_buffer_messages: int = 100_000
    max_buffer_bytes: int = 256 * 1024 * 1024
    reconnect_backoff_min_s: float = 0.1
    reconnect_backoff_max_s: float = 5.0
    close_timeout_s: float = 5.0
    give_up_after_s: float | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// (TLS) or unix://")
        for name in ("key_template", "events_key_template", "publish_channel", "latest_hash"):
            value = getattr(self, name)
            if value is not None and "{camera}" not in value:
                raise ValueError(f"{name} must contain {{camera}}, got {value!r}")
        if self.events_key_template == self.key_template:
            raise ValueError("events_key_template must differ from key_template")
        positive = (
            "maxlen",
            "events_maxlen",
            "flush_interval_ms",
            "max_batch_messages",
            "max_buffer_messages",
            "max_buffer_bytes",
            "reconnect_backoff_min_s",
            "connect_timeout_s",
            "socket_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.reconnect_backoff_max_s < self.reconnect_backoff_min_s:
            raise ValueError("reconnect_backoff_max_s must be >= reconnect_backoff_min_s")
        if self.close_timeout_s < 0:
            raise ValueError("close_timeout_s must be >= 0")
        if self.give_up_after_s is not None and self.give_up_after_s <= 0:
            raise ValueError(f"give_up_after_s must be > 0 or None, got {self.give_up_after_s}")
        tls_files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if any(f is not None for f in tls_files) and not self.url.startswith("rediss://"):
            raise ValueError("tls_* files are set but the url is not rediss://")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")

    def stream_key(self, camera: str) -> str:
        return self.key_template.format(camera=camera)
