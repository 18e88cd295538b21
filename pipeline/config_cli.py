"""``edgestream config check FILE`` and ``edgestream config schema [--format ...]``.

The schema is rendered from the pydantic models themselves (descriptions, defaults, bounds),
so the reference cannot drift from the code; ``docs/config-reference.md`` is the markdown
rendering, kept up to date by a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.config import ConfigError, PipelineConfig, load_config

SchemaFormat = Literal["yaml", "json", "markdown"]


def add_parsers(subparsers: Any) -> None:
    """Add ``config check`` and ``config schema`` to the ``edgestream`` command."""
    p = subparsers.add_parser(
        "config",
        help="validate a pipeline config, print the config reference",
        description="Validate a pipeline YAML file or print the reference of every key.",
    )
    sub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")

    check = sub.add_parser(
        "check",
        help="validate a config file (every problem, with its key path)",
        description="Validate FILE: unknown keys, bounds, ${VAR} references, files. "
        "Exit 0 when valid, 2 with every problem listed otherwise.",
    )
    check.add_argument("file", type=Path, help="pipeline YAML file")
    check.add_argument(
        "--no-check-files",
        action="store_true",
        help="do not check that weights, secret and video files exist (checking on another "
        "machine than the one that runs it)",
    )
    check.add_argument(
        "--print",
        dest="print_config",
        action="store_true",
        help="print the effective config (defaults filled in, credentials masked) as YAML",
    )
    check.set_defaults(func=run_check)

    schema = sub.add_parser(
        "schema",
        help="print the config reference (every key, unit, bounds, default)",
        description="Print the reference of every config key.",
    )
    schema.add_argument(
        "--format",
        choices=("yaml", "json", "markdown"),
        default="yaml",
        help="yaml: an annotated reference file; json: JSON Schema (for editors); "
        "markdown: the tables of docs/config-reference.md",
    )
    schema.set_defaults(func=run_schema)


def run_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.file, check_files=not args.no_check_files)
    except ConfigError as exc:
        print(f"edgestream config check: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok — {summary(cfg)}")
    if args.print_config:
        print(yaml.safe_dump(cfg.redacted_dump(), sort_keys=False), end="")
    return 0


def summary(cfg: PipelineConfig) -> str:
    """One line saying what the config runs."""
    sinks = [n for n in ("redis", "jsonl", "video") if getattr(cfg.sinks, n) is not None]
    model = cfg.model
    weights = "random weights" if model.random_weights else str(model.weights)
    parts = [
        f"{len(cfg.cameras)} camera{'s' if len(cfg.cameras) != 1 else ''}",
        f"model {model.arch or 'arch from file'} ({weights}, backend {model.backend})",
        f"batch {cfg.batching.max_batch}/{cfg.batching.max_wait_ms:g} ms",
        f"sinks {', '.join(sinks) or 'none'}",
        f"stages {', '.join(cfg.transport.stages)}",
        f"realtime {'on' if cfg.realtime else 'off'}",
    ]
    return ", ".join(parts)


def run_schema(args: argparse.Namespace) -> int:
    print(render_schema(args.format), end="")
    return 0


def render_schema(fmt: SchemaFormat) -> str:
    if fmt == "json":
        return json.dumps(PipelineConfig.model_json_schema(), indent=2) + "\n"
    if fmt == "markdown":
        return render_markdown()
    return render_yaml()


# ------------------------------------------------------------------------------------------
# Introspection helpers
# ------------------------------------------------------------------------------------------


def _args(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation)


def _strip(annotation: Any) -> tuple[Any, bool]:
    """(annotation without Annotated and None, whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _strip(_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in _args(annotation) if a is not type(None)]
        nullable = len(rest) != len(_args(annotation))
        if len(rest) == 1:
            inner, inner_null = _strip(rest[0])
            return inner, nullable or inner_null
    return annotation, False


def _submodel(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _strip(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def _list_model(annotation: Any) -> type[BaseModel] | None:
    inner, _ = _strip(annotation)
    if typing.get_origin(inner) is list:
        return _submodel(_args(inner)[0])
    return None


def type_name(annotation: Any) -> str:
    inner, nullable = _strip(annotation)
    origin = typing.get_origin(inner)
    if origin is Literal:
        name = " \\| ".join(json.dumps(a) for a in _args(inner))
    elif origin is list:
        name = f"list of {type_name(_args(inner)[0])}"
    elif origin is dict:
        name = f"map of {type_name(_args(inner)[1])}"
    elif origin in (typing.Union, types.UnionType):
        name = " or ".join(type_name(a) for a in _args(inner))
    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        name = "section"
    else:
        name = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}.get(
            inner, str(inner)
        )
    return f"{name} \\| null" if nullable else name


def bounds(field: FieldInfo) -> str:
    out: list[str] = []
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            out.append(f">= {m.ge}")
        elif isinstance(m, annotated_types.Gt):
            out.append(f"> {m.gt}")
        elif isinstance(m, annotated_types.Le):
            out.append(f"<= {m.le}")
        elif isinstance(m, annotated_types.Lt):
            out.append(f"< {m.lt}")
        elif isinstance(m, annotated_types.MinLen):
            out.append(f"at least {m.min_length} item(s)")
        elif getattr(m, "pattern", None):
            out.append(f"matches `{m.pattern}`")
    return ", ".join(out)


def default_value(field: FieldInfo) -> Any:
    """The field's default as plain data; PydanticUndefined when required."""
    factory = field.default_factory
    value = field.default if factory is None else factory()  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    return value


def _default_text(field: FieldInfo) -> str:
    value = default_value(field)
    if value is PydanticUndefined:
        return "required"
    if _submodel(field.annotation) is not None and isinstance(value, dict):
        return "(section)"
    return f"`{json.dumps(value)}`"


def _sections(
    model: type[BaseModel], path: str = "", seen: set[type[BaseModel]] | None = None
) -> Iterator[tuple[str, type[BaseModel]]]:
    """(key path, model) for the top level and every nested section, depth first."""
    seen = set() if seen is None else seen
    yield path, model
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        listed = _list_model(field.annotation)
        if sub is not None:
            yield from _sections(sub, f"{path}.{name}" if path else name, seen)
        elif listed is not None:
            yield from _sections(listed, f"{path}.{name}[]" if path else f"{name}[]", seen)


# ------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------

_MD_HEADER = """\
# Pipeline configuration reference

Generated by `edgestream config schema --format markdown` from the config models
(`pipeline/config/` and the stages' own `config` modules); do not edit by hand (a test checks
it is up to date). Validate a file with
`edgestream config check FILE`; the examples in `configs/` show whole files.

- Unknown keys are errors (with the closest known key suggested).
- String fields take `${VAR}` and `${VAR:-default}` from the environment (`$$` is a literal
  `$`); number and boolean fields do not. A missing variable is an error naming the key and
  the variable.
- Relative paths (weights, files, sink outputs) are relative to the YAML file's directory.
- `cameras[]` entries take `id`, `url`, `password_file`, `realtime` and any `camera_defaults`
  key as a per-camera override (`options` maps are merged key by key).
"""


def render_markdown() -> str:
    lines = [_MD_HEADER]
    for path, model in _sections(PipelineConfig):
        title = path or "top level"
        lines.append(f"## `{title}`\n")
        doc = (model.__doc__ or "").strip()
        if doc:
            lines.append(" ".join(doc.split()) + "\n")
        inherited = set()
        if path == "cameras[]":
            from pipeline.config import CameraDefaults

            inherited = set(CameraDefaults.model_fields)
            lines.append(
                "Also every `camera_defaults` key ("
                + ", ".join(f"`{k}`" for k in CameraDefaults.model_fields)
                + "), overriding it for this camera.\n"
            )
        lines.append("| key | type | default | bounds | description |")
        lines.append("|---|---|---|---|---|")
        for name, field in model.model_fields.items():
            if name in inherited:
                continue
            desc = " ".join((field.description or "").split()).replace("|", "\\|")
            lines.append(
                f"| `{name}` | {type_name(field.annotation)} | {_default_text(field)} | "
                f"{bounds(field)} | {desc} |"
            )
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Annotated YAML
# ------------------------------------------------------------------------------------------


def _yaml_scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _comment_block(text: str, indent: str, width: int = 96) -> list[str]:
    import textwrap

    return [
        f"{indent}# {line}"
        for line in textwrap.wrap(" ".join(text.split()), width - len(indent) - 2)
    ]


def _yaml_model(model: type[BaseModel], indent: str, commented: bool) -> list[str]:
    lines: list[str] = []
    mark = "# " if commented else ""
    for name, field in model.model_fields.items():
        desc = field.description or ""
        b = bounds(field)
        if b:
            desc += f" [{b}]"
        lines.extend(_comment_block(desc, indent))
        sub = _submodel(field.annotation)
        listed = _list_model(field.annotation)
        value = default_value(field)
        if sub is not None:
            if value is None:
                lines.append(f"{indent}{mark}{name}: null   # or:")
                lines.append(f"{indent}# {name}:")
                lines.extend(_yaml_model(sub, indent + "  ", commented=True))
            else:
                lines.append(f"{indent}{mark}{name}:")
                lines.extend(_yaml_model(sub, indent + "  ", commented))
        elif listed is not None:
            lines.append(f"{indent}{mark}{name}: []   # entries like:")
            own = {
                k: f
                for k, f in listed.model_fields.items()
                if listed.__name__ != "CameraEntry"
                or k in ("id", "url", "password_file", "realtime")
            }
            for i, (k, f) in enumerate(own.items()):
                lines.extend(_comment_block(f.description or "", indent + "#     "))
                v = default_value(f)
                shown = "<required>" if v is PydanticUndefined else _yaml_scalar(v)
                bullet = "-" if i == 0 else " "
                lines.append(f"{indent}#   {bullet} {k}: {shown}")
            if listed.__name__ == "CameraEntry":
                lines.append(f"{indent}#     # ...and any camera_defaults key as an override")
        elif value is PydanticUndefined:
            lines.append(f"{indent}{mark}# {name}: <required>")
        else:
            lines.append(f"{indent}{mark}{name}: {_yaml_scalar(value)}")
    return lines


def render_yaml() -> str:
    head = [
        "# edgestream pipeline configuration: every key with its default.",
        "# Generated by `edgestream config schema`; see docs/config-reference.md.",
        "",
    ]
    return "\n".join(head + _yaml_model(PipelineConfig, "", commented=False)) + "\n"
