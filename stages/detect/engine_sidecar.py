"""A TensorRT engine's key and its JSON sidecar (the data half of `stages.detect.engine_cache`).

An engine is stored under a file name derived from its `EngineKey` (GPU, TensorRT version, ONNX
hash, precision, batch profile), next to a sidecar that records the key plus what the runtime
needs (class names, arch, input tensor). Pure Python, no TensorRT: `stages.detect.describe`
reads sidecars without pulling in the engine builder, and the builder (`engine_cache`) and the
runtime (`backends.tensorrt_backend`) share these types.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "best")

SIDECAR_SCHEMA = 1
# Smallest plausible serialized engine; anything shorter is certainly not one.
MIN_ENGINE_BYTES = 1024


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two builds with equal keys are interchangeable.

    gpu_name / compute_capability: engines are compiled for one GPU architecture (and tuned
        for one model); the capability is the hard constraint, the name the tuning one.
    trt_version: a plan serialized by one TensorRT version does not load in another.
    onnx_sha256: the exact graph and weights (its precision, input dtype and NMS included).
    precision: the requested precision label ("fp32", "fp16", "int8"); with TensorRT 10 the
        same FP32 ONNX gives different engines for "fp32" and "fp16".
    min/opt/max_batch: the optimization profile; TensorRT tunes kernels for ``opt_batch``.
    input_hw: model input height, width.
    workspace_mb: builder workspace cap (None = TensorRT's default, the whole GPU); it can
        change which tactics are chosen, hence part of the key.
    """

    gpu_name: str
    compute_capability: str  # "8.9"
    trt_version: str
    onnx_sha256: str
    precision: str
    min_batch: int
    opt_batch: int
    max_batch: int
    input_hw: tuple[int, int]
    workspace_mb: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                "need 1 <= min_batch <= opt_batch <= max_batch, got "
                f"{self.min_batch}, {self.opt_batch}, {self.max_batch}"
            )
        if len(self.input_hw) != 2 or min(self.input_hw) <= 0:
            raise ValueError(f"input_hw must be (height, width) > 0, got {self.input_hw}")
        if self.workspace_mb is not None and self.workspace_mb <= 0:
            raise ValueError(f"workspace_mb must be > 0 or None, got {self.workspace_mb}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> EngineKey:
        """Inverse of `to_json`; raises ValueError/TypeError/KeyError on a malformed dict."""
        fields = dict(d)
        fields["input_hw"] = tuple(int(v) for v in fields["input_hw"])
        known = set(EngineKey.__dataclass_fields__)
        unknown = set(fields) - known
        if unknown:
            raise ValueError(f"unknown EngineKey fields {sorted(unknown)}")
        return EngineKey(**fields)

    def digest(self) -> str:
        """sha256 of the canonical JSON form (sorted keys): stable across runs and machines."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def file_name(self, stem: str) -> str:
        """``<onnx-stem>.<precision>.<12 hex of digest>.engine`` — readable and unique."""
        return f"{stem}.{self.precision}.{self.digest()[:12]}.engine"

    def differences(self, other: EngineKey) -> list[str]:
        """Fields that differ, as ``"name: mine != theirs"`` lines (empty when equal)."""
        a, b = self.to_json(), other.to_json()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]


def sidecar_path(engine_path: str | Path) -> Path:
    """The JSON that describes ``x.engine`` is ``x.engine.json`` (same folder)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


@dataclass
class EngineSidecar:
    """What is written next to an engine. ``engine_bytes``/``engine_sha256`` detect a
    truncated or replaced engine file; the rest is for the runtime and for humans."""

    key: EngineKey
    engine_bytes: int
    engine_sha256: str
    input_name: str = "images"
    input_dtype: str = "float32"  # "float32" | "float16" | "uint8"
    nms: str = "none"  # "none" (raw boxes/scores) | "tensorrt" (EfficientNMS_TRT outputs)
    arch: str | None = None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    onnx_path: str | None = None
    onnx_precision: str | None = None  # what the ONNX itself carried: fp32 | fp16 | int8
    build_plan: dict[str, Any] = field(default_factory=dict)
    built_at: str = ""  # ISO-8601 UTC
    build_seconds: float = 0.0
    schema: int = SIDECAR_SCHEMA

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.key.to_json()
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> EngineSidecar:
        if d.get("schema") != SIDECAR_SCHEMA:
            raise ValueError(f"sidecar schema {d.get('schema')!r}, expected {SIDECAR_SCHEMA}")
        fields = dict(d)
        fields["key"] = EngineKey.from_json(fields["key"])
        return EngineSidecar(**fields)


def read_sidecar(engine_path: str | Path) -> EngineSidecar:
    """Load and validate the sidecar of ``engine_path``.

    Raises FileNotFoundError when absent and ValueError (with the reason) when unreadable.
    """
    path = sidecar_path(engine_path)
    text = path.read_text(encoding="utf-8")
    try:
        return EngineSidecar.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"corrupt engine sidecar {path}: {e}") from e
