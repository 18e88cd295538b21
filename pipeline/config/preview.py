"""``preview``: the annotated look at a camera on the metrics HTTP server (off by default).

``GET /cameras/{id}/snapshot.jpg`` and ``GET /cameras/{id}/stream.mjpg`` (`pipeline.preview`)
show a camera's latest frame with its tracked boxes, ids, zones and lines. Nothing is drawn or
encoded unless someone asks: a request marks the camera watched for ``watch_timeout_s``, and
only then does the sink process fetch frames from decode and encode at most ``fps`` JPEGs per
second per camera.
"""

from __future__ import annotations

from pydantic import Field

from pipeline.config.base import StrictModel


class PreviewConfig(StrictModel):
    """The preview endpoints (need ``metrics.port`` != 0 and decode + sink in this process
    tree)."""

    enabled: bool = Field(
        default=False,
        description="Serve /cameras/{id}/snapshot.jpg and /cameras/{id}/stream.mjpg. Off by "
        "default: the preview shows what the cameras see to whoever reaches the port.",
    )
    fps: float = Field(
        default=2.0,
        gt=0,
        le=15,
        description="At most this many JPEGs per second per watched camera (0 < fps <= 15): "
        "the preview's CPU bound.",
    )
    max_width: int = Field(
        default=960,
        ge=160,
        le=7680,
        description="Frames wider than this are scaled down before encoding (px, 160..7680).",
    )
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="JPEG quality (10..100).")
    watch_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="A camera is encoded for this long after its last request (s, 0 < t <= 60).",
    )
    max_streams: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Concurrent stream.mjpg clients at most (1..64); more get 503.",
    )
