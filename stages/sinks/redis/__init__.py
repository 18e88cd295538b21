"""Redis Streams sink: `RedisSink` configured by `RedisSinkConfig`."""

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "RedisSink": "stages.sinks.redis.sink",
    "RedisSinkConfig": "stages.sinks.redis.config",
}
__all__ = ["RedisSink", "RedisSinkConfig"]

if TYPE_CHECKING:
    from stages.sinks.redis.config import RedisSinkConfig
    from stages.sinks.redis.sink import RedisSink


__getattr__ = lazy_exports(__name__, _EXPORTS)  # the names above, imported on first use
