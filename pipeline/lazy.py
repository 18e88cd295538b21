"""Names of a package resolved on first use (PEP 562), so that importing one light module of it
(a config, read by the CLI to validate a config before anything starts) does not import the
heavy ones (PyAV, scipy, redis-py) its ``__init__`` re-exports."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each public name to the
    module that defines it, imported when the name is first asked for."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(module), name)

    return __getattr__
