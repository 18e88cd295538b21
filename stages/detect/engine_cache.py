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

Everything above the "TensorRT-specific" line is pure Python and runs anywhere. The key and
sidecar types are in `stages.detect.engine_sidecar`, the ONNX inspection in
`stages.detect.onnx_facts`: `describe` and `quantize` use those without importing this module.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stages.detect.engine_sidecar import (
    MIN_ENGINE_BYTES,
    PRECISIONS,
    EngineKey,
    EngineSidecar,
    read_sidecar,
    sidecar_path,
)
from stages.detect.onnx_facts import EngineCacheError, OnnxFacts, inspect_onnx
from stages.detect.progress import spinner

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8", "best"]
OnnxPrecision = Literal["fp32", "fp16", "int8"]
TRT_INSTALL_HINT = "pip install edgestream[tensorrt] on a machine with an NVIDIA GPU"


class PrecisionError(EngineCacheError):
    """The requested precision cannot be built from this ONNX with this TensorRT."""


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
    onnx_precision: what the ONNX carries (`onnx_facts.onnx_precision_of`): "fp32", "fp16"
        (AutoCast) or "int8" (Q/DQ nodes, possibly with an FP16 remainder).

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
