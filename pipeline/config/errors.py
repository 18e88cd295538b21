"""Validation errors as ``key.path: message`` lines, with did-you-mean hints for unknown keys."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from pipeline.config.base import ConfigProblems, _path_str


def _unwrap(annotation: Any) -> Iterator[Any]:
    """Every type inside an annotation (Optional, list, dict values, Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is None:
        yield annotation
        return
    if origin is typing.Annotated:
        yield from _unwrap(typing.get_args(annotation)[0])
        return
    if origin in (typing.Union, types.UnionType, list, dict, tuple):
        args = typing.get_args(annotation)
        if origin is dict:
            args = args[1:]
        for arg in args:
            yield from _unwrap(arg)
        return
    yield annotation


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for did-you-mean hints)."""
    from pipeline.config.pipeline import PipelineConfig  # the root; it imports this module

    model: type[BaseModel] | None = PipelineConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = next(
            (t for t in _unwrap(annotation) if isinstance(t, type) and issubclass(t, BaseModel)),
            None,
        )
    return model


def _num(value: Any) -> Any:
    """1000.0 -> 1000 in messages; other values unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    got = (
        f", got {value!r}"
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else ""
    )
    if kind == "missing":
        return "required key is missing"
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx.get('ge'))}{got}"
    if kind == "greater_than":
        return f"must be > {_num(ctx.get('gt'))}{got}"
    if kind == "less_than_equal":
        return f"must be <= {_num(ctx.get('le'))}{got}"
    if kind == "less_than":
        return f"must be < {_num(ctx.get('lt'))}{got}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    msg = str(err.get("msg", kind))
    if kind == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    parsing = kind in ("int_parsing", "float_parsing", "bool_parsing")
    if parsing and isinstance(value, str) and "${" in value:
        msg += " (${VAR} is substituted in string fields only)"
    return msg


def format_errors(exc: ValidationError) -> list[str]:
    """One ``path: message`` line per problem, never quoting a string value (secrets)."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, ConfigProblems):
            for rel, msg in error.problems:
                lines.append(f"{_path_str(loc + rel)}: {msg}")
            continue
        if err["type"] == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            model = _model_at(loc[:-1])
            hint = ""
            if model is not None:
                close = difflib.get_close_matches(key, list(model.model_fields), n=2, cutoff=0.6)
                if close:
                    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)"
                elif len(model.model_fields) <= 12:
                    hint = f" (known keys: {', '.join(model.model_fields)})"
            lines.append(f"{_path_str(loc)}: unknown key{hint}")
            continue
        lines.append(f"{_path_str(loc)}: {_message(err)}")
    return lines
