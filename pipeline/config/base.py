"""Shared pieces of the configuration models.

Errors, ``${VAR}`` substitution, paths, the strict base model, the names of stages and edges.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
)

from pipeline.redact import REDACTED, redact_url

# The names of stages.detect.nn.ARCHS, spelled out so that validating a config does not import
# torch (a test checks they agree).
ARCH_NAMES = ("yolo_nas_n", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l")


Arch = Literal["yolo_nas_n", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l"]


StageName = Literal["decode", "preprocess", "detect", "track", "sink"]


STAGES: tuple[StageName, ...] = ("decode", "preprocess", "detect", "track", "sink")


EdgeName = Literal["frames", "items", "detections", "tracked"]


EDGES: dict[EdgeName, tuple[StageName, StageName]] = {
    "frames": ("decode", "preprocess"),
    "items": ("preprocess", "detect"),
    "detections": ("detect", "track"),
    "tracked": ("track", "sink"),
}


CAMERA_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"


_SECRET_VAR = re.compile(r"PASS|SECRET|TOKEN|KEY|CRED|AUTH", re.IGNORECASE)


_SECRET_FIELD = re.compile(r"(^|_)(password|passwd|secret|token|api_key)$", re.IGNORECASE)


_ENV_REF = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$\{")


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_SECRET_QUERY_KEY = re.compile(
    r"^(password|passwd|pwd|pass|token|auth|key|secret|signature)$", re.IGNORECASE
)


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` holds one ``path: message`` each."""

    def __init__(self, problems: list[str], source: str | os.PathLike[str] | None = None) -> None:
        self.problems = list(problems)
        self.source = str(source) if source is not None else None
        where = f" in {self.source}" if self.source else ""
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''}{where}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class ConfigProblems(ValueError):
    """Raised inside validators to report several problems, each at its own relative path."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_path_str(p)}: {m}" for p, m in problems))


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def expand_env(text: str, env: Mapping[str, str], secrets: set[str] | None = None) -> str:
    """``${VAR}`` / ``${VAR:-default}`` replaced from ``env``; ``$$`` is a literal ``$``.

    Raises ValueError naming the variable (never its value) when it is unset or the reference
    is malformed. Values of secret-looking variables are added to ``secrets``.
    """

    def sub(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$$":
            return "$"
        body = m.group("body")
        if body is None:
            raise ValueError("'${' without a closing '}' (write $$ for a literal $)")
        name, sep, default = body.partition(":-")
        if not _ENV_NAME.match(name):
            raise ValueError(f"${{{body}}} is not a valid variable reference")
        value = env.get(name)
        if value is None or (sep and value == ""):
            if sep:
                return default
            raise ValueError(f"environment variable {name} is not set")
        if secrets is not None and _SECRET_VAR.search(name) and value:
            secrets.add(value)
        return value

    return _ENV_REF.sub(sub, text)


def _expand(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str) or "$" not in value:
        return value
    ctx = _context(info)
    env = ctx.get("env", os.environ)
    return expand_env(value, env, ctx.get("secrets"))


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = _context(info).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(os.path.normpath(Path(base) / value))
    return value


def _check_files(info: ValidationInfo) -> bool:
    return bool(_context(info).get("check_files", True))


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    value = _resolve_path(value, info)
    if _check_files(info) and not value.is_file():
        raise ValueError(
            f"file not found: {value}" if not value.exists() else f"not a file: {value}"
        )
    return value


EnvStr = Annotated[str, BeforeValidator(_expand)]
"""A string in which ``${VAR}`` is substituted."""


EnvPath = Annotated[Path, BeforeValidator(_expand), AfterValidator(_resolve_path)]
"""A path (``${VAR}`` substituted, relative to the config file's directory)."""


ExistingFile = Annotated[Path, BeforeValidator(_expand), AfterValidator(_existing_file)]
"""A path that must name an existing file (checked when the config is loaded)."""


def _weights_file(value: Path, info: ValidationInfo) -> Path:
    """A weights path, or a known/cached model's name (`pipeline.models_registry`)."""
    from pipeline.models_registry import resolve_weights

    if _check_files(info):
        base = _context(info).get("base_dir")
        value = resolve_weights(value, None if base is None else Path(base))
    return _existing_file(value, info)


WeightsFile = Annotated[Path, BeforeValidator(_expand), AfterValidator(_weights_file)]
"""An existing weights file, or the name of a model `edgestream models pull` cached."""


class StrictModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=False, hide_input_in_errors=True
    )

    def __repr_args__(self) -> Any:
        # repr() and str() end up in logs and tracebacks: never show a credential there.
        for name, value in super().__repr_args__():
            if isinstance(value, str):
                secret = name is not None and _SECRET_FIELD.search(name) and value
                value = REDACTED if secret else redact_url(value)
            yield name, value


def _env_var_set(value: str, info: ValidationInfo) -> str:
    ctx = _context(info)
    env = ctx.get("env", os.environ)
    if not _ENV_NAME.match(value):
        raise ValueError("must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    if value not in env:
        raise ValueError(f"environment variable {value} is not set")
    secret = env[value]
    if secret and ctx.get("secrets") is not None:
        ctx["secrets"].add(secret)
    return value


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """A secret file's content with the trailing newline stripped."""
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def _path_str(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; others unchanged."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
