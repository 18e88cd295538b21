"""Result sinks: Redis Streams, JSON lines, annotated video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    model_validator,
)

from pipeline.config.base import (
    ConfigProblems,
    EnvPath,
    EnvStr,
    ExistingFile,
    StrictModel,
    _env_var_set,
    _expand,
)


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
    return value


def _camera_template(value: str | None) -> str | None:
    if value is not None and "{camera}" not in value:
        raise ValueError("must contain {camera}")
    return value


CameraTemplate = Annotated[str, BeforeValidator(_expand), AfterValidator(_camera_template)]


class RedisSection(StrictModel):
    """Redis Streams sink (`stages.sinks.redis.RedisSinkConfig`)."""

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
        default="edgestream:{camera}:detections", description="Detections stream key; has {camera}."
    )
    events_key_template: CameraTemplate | None = Field(
        default="edgestream:{camera}:events",
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
        default=10.0,
        gt=0,
        le=10_000,
        description="Longest a message waits before its flush (ms, 0..10000).",
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
    def _consistent(self) -> RedisSection:
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


class JsonlSection(StrictModel):
    """JSON lines files (`stages.sinks.jsonl.JsonlSinkConfig`), one message per line."""

    path: EnvPath = Field(
        ...,
        description="Output file, relative to this file; with {camera} in it, one file per camera.",
    )
    events: bool = Field(default=True, description="Also write track lifecycle events.")
    append: bool = Field(
        default=False, description="Append to existing files instead of replacing them."
    )
    flush_each_line: bool = Field(
        default=False, description="Flush after every line (for tail -f)."
    )
    fsync_on_close: bool = Field(default=True, description="Make the data durable before exit.")


class VideoSection(StrictModel):
    """Annotated video files, one per camera (for inspection, not production)."""

    dir: EnvPath = Field(..., description="Output folder, relative to this file.")
    fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Output frame rate (frames/s, 0..1000); null: the camera's.",
    )
    untracked: bool = Field(
        default=False,
        description="Also draw boxes no track holds (grey); default: tracked boxes only.",
    )


class SinksConfig(StrictModel):
    """Where results go; any combination, at least one when the sink stage runs here."""

    redis: RedisSection | None = Field(default=None, description="Redis Streams sink; null: off.")
    jsonl: JsonlSection | None = Field(default=None, description="JSON lines sink; null: off.")
    video: VideoSection | None = Field(default=None, description="Annotated video sink; null: off.")


def default_jsonl_path(name: str) -> Path:
    """Where `quick_config` writes results when neither Redis nor JSONL was asked for."""
    return Path("runs") / name / "{camera}.jsonl"
