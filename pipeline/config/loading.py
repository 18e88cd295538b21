"""Reading a YAML file (or building a config without one) into a validated `PipelineConfig`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from pipeline.config.base import ConfigError, read_secret_file
from pipeline.config.errors import format_errors
from pipeline.config.pipeline import PipelineConfig
from pipeline.config.runtime import DEFAULT_METRICS_PORT


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} at line {line} (first at line {first})"
            )
        seen[key] = key_node
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, source: str = "<config>") -> dict[str, Any]:
    """The YAML document as a dict; `ConfigError` for syntax errors, duplicates, non-mappings."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], source) from None
    if data is None:
        raise ConfigError(["the file is empty"], source)
    if not isinstance(data, dict):
        raise ConfigError(
            ["the top level must be a mapping of keys (model:, cameras:, ...)"], source
        )
    return data


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> PipelineConfig:
    """Read and validate the YAML file at ``path``.

    env: where ``${VAR}`` comes from (default ``os.environ``).
    check_files: check that weights, secret files and video files exist (``config check``
        on another machine may turn it off).
    Raises `ConfigError` listing every problem with its key path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], path) from None
    data = parse_yaml(text, str(path))
    return validate_config(
        data, base_dir=path.resolve().parent, env=env, check_files=check_files, source=str(path)
    )


def validate_config(
    data: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
    source: str | None = None,
) -> PipelineConfig:
    """Validate already parsed data (see `load_config`)."""
    secrets: set[str] = set()
    context = {
        "env": os.environ if env is None else env,
        "secrets": secrets,
        "base_dir": Path(base_dir) if base_dir is not None else None,
        "check_files": check_files,
    }
    try:
        cfg = PipelineConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc), source) from None
    cfg._secrets = cfg._secrets | frozenset(secrets) | frozenset(_file_secrets(cfg, check_files))
    return cfg


def _file_secrets(cfg: PipelineConfig, check_files: bool) -> set[str]:
    out: set[str] = set()
    files = [c.password_file for c in cfg.cameras]
    if cfg.sinks.redis is not None:
        files.append(cfg.sinks.redis.password_file)
    for f in files:
        if f is not None and check_files:
            try:
                value = read_secret_file(f)
            except OSError:
                continue
            if value:
                out.add(value)
    return out


def quick_config(
    cameras: Mapping[str, str],
    weights: str | os.PathLike[str] | None = None,
    arch: str | None = None,
    backend: str = "auto",
    redis_url: str | None = None,
    realtime: bool = True,
    metrics_port: int = DEFAULT_METRICS_PORT,
    *,
    random_weights: bool = False,
    jsonl_path: str | os.PathLike[str] | None = None,
    device: str = "auto",
    name: str = "edgestream",
    detect_fps: float | None = None,
    conf: float | None = None,
    classes: Sequence[int | str] | None = None,
    video_dir: str | os.PathLike[str] | None = None,
) -> PipelineConfig:
    """The config of ``edgestream run --camera ID=URL ... --weights FILE`` (no YAML).

    Results go to Redis when ``redis_url`` is given, to ``jsonl_path`` when given (both may
    be), else to ``runs/<name>/{camera}.jsonl`` (`default_jsonl_path`); annotated videos to
    ``video_dir`` when given. ``detect_fps`` and ``classes`` apply to every camera
    (``camera_defaults``), ``conf`` is ``model.conf_threshold``. ``${VAR}`` in urls is
    substituted from the environment. Raises `ConfigError` like `load_config`.
    """
    sinks: dict[str, Any] = {}
    if redis_url is not None:
        sinks["redis"] = {"url": redis_url}
    if jsonl_path is not None or redis_url is None:
        sinks["jsonl"] = {"path": str(jsonl_path or default_jsonl_path(name))}
    if video_dir is not None:
        sinks["video"] = {"dir": str(video_dir)}
    defaults: dict[str, Any] = {}
    if detect_fps is not None:
        defaults["detect_fps"] = detect_fps
    if classes is not None:
        defaults["classes"] = list(classes)
    model: dict[str, Any] = {"backend": backend, "device": device}
    if conf is not None:
        model["conf_threshold"] = conf
    if arch is not None:
        model["arch"] = arch
    if weights is not None:
        model["weights"] = str(weights)
    if random_weights:
        model["random_weights"] = True
    data: dict[str, Any] = {
        "name": name,
        "realtime": realtime,
        "camera_defaults": defaults,
        "cameras": [{"id": cid, "url": url} for cid, url in cameras.items()],
        "model": model,
        "sinks": sinks,
        "metrics": {"port": metrics_port},
    }
    return validate_config(data, base_dir=Path.cwd(), source="command line")


def default_jsonl_path(name: str) -> Path:
    """Where `quick_config` writes results when neither Redis nor JSONL was asked for."""
    return Path("runs") / name / "{camera}.jsonl"
