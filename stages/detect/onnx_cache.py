"""PyTorch checkpoints on the CPU run as their ONNX export on ONNX Runtime (~2.5x faster
than PyTorch there, same detections): the export is made once and cached by the checkpoint's
hash (`onnx_for_cpu`), or shipped beside the checkpoint (`shipped_onnx`). `cpu_onnx` is the one
decision `edgestream run` (`pipeline.procs.cpu_onnx_config`) and `edgestream demo` share.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SOURCE_SHA256_KEY = "source_sha256"
"""ONNX metadata key of a shipped export: the sha256 of the weights file it was exported from."""
TORCH_SUFFIXES = (".pth", ".pt", ".safetensors")


def default_cache_dir() -> Path:
    """Where `edgestream run` keeps CPU exports: ``$XDG_CACHE_HOME/edgestream/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgestream" / "onnx"


def onnx_for_cpu(weights: Path, cache_dir: Path) -> Path:
    """The ONNX export of PyTorch ``weights`` (input size and class names from the file),
    made once and kept in ``cache_dir`` under a name that carries the weights' hash and
    edgestream's version. On the CPU ONNX Runtime runs the demo model ~2.5x faster than
    PyTorch (19 vs 48 ms per image here) with the same detections (tests/demo)."""
    from stages.detect.engine_cache import file_sha256
    from stages.detect.export import edgestream_version, export_onnx
    from stages.detect.weights import load_model

    digest = file_sha256(weights)[:16]
    version = "".join(c if c.isalnum() or c in ".-" else "_" for c in edgestream_version())
    target = cache_dir / f"{weights.stem}-{digest}-{version}.onnx"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    model, info = load_model(weights)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        export_onnx(model, tmp, class_names=info.class_names or None, input_hw=info.input_hw)
        os.replace(tmp, target)  # atomic: a concurrent demo never sees half a file
    finally:
        tmp.unlink(missing_ok=True)
    return target


def shipped_onnx(weights: Path) -> Path | None:
    """The ONNX export shipped beside ``weights`` (same name, ``.onnx``) when its metadata says
    it was exported from this very file (`write_shipped_onnx`), else None. It lets the lean
    install (no torch) run the packaged demo model; a stale export is ignored, never run."""
    path = weights.with_suffix(".onnx")
    if weights.suffix.lower() == ".onnx" or not path.is_file():
        return None
    import onnx

    from stages.detect.engine_cache import file_sha256

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return path if meta.get(SOURCE_SHA256_KEY) == file_sha256(weights) else None


@dataclass(frozen=True)
class CpuOnnx:
    """What `cpu_onnx` decided. path: the ONNX file to run on ONNX Runtime (None: run
    ``weights`` as given); note: one line for the start-up log (empty when nothing to say)."""

    path: Path | None
    note: str = ""


def cpu_onnx(weights: Path | None, backend: str, device: str, cache_dir: Path) -> CpuOnnx:
    """With ``backend`` auto on the CPU, PyTorch ``weights`` run as their ONNX export (the one
    shipped beside them, else the cached export, made now if missing); anything else runs as
    given. Without torch only a shipped export can run: `MissingExtraError` otherwise. An
    export that fails falls back to PyTorch, saying why."""
    from pipeline.config import resolve_device
    from pipeline.extras import MissingExtraError, has_module

    if weights is None or backend != "auto" or weights.suffix.lower() not in TORCH_SUFFIXES:
        return CpuOnnx(None)
    no_torch = not has_module("torch")
    if (resolve_device(device) != "cpu" and not no_torch) or not has_module("onnxruntime"):
        return CpuOnnx(None)
    shipped = shipped_onnx(weights)
    if shipped is not None:  # the lean install's path: no torch, no export
        return CpuOnnx(shipped, f"{weights.name} runs on ONNX Runtime as {shipped}")
    if no_torch:
        raise MissingExtraError("torch", f"running {weights.name} (no ONNX export beside it)")
    try:
        path = onnx_for_cpu(weights, cache_dir)
    except Exception as e:  # the PyTorch backend still works: say why, run on
        return CpuOnnx(None, f"could not export {weights.name} to ONNX ({e}); running it "
                       "with PyTorch")  # fmt: skip
    return CpuOnnx(
        path,
        f"{weights.name} on the CPU runs on ONNX Runtime as its cached export {path} "
        "(model.backend: torch runs PyTorch instead)",
    )
