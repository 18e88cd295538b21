"""Redis Streams sink: `RedisSink` configured by `RedisSinkConfig`."""

from typing import TYPE_CHECKING

_EXPORTS = {
    "RedisSink": "stages.sinks.redis.sink",
    "RedisSinkConfig": "stages.sinks.redis.config",
}
__all__ = ["RedisSink", "RedisSinkConfig"]

if TYPE_CHECKING:
    from stages.sinks.redis.config import RedisSinkConfig
    from stages.sinks.redis.sink import RedisSink


def __getattr__(name: str) -> object:
    """The public names, imported on first use: the config (imported by the CLI to validate a
    config before anything starts) must not pull in redis-py and the sink."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
