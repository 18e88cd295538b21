"""TensorRT engine build and on-disk cache.

A serialized TensorRT engine is only valid for the exact GPU model (compute capability),
TensorRT version and ONNX it was built from, and building one takes minutes. So every engine
is stored under a file name derived from an `EngineKey` that records all of those, next to a
JSON *sidecar* holding the key plus what the runtime needs (class names, arch, input tensor).
`lookup` decides, with a human-readable reason, whether an existing engine can be reused;
anything doubtful (a field differs, sidecar missing or corrupt, engine missing or truncated)
means "rebuild", because a rebuild costs minutes while loading a wrong engine costs a crash
or silently wrong boxes.

Writes are atomic (temporary file, fsync, ``os.replace``) and the sidecar is written *after*
the engine: the sidecar is the commit marker, so a build killed at any moment leaves either
nothing or a complete, verifiable pair.

Precision, the TensorRT 11 way: TensorRT 11 removed the weak-typing builder flags
(``BuilderFlag.FP16/INT8/...``) and the INT8 calibrators. Networks are strongly typed and the
precision comes from the ONNX itself: FP16 from ModelOpt AutoCast, INT8 from ModelOpt's Q/DQ
nodes (see `stages.detect.quantize`). TensorRT 10 still has the flags, so with a plain FP32
ONNX and ``precision="fp16"`` we fall back to ``BuilderFlag.FP16`` there. The decision is the
pure function `plan_build`, tested with fake API descriptions since TensorRT cannot be
installed on CPU machines.

Everything above the "TensorRT-specific" line is pure Python and runs anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.detect.describe import class_names_from_metadata

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8", "best"]
OnnxPrecision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "best")

SIDECAR_SCHEMA = 1
# Smallest plausible serialized engine; anything shorter is certainly not one.
MIN_ENGINE_BYTES = 1024
TRT_INSTALL_HINT = "pip install edgestream[tensorrt] on a machine with an NVIDIA GPU"


class EngineCacheError(RuntimeError):
    """An engine cannot be built or reused; the message names the cause and the fix."""


class PrecisionError(EngineCacheError):
    """The requested precision cannot be built from this ONNX with this TensorRT."""


# --------------------------------------------------------------------------------------------
# Key, file names, sidecar
# --------------------------------------------------------------------------------------------


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


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The temporary file lives in the destination folder (``os.replace`` is only atomic within
    one file system) and is removed if anything fails, a KeyboardInterrupt included.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class CacheLookup:
    """Outcome of `lookup`: ``hit`` says whether ``engine_path`` can be loaded as it is;
    otherwise ``reason`` says why it must be (re)built."""

    engine_path: Path
    hit: bool
    reason: str


def lookup(
    cache_dir: str | Path, stem: str, key: EngineKey, *, verify_hash: bool = True
) -> CacheLookup:
    """Decide whether the cached engine for ``key`` is usable.

    verify_hash: also compare the engine's sha256 with the sidecar's (reads the whole file,
        ~0.1 s for a 50 MB engine). Without it only the size is checked, which still catches
        truncation but not a same-size corruption.
    """
    path = Path(cache_dir) / key.file_name(stem)
    if not path.is_file():
        return CacheLookup(path, False, "no cached engine")
    try:
        sidecar = read_sidecar(path)
    except FileNotFoundError:
        return CacheLookup(path, False, "sidecar missing (an interrupted build?)")
    except (ValueError, OSError) as e:
        return CacheLookup(path, False, f"sidecar unreadable: {e}")
    diffs = key.differences(sidecar.key)
    if diffs:
        return CacheLookup(path, False, "key differs: " + "; ".join(diffs))
    size = path.stat().st_size
    if size != sidecar.engine_bytes or size < MIN_ENGINE_BYTES:
        return CacheLookup(
            path, False, f"engine size {size} B != recorded {sidecar.engine_bytes} B (truncated?)"
        )
    if verify_hash and file_sha256(path) != sidecar.engine_sha256:
        return CacheLookup(path, False, "engine sha256 differs from the sidecar (corrupt?)")
    return CacheLookup(path, True, "cache hit")


def cached_engine(
    cache_dir: str | Path, stem: str, key: EngineKey, *, verify_hash: bool = True
) -> Path | None:
    """The engine for ``key`` when the cache holds a valid one, else None (build it)."""
    found = lookup(cache_dir, stem, key, verify_hash=verify_hash)
    if not found.hit:
        log.info("engine cache miss for %s: %s", found.engine_path.name, found.reason)
    return found.engine_path if found.hit else None


def store_engine(
    engine_path: str | Path, engine: bytes | bytearray | memoryview, sidecar: EngineSidecar
) -> None:
    """Write engine then sidecar, both atomically. ``sidecar.engine_bytes``/``engine_sha256``
    are filled in from ``engine``."""
    data = memoryview(engine).cast("B")
    sidecar.engine_bytes = data.nbytes
    sidecar.engine_sha256 = hashlib.sha256(data).hexdigest()
    path = Path(engine_path)
    # Remove an old sidecar first: between the two writes the pair must not look valid.
    with contextlib.suppress(FileNotFoundError):
        sidecar_path(path).unlink()
    atomic_write_bytes(path, data)
    atomic_write_json(sidecar_path(path), sidecar.to_json())


def compatibility_problems(
    key: EngineKey, *, gpu_name: str, compute_capability: str, trt_version: str
) -> list[str]:
    """Why an engine built under ``key`` cannot run here (empty list: it can).

    Compute capability and TensorRT version are hard failures: TensorRT refuses such a plan
    (unless built hardware/version-compatible, which we do not do). Another GPU *name* with
    the same capability is only a tuning mismatch: see `tuning_mismatch`.
    """
    problems = []
    if key.compute_capability != compute_capability:
        problems.append(
            f"built for compute capability {key.compute_capability} ({key.gpu_name}), "
            f"this GPU is {compute_capability} ({gpu_name})"
        )
    if key.trt_version != trt_version:
        problems.append(f"built with TensorRT {key.trt_version}, installed is {trt_version}")
    return problems


def batch_profile(
    fixed_batch: int | None,
    min_batch: int = 1,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    default_max: int = 8,
) -> tuple[int, int, int]:
    """(min, opt, max) batch for the optimization profile.

    A fixed-batch ONNX (``fixed_batch`` = its batch size) can only be built at that size; an
    explicit ``max_batch`` that disagrees is an error rather than a silent surprise. A
    dynamic one gets ``min_batch..max_batch`` (default ``default_max``), tuned at
    ``opt_batch`` (default ``max_batch``).
    """
    if fixed_batch is not None:
        if max_batch not in (None, fixed_batch) or (opt_batch not in (None, fixed_batch)):
            raise EngineCacheError(
                f"the ONNX has a fixed batch of {fixed_batch}: export it with dynamic_batch=True "
                f"for a 1..{max_batch} profile"
            )
        return fixed_batch, fixed_batch, fixed_batch
    mx = default_max if max_batch is None else max_batch
    opt = mx if opt_batch is None else opt_batch
    if not 1 <= min_batch <= opt <= mx:
        raise EngineCacheError(
            f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt}, {mx}"
        )
    return min_batch, opt, mx


@contextlib.contextmanager
def build_lock(engine_path: str | Path) -> Iterator[None]:
    """Exclusive lock ``<engine>.lock`` held while building, so that several workers starting
    at once on one machine build an engine once (the others wait, then hit the cache).
    POSIX ``flock``: released by the kernel if the holder dies. No-op where unavailable."""
    path = Path(engine_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Which TensorRT API, which precision plan (pure: fed a fake module in tests)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtApi:
    """What the installed ``tensorrt`` module offers, as far as building is concerned."""

    version: str
    major: int
    has_precision_flags: bool  # BuilderFlag.FP16 / INT8 (weak typing; gone in 11)
    has_strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    strongly_typed_by_default: bool  # 11+: every network is strongly typed
    has_progress_monitor: bool  # trt.IProgressMonitor (10.0+)


def parse_major(version: str) -> int:
    head = version.strip().split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"cannot parse a TensorRT version from {version!r}")
    return int(head)


def detect_trt_api(trt: Any) -> TrtApi:
    """Describe a ``tensorrt`` module (or any object with the same attributes)."""
    version = str(getattr(trt, "__version__", "0"))
    major = parse_major(version)
    flags = getattr(trt, "BuilderFlag", None)
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    return TrtApi(
        version=version,
        major=major,
        has_precision_flags=flags is not None and hasattr(flags, "FP16"),
        has_strongly_typed_flag=creation is not None and hasattr(creation, "STRONGLY_TYPED"),
        strongly_typed_by_default=major >= 11,
        has_progress_monitor=hasattr(trt, "IProgressMonitor"),
    )


@dataclass(frozen=True)
class BuildPlan:
    """How to build: ``strongly_typed`` → pass STRONGLY_TYPED at network creation (needed on
    10.x, implicit on 11+); ``builder_flags`` → names of `trt.BuilderFlag` members to set."""

    precision: str  # the label recorded in the key
    strongly_typed: bool
    builder_flags: tuple[str, ...] = ()
    note: str = ""

    def network_flags(self, api: TrtApi) -> list[str]:
        """NetworkDefinitionCreationFlag names to pass to ``create_network``. On 11+ the
        STRONGLY_TYPED flag is deprecated and ignored, so it is not passed at all."""
        if self.strongly_typed and not api.strongly_typed_by_default:
            return ["STRONGLY_TYPED"]
        return []


AUTOCAST_HINT = (
    "convert it first: stages.detect.quantize.quantize_onnx(onnx, out, precision='fp16') "
    '(pip install "edgestream[quant]")'
)
QDQ_HINT = (
    "INT8 needs an ONNX with Q/DQ nodes: stages.detect.quantize.quantize_onnx(onnx, out, "
    "precision='int8', calib=<video or image folder>) (pip install \"edgestream[quant]\")"
)


def plan_build(requested: str, onnx_precision: str, api: TrtApi) -> BuildPlan:
    """Choose network creation flags and builder flags for ``requested`` precision.

    requested: "fp32" | "fp16" | "int8" | "best" ("best": whatever the ONNX carries, plus
        FP16 kernels where TensorRT 10 can add them without calibration).
    onnx_precision: what the ONNX carries (`onnx_precision_of`): "fp32", "fp16" (AutoCast)
        or "int8" (Q/DQ nodes, possibly with an FP16 remainder).

    Rules: a low-precision ONNX is always built strongly typed (its types are the truth, on
    10.x and 11.x alike) and cannot be "built as fp32". A plain FP32 ONNX builds as fp32
    anywhere; as fp16 only on TensorRT 10 (weak typing, BuilderFlag.FP16) — on 11 it must be
    converted with AutoCast first; as int8 never here (implicit INT8 calibration is gone in 11
    and deprecated in 10): it needs Q/DQ nodes.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if onnx_precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown ONNX precision {onnx_precision!r}")
    if api.major < 10:
        raise EngineCacheError(f"TensorRT {api.version} is too old: need 10 or newer")
    if onnx_precision != "fp32" and not (
        api.has_strongly_typed_flag or api.strongly_typed_by_default
    ):
        raise EngineCacheError(
            f"TensorRT {api.version} cannot build strongly typed networks (no STRONGLY_TYPED)"
        )

    if onnx_precision == "int8":
        if requested in ("int8", "best"):
            return BuildPlan("int8", True, note="explicit quantization (Q/DQ), strongly typed")
        raise PrecisionError(
            f"the ONNX is INT8-quantized (Q/DQ) but precision {requested!r} was requested: "
            "build from the FP32 ONNX instead, or ask for 'int8'"
        )
    if onnx_precision == "fp16":
        if requested in ("fp16", "best"):
            return BuildPlan("fp16", True, note="AutoCast mixed precision, strongly typed")
        if requested == "int8":
            raise PrecisionError(QDQ_HINT + " (this ONNX is FP16, not quantized)")
        raise PrecisionError(
            "the ONNX is FP16 (AutoCast) but precision 'fp32' was requested: build from the "
            "FP32 ONNX instead"
        )
    # plain FP32 ONNX
    if requested == "fp32":
        return BuildPlan("fp32", False, note="fp32 (TF32 allowed by TensorRT's default)")
    if requested == "int8":
        raise PrecisionError(QDQ_HINT)
    if api.has_precision_flags:  # TensorRT 10: weak typing still available
        return BuildPlan(
            "fp16", False, ("FP16",), note=f"TensorRT {api.version}: weak typing, BuilderFlag.FP16"
        )
    if requested == "best":
        return BuildPlan(
            "fp32", False, note=f"TensorRT {api.version} has no FP16 flag; ONNX is fp32, built fp32"
        )
    raise PrecisionError(
        f"TensorRT {api.version} has no FP16 builder flag (strong typing only) and this ONNX is "
        f"FP32: {AUTOCAST_HINT}"
    )


# --------------------------------------------------------------------------------------------
# ONNX inspection (onnx is a core dependency)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxFacts:
    """What the builder and the sidecar need from an ONNX file."""

    input_name: str
    input_dtype: str  # "float32" | "float16" | "uint8"
    input_shape: tuple[int | str, ...]  # dims as ints, or their symbolic names
    output_names: tuple[str, ...]
    precision: str  # "fp32" | "fp16" | "int8"
    nms: str  # "none" | "tensorrt" | "onnx"
    metadata: dict[str, str]

    @property
    def input_hw(self) -> tuple[int, int]:
        h, w = self.input_shape[2], self.input_shape[3]
        if not isinstance(h, int) or not isinstance(w, int):
            raise EngineCacheError(f"the ONNX input {self.input_name} has dynamic H/W {h}, {w}")
        return h, w

    @property
    def dynamic_batch(self) -> bool:
        return not isinstance(self.input_shape[0], int)

    @property
    def class_names(self) -> list[str]:
        return class_names_from_metadata(self.metadata)


_ONNX_DTYPES = {1: "float32", 10: "float16", 2: "uint8", 16: "bfloat16"}


def onnx_precision_of(model: Any) -> str:
    """ "int8" if the graph has QuantizeLinear/DequantizeLinear, "fp16" if it computes in
    float16 (Casts to fp16 or fp16 initializers: AutoCast's output), else "fp32"."""
    ops = {n.op_type for n in model.graph.node}
    if ops & {"QuantizeLinear", "DequantizeLinear"}:
        return "int8"
    fp16 = 10
    if any(init.data_type == fp16 for init in model.graph.initializer):
        return "fp16"
    for n in model.graph.node:
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == fp16:
                    return "fp16"
    return "fp32"


def inspect_onnx(onnx_path: str | Path) -> OnnxFacts:
    """Read names, dtypes, precision and metadata without loading external weight files."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise EngineCacheError(f"{onnx_path} is not a readable ONNX model: {e}") from e
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise EngineCacheError(
            f"{onnx_path}: expected one image input, found {[i.name for i in inputs]}"
        )
    inp = inputs[0]
    tt = inp.type.tensor_type
    dims: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim
    ]
    if len(dims) != 4:
        raise EngineCacheError(f"{onnx_path}: input {inp.name} is {len(dims)}-D, expected NCHW")
    outputs = tuple(o.name for o in model.graph.output)
    op_types = {n.op_type for n in model.graph.node}
    if "EfficientNMS_TRT" in op_types:
        nms = "tensorrt"
    elif "NonMaxSuppression" in op_types:
        nms = "onnx"
    else:
        nms = "none"
    return OnnxFacts(
        input_name=inp.name,
        input_dtype=_ONNX_DTYPES.get(tt.elem_type, f"onnx-type-{tt.elem_type}"),
        input_shape=tuple(dims),
        output_names=outputs,
        precision=onnx_precision_of(model),
        nms=nms,
        metadata={p.key: p.value for p in model.metadata_props},
    )


# --------------------------------------------------------------------------------------------
# TensorRT-specific: needs ``tensorrt`` and a GPU (exercised by tests/detect/test_tensorrt.py)
# --------------------------------------------------------------------------------------------


def tuning_mismatch(key: EngineKey, *, gpu_name: str) -> str | None:
    """A warning when the engine was tuned on another model of GPU (same capability): it
    runs correctly, but its tactics were timed on the other card. `build_engine` here would
    build (and cache) one tuned for this card, since the GPU name is part of the key."""
    if key.gpu_name != gpu_name:
        return f"engine tuned on a {key.gpu_name}, running on a {gpu_name}: rebuild for best speed"
    return None


def import_tensorrt(error: type[Exception] = EngineCacheError) -> Any:
    """``import tensorrt``, raising ``error`` with a message that says how to get it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise error(f"TensorRT is not installed: {TRT_INSTALL_HINT}") from e
    return trt


def current_gpu(device: int = 0) -> tuple[str, str]:
    """(name, "major.minor" compute capability) of CUDA device ``device`` via torch."""
    import torch

    if not torch.cuda.is_available():
        raise EngineCacheError(
            "no CUDA device: TensorRT engines need an NVIDIA GPU with a working driver "
            "(torch.cuda.is_available() is False); use the onnxruntime backend on CPU"
        )
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def make_key(
    onnx_path: str | Path,
    *,
    precision: str,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    input_hw: tuple[int, int],
    workspace_mb: int | None,
    gpu_name: str,
    compute_capability: str,
    trt_version: str,
) -> EngineKey:
    return EngineKey(
        gpu_name=gpu_name,
        compute_capability=compute_capability,
        trt_version=trt_version,
        onnx_sha256=file_sha256(onnx_path),
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        input_hw=input_hw,
        workspace_mb=workspace_mb,
    )


def default_cache_dir() -> Path:
    """``$EDGESTREAM_ENGINE_CACHE`` or ``~/.cache/edgestream/engines``."""
    env = os.environ.get("EDGESTREAM_ENGINE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "edgestream" / "engines"


def make_trt_logger(trt: Any) -> Any:
    """A `trt.ILogger` that routes TensorRT's log to ``logging`` and keeps its error lines
    (``.errors``) for exception messages. Built lazily: it subclasses a TensorRT class."""
    levels = {
        trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
        trt.ILogger.Severity.ERROR: logging.ERROR,
        trt.ILogger.Severity.WARNING: logging.WARNING,
        trt.ILogger.Severity.INFO: logging.DEBUG,
        trt.ILogger.Severity.VERBOSE: logging.DEBUG,
    }

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            logging.getLogger("tensorrt").log(level, "%s", msg)

    return Logger()


def make_progress_monitor(trt: Any) -> Any:
    """A thread-safe `trt.IProgressMonitor` drawing one tqdm bar per (nested) build phase."""
    from tqdm.auto import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._bars: dict[str, Any] = {}
            self._depth: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                self._depth[phase_name] = depth
                self._bars[phase_name] = tqdm(
                    total=num_steps,
                    desc="  " * depth + phase_name,
                    position=depth,
                    leave=depth == 0,
                )

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                self._depth.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return Monitor()


@contextlib.contextmanager
def spinner(desc: str, enabled: bool = True) -> Iterator[None]:
    """Elapsed-time spinner for work that reports no progress of its own."""
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    stop = threading.Event()
    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} elapsed")

    def tick() -> None:
        while not stop.wait(0.5):
            bar.refresh()

    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        bar.close()


def build_engine(
    onnx_path: str | Path,
    *,
    precision: str = "fp16",
    min_batch: int = 1,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    workspace_mb: int | None = None,
    cache_dir: str | Path | None = None,
    device: int = 0,
    progress: bool = True,
    force: bool = False,
    auto_convert: bool = True,
) -> Path:
    """Build (or reuse from the cache) a TensorRT engine for ``onnx_path``; return its path.

    precision: see `plan_build`. With TensorRT 11 and a plain FP32 ONNX, "fp16" needs an
        AutoCast ONNX: with ``auto_convert`` (and ModelOpt installed) it is converted into
        the cache folder first, else a `PrecisionError` says how.
    min/opt/max_batch: the optimization profile on the batch axis (see `batch_profile`).
        A larger ``max_batch`` allows bigger batches but reserves more activation memory;
        ``opt_batch`` (default: ``max_batch``) is where kernels are tuned, so set it to the
        batch you usually run. A fixed-batch ONNX builds at its own batch size.
    workspace_mb: cap on scratch memory for tactics (None: TensorRT's default, the whole
        GPU). Lower it when several engines or processes share one GPU.
    cache_dir: where engines live (default `default_cache_dir`).
    force: rebuild even on a cache hit.
    """
    trt = import_tensorrt()
    api = detect_trt_api(trt)
    gpu_name, cc = current_gpu(device)
    onnx_path = Path(onnx_path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    facts = inspect_onnx(onnx_path)

    if (
        auto_convert
        and facts.precision == "fp32"
        and precision == "fp16"
        and not api.has_precision_flags
    ):
        converted = cache / f"{onnx_path.stem}.{file_sha256(onnx_path)[:12]}.fp16.onnx"
        if not converted.is_file():
            log.info(
                "TensorRT %s needs an AutoCast FP16 ONNX: converting %s", api.version, onnx_path
            )
            from stages.detect.quantize import quantize_onnx  # needs the optional [quant] extra

            cache.mkdir(parents=True, exist_ok=True)
            quantize_onnx(onnx_path, converted, precision="fp16", progress=progress)
        onnx_path, facts = converted, inspect_onnx(converted)

    plan = plan_build(precision, facts.precision, api)
    fixed = None if facts.dynamic_batch else int(facts.input_shape[0])
    min_batch, opt_batch, max_batch = batch_profile(fixed, min_batch, opt_batch, max_batch)
    key = make_key(
        onnx_path,
        precision=plan.precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        input_hw=facts.input_hw,
        workspace_mb=workspace_mb,
        gpu_name=gpu_name,
        compute_capability=cc,
        trt_version=api.version,
    )
    found = lookup(cache, onnx_path.stem, key)
    if found.hit and not force:
        log.info("reusing TensorRT engine %s", found.engine_path)
        return found.engine_path
    log.info("engine cache: %s", found.reason)
    with build_lock(found.engine_path):
        # Another process may have built it while we waited for the lock.
        found = lookup(cache, onnx_path.stem, key)
        if found.hit and not force:
            return found.engine_path
        _build_and_store(trt, api, plan, onnx_path, facts, key, found.engine_path, device, progress)
    return found.engine_path


def _build_and_store(
    trt: Any,
    api: TrtApi,
    plan: BuildPlan,
    onnx_path: Path,
    facts: OnnxFacts,
    key: EngineKey,
    engine_path: Path,
    device: int,
    progress: bool,
) -> None:
    log.info("building TensorRT engine %s (%s)", engine_path.name, plan.note)
    t0 = time.monotonic()
    engine_bytes = _build_serialized(trt, api, plan, onnx_path, facts, key, device, progress)
    seconds = time.monotonic() - t0
    sidecar = EngineSidecar(
        key=key,
        engine_bytes=0,
        engine_sha256="",
        input_name=facts.input_name,
        input_dtype=facts.input_dtype,
        nms=facts.nms,
        arch=facts.metadata.get("arch"),
        num_classes=int(facts.metadata["num_classes"]) if "num_classes" in facts.metadata else None,
        class_names=facts.class_names,
        onnx_path=str(onnx_path),
        onnx_precision=facts.precision,
        build_plan={
            "strongly_typed": plan.strongly_typed,
            "builder_flags": list(plan.builder_flags),
        },
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        build_seconds=round(seconds, 1),
    )
    store_engine(engine_path, engine_bytes, sidecar)
    log.info("built %s in %.0f s", engine_path, seconds)


def _build_serialized(
    trt: Any,
    api: TrtApi,
    plan: BuildPlan,
    onnx_path: Path,
    facts: OnnxFacts,
    key: EngineKey,
    device: int,
    progress: bool,
) -> bytes:
    import torch

    logger = make_trt_logger(trt)
    trt.init_libnvinfer_plugins(logger, "")  # EfficientNMS_TRT lives in the plugin library
    with torch.cuda.device(device):
        torch.cuda.init()  # TensorRT shares torch's primary CUDA context
        builder = trt.Builder(logger)
        creation = 0
        for name in plan.network_flags(api):
            creation |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = builder.create_network(creation)
        parser = trt.OnnxParser(network, logger)
        # parse_from_file resolves external-data weights relative to the ONNX's folder.
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineCacheError(f"TensorRT could not parse {onnx_path}: " + "; ".join(errors))

        config = builder.create_builder_config()
        if key.workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_mb << 20)
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))

        inp = network.get_input(0)
        if inp.name != facts.input_name:
            raise EngineCacheError(f"parsed input {inp.name!r} != ONNX input {facts.input_name!r}")
        if facts.dynamic_batch:
            c, (h, w) = int(inp.shape[1]), key.input_hw
            profile = builder.create_optimization_profile()
            profile.set_shape(
                inp.name,
                (key.min_batch, c, h, w),
                (key.opt_batch, c, h, w),
                (key.max_batch, c, h, w),
            )
            config.add_optimization_profile(profile)

        monitor = None
        if progress and api.has_progress_monitor:
            monitor = make_progress_monitor(trt)
            config.progress_monitor = monitor
        ctx = spinner(f"building TensorRT engine ({plan.precision})", progress and monitor is None)
        with ctx:
            serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            detail = "; ".join(logger.errors[-5:]) or "see the TensorRT log"
            raise EngineCacheError(f"TensorRT failed to build an engine from {onnx_path}: {detail}")
        del monitor  # must outlive the build, not more
        return bytes(memoryview(serialized))
