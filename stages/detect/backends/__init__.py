"""Inference backends and the one function that picks and opens one.

Every backend implements `stages.detect.types.Backend`: ``infer(uint8 batch) ->
list[Detections]`` in model-input pixels. Heavy imports (torch model code, onnxruntime,
tensorrt) happen inside `open_backend`, so importing this package costs nothing and a machine
without TensorRT can still use the other two.

Which one to use:

* ``torch``: weights files (.pt/.pth/.safetensors), CPU or CUDA; no export step; slowest on GPU
  without ``cuda_graphs``.
* ``onnxruntime``: an `export_onnx` file (.onnx); the fastest CPU path; CUDA provider when the
  onnxruntime-gpu build is installed.
* ``tensorrt``: a serialized engine (.engine/.plan/.trt) built from an export; the fastest on
  NVIDIA.
* ``auto``: by file suffix (`backend_for_path`): .onnx -> onnxruntime, .engine/.plan/.trt ->
  tensorrt, else torch. `stages.detect.describe.describe` tells what a file really holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from stages.detect.describe import backend_for_path, config_mismatch
from stages.detect.types import Backend, NMSParams

__all__ = ["BackendError", "BackendName", "backend_for_path", "open_backend"]

BackendName = Literal["auto", "torch", "onnxruntime", "tensorrt"]


class BackendError(ValueError):
    """The backend asked for cannot open these weights as configured."""


def _ort_providers(device: str) -> list[str]:
    if device.startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise BackendError(f"device must be 'cpu' or 'cuda[:N]', not {device!r}")


def _check_classes(backend: Backend, arch: str | None, num_classes: int | None) -> None:
    """Refuse a file that contradicts the configuration (arch or class count)."""
    problem = config_mismatch(backend.info, arch=arch, num_classes=num_classes)
    if problem is not None:
        backend.close()
        raise BackendError(problem)


def open_backend(
    name: BackendName,
    weights: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    device: str = "cpu",
    max_batch: int = 8,
    nms_params: NMSParams = NMSParams(),  # noqa: B008 - frozen dataclass
    threads: int = 0,
    half: bool = False,
) -> Backend:
    """Open ``weights`` with the named backend (see the module docstring for ``auto``).

    arch / num_classes: what the configuration expects; the torch backend builds the model
        from them when the file does not say, the others check the file agrees.
    device: "cpu" or "cuda[:N]". threads: intra-op CPU threads (0: library default).
    half: FP16 (torch on CUDA only; ONNX/TensorRT precision comes from the file).
    """
    weights = Path(weights)
    if name == "auto":
        name = backend_for_path(weights)
    if name == "torch":
        import torch

        from stages.detect.backends.torch_backend import TorchBackend
        from stages.detect.weights import load_model

        if threads > 0:
            torch.set_num_threads(threads)
        model, info = load_model(weights, arch=arch, num_classes=num_classes)
        return TorchBackend(
            model, device=device, half=half, max_batch=max_batch, nms_params=nms_params, info=info
        )
    elif name == "onnxruntime":
        from stages.detect.backends.onnxruntime_backend import OnnxRuntimeBackend

        if half:
            raise BackendError("half=True is for the torch backend; export an FP16 ONNX instead")
        backend: Backend = OnnxRuntimeBackend(
            weights,
            providers=_ort_providers(device),
            intra_op_threads=threads,
            max_batch=max_batch,
            nms_params=nms_params,
        )
        _check_classes(backend, arch, num_classes)
        return backend
    elif name == "tensorrt":
        from stages.detect.backends.tensorrt_backend import TensorRTBackend

        index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
        backend = TensorRTBackend(weights, max_batch=max_batch, nms_params=nms_params, device=index)
        _check_classes(backend, arch, num_classes)
        return backend
    raise BackendError(f"unknown backend {name!r}: torch, onnxruntime, tensorrt or auto")
