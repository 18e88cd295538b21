"""The ``sinks:`` section of the pipeline config: each sink's own settings model.

Schema only (pydantic and `pipeline.config.base`; the Redis model is `stages.sinks.redis.config`):
loading a config does not load the sinks.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.config.base import EnvPath, StrictModel
from stages.sinks.redis.config import RedisSinkConfig


class JsonlSinkConfig(StrictModel):
    """JSON lines files (`stages.sinks.jsonl.JsonlSink`), one message per line: detections and,
    with ``events``, track events (their ``type`` field tells them apart)."""

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

    redis: RedisSinkConfig | None = Field(
        default=None, description="Redis Streams sink; null: off."
    )
    jsonl: JsonlSinkConfig | None = Field(default=None, description="JSON lines sink; null: off.")
    video: VideoSection | None = Field(default=None, description="Annotated video sink; null: off.")
