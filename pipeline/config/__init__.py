"""The pipeline configuration: one YAML file validated by pydantic v2 models.

The package, one module per concern (each well under 400 lines):

* `base`: errors, ``${VAR}`` substitution, paths, the strict base model, shared names;
* `errors`: pydantic errors as ``key.path: message`` lines (did-you-mean hints);
* `runtime`: transport (edges, CURVE), metrics, logging;
* `cameras`: what every camera inherits (the decode stage's `DecodeSettings` and the later
  stages' per-camera settings), an entry of `cameras`, their merge;
* `pipeline`: `PipelineConfig`, every section together (the stages' own models:
  `stages.detect.config`, `stages.track.config`, `stages.sinks.config`), cross-checks, secrets;
* `loading`: `load_config`, `validate_config`, `quick_config`.

`cameras`, `pipeline` and `loading` import the stages' config models; they are loaded on first
use of their names (`PipelineConfig`, `load_config`...), so ``import pipeline.config`` loads no
stage.

Every model forbids unknown keys, every field says its unit and bounds. Read a file with
`load_config`; build one without YAML with `quick_config` (``edgestream run --camera ...``).

Rules the loader enforces, and why:

* **Unknown keys** are errors, reported with their path and the closest known key
  (``cameras[0].stal_timeout_s: unknown key (did you mean 'stall_timeout_s'?)``): a typo
  that silently falls back to a default is the worst kind of config bug.
* **Every problem at once**: a `ConfigError` lists each one as ``key.path: message``.
  Problems that involve several keys (duplicate camera ids, a remote stage's edge left on
  ``auto``, a sink stage with no sink) are checked once every key is valid on its own.
* **Secrets** never sit in the file. A string field may contain ``${VAR}`` (or
  ``${VAR:-default}``; ``$$`` is a literal ``$``), replaced from the environment when the file
  is loaded; a missing variable is an error naming the key path and the variable. Number and
  boolean fields take no substitution (a port from the environment would turn a typo into a
  runtime surprise). Files mounted from a secret store go in ``*_file`` fields. Errors never
  quote a value that could be a secret, and `PipelineConfig.redacted_dump` masks URL
  passwords, password fields and the values of secret-looking variables (name containing
  PASS, SECRET, TOKEN, KEY, CRED or AUTH) for logging.
* **Relative paths** (weights, secret files, file cameras, sink outputs) are relative to the
  directory of the YAML file, like docker compose, so ``configs/offline.yaml`` runs from any
  working directory.
* **Per-camera overrides**: ``camera_defaults`` holds every decode setting; an entry of
  ``cameras`` may set any of them again for itself. `PipelineConfig.camera` returns the merge
  (``options`` dicts are merged key by key, everything else is replaced).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.config.base import (
    ARCH_NAMES,
    CAMERA_ID_PATTERN,
    EDGES,
    STAGES,
    Arch,
    ConfigError,
    ConfigProblems,
    EdgeName,
    EnvPath,
    EnvStr,
    ExistingFile,
    StageName,
    WeightsFile,
    expand_env,
    read_secret_file,
    resolve_device,
)
from pipeline.config.errors import format_errors
from pipeline.config.runtime import (
    DEFAULT_METRICS_PORT,
    CurveConfig,
    EdgeConfig,
    EdgesConfig,
    LoggingConfig,
    MetricsConfig,
    TransportConfig,
    parse_endpoint,
)

if TYPE_CHECKING:
    from pipeline.config.cameras import (
        CameraDefaults,
        CameraEntry,
        CameraSettings,
        camera_url_with_password,
        parse_camera_arg,
        url_kind,
    )
    from pipeline.config.loading import (
        default_jsonl_path,
        load_config,
        parse_yaml,
        quick_config,
        validate_config,
    )
    from pipeline.config.pipeline import PipelineConfig, TrackerSection
    from stages.detect.config import BatchingConfig, ModelConfig, PreprocessConfig
    from stages.sinks.config import JsonlSinkConfig, SinksConfig, VideoSection
    from stages.sinks.redis.config import RedisSinkConfig

# The composed config imports the stages' config models: loaded on first use, so importing
# `pipeline.config` (the runtime core does) loads no stage.
_COMPOSED = {
    "ModelConfig": "stages.detect.config",
    "BatchingConfig": "stages.detect.config",
    "PreprocessConfig": "stages.detect.config",
    "CameraDefaults": "pipeline.config.cameras",
    "CameraEntry": "pipeline.config.cameras",
    "CameraSettings": "pipeline.config.cameras",
    "camera_url_with_password": "pipeline.config.cameras",
    "parse_camera_arg": "pipeline.config.cameras",
    "url_kind": "pipeline.config.cameras",
    "PipelineConfig": "pipeline.config.pipeline",
    "TrackerSection": "pipeline.config.pipeline",
    "load_config": "pipeline.config.loading",
    "parse_yaml": "pipeline.config.loading",
    "quick_config": "pipeline.config.loading",
    "validate_config": "pipeline.config.loading",
    "default_jsonl_path": "pipeline.config.loading",
    "SinksConfig": "stages.sinks.config",
    "JsonlSinkConfig": "stages.sinks.config",
    "VideoSection": "stages.sinks.config",
    "RedisSinkConfig": "stages.sinks.redis.config",
}


def __getattr__(name: str) -> Any:
    module = _COMPOSED.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ARCH_NAMES",
    "CAMERA_ID_PATTERN",
    "DEFAULT_METRICS_PORT",
    "EDGES",
    "STAGES",
    "Arch",
    "BatchingConfig",
    "CameraDefaults",
    "CameraEntry",
    "CameraSettings",
    "ConfigError",
    "ConfigProblems",
    "CurveConfig",
    "EdgeConfig",
    "EdgeName",
    "EdgesConfig",
    "EnvPath",
    "EnvStr",
    "ExistingFile",
    "JsonlSinkConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "PipelineConfig",
    "PreprocessConfig",
    "RedisSinkConfig",
    "SinksConfig",
    "StageName",
    "TrackerSection",
    "TransportConfig",
    "VideoSection",
    "WeightsFile",
    "camera_url_with_password",
    "default_jsonl_path",
    "entry",
    "expand_env",
    "exporter",
    "format_errors",
    "load_config",
    "parse_camera_arg",
    "parse_endpoint",
    "parse_yaml",
    "quick_config",
    "read_secret_file",
    "resolve_device",
    "url_kind",
    "validate_config",
]
