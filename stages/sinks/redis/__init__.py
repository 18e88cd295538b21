"""Redis Streams sink: `RedisSink` configured by `RedisSinkConfig`."""

from stages.sinks.redis.config import RedisSinkConfig
from stages.sinks.redis.sink import RedisSink

__all__ = ["RedisSink", "RedisSinkConfig"]
