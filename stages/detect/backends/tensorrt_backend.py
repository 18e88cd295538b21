"""TensorRT backend: runs a serialized engine (TensorRT 10 or 11) with torch-owned memory.

No pycuda: torch owns the CUDA context, the buffers and the stream. Everything that can be
allocated is allocated once, at ``max_batch``, in ``__init__``:

* a pinned (page-locked) host staging tensor for the uint8 batch, so the host-to-device copy
  is a true async DMA on our stream;
* one device tensor per engine I/O tensor. Slicing ``t[:b]`` along the batch axis keeps the
  base pointer, so tensor addresses are given to TensorRT once, and only the input *shape*
  is set again when the batch size changes;
* a private `torch.cuda.Stream`: copies, the engine and the postprocessing are ordered on it,
  and only the small results travel back.

Two output layouts are understood (`stages.detect.postprocess_np.output_layout`): a raw
export (``boxes`` (B, N, 4), ``scores`` (B, N, C)) is postprocessed on the GPU by our torch
`postprocess`; an export ending in ``EfficientNMS_TRT`` (``num_dets``, ``det_boxes``,
``det_scores``, ``det_classes``) only needs slicing — its thresholds were fixed at export
time, so ``nms_params.conf`` can only raise the score threshold here, never lower it.

The engine's sidecar JSON (written by `stages.detect.engine_cache`) gives class names and
arch, and its `EngineKey` lets us refuse, with a message that says what to do, an engine
built for another GPU or TensorRT version before TensorRT fails obscurely.

This module can only be exercised on an NVIDIA GPU with TensorRT installed
(tests/detect/test_tensorrt.py); the decisions it makes are pure functions tested anywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from stages.detect.engine_cache import (
    compatibility_problems,
    import_tensorrt,
    make_trt_logger,
    tuning_mismatch,
)
from stages.detect.engine_sidecar import MIN_ENGINE_BYTES, EngineSidecar, read_sidecar, sidecar_path
from stages.detect.postprocess_np import NMS_OUTPUTS, output_layout, slice_nms_outputs
from stages.detect.types import Detections, ModelInfo, NMSParams

log = logging.getLogger(__name__)


class TensorRTError(RuntimeError):
    """The engine cannot be loaded or run; the message says why and what to do."""


def resolve_max_batch(requested: int | None, profile_min: int, profile_max: int) -> int:
    """The batch capacity to allocate: the profile's max unless a smaller one is asked for."""
    if requested is None:
        return profile_max
    if requested < profile_min:
        raise TensorRTError(f"max_batch={requested} is below the engine's minimum {profile_min}")
    if requested > profile_max:
        raise TensorRTError(
            f"max_batch={requested} exceeds the engine's optimization profile (max "
            f"{profile_max}): rebuild the engine with max_batch={requested}"
        )
    return requested


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    for name, tdt in (("uint8", torch.uint8), ("int64", torch.int64), ("bfloat16", torch.bfloat16)):
        if hasattr(trt, name):
            table[getattr(trt, name)] = tdt
    if dtype not in table:
        raise TensorRTError(f"unsupported TensorRT tensor dtype {dtype}")
    return table[dtype]


class TensorRTBackend:
    """Run a TensorRT engine on one GPU.

    engine_path: a ``.engine`` built by `stages.detect.engine_cache.build_engine` (its
        ``.engine.json`` sidecar next to it is read when present).
    max_batch: the largest batch ``infer`` will get; defaults to the engine profile's max.
        Smaller saves device memory (buffers are sized for it).
    nms_params: thresholds for raw engines (GPU torch postprocess); for EfficientNMS engines
        only ``conf`` applies, as an extra filter.
    device: CUDA device index.
    check_compatibility: refuse an engine whose sidecar names another GPU or TensorRT version.
        Disable only if you know the engine was built hardware/version-compatible.
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        max_batch: int | None = None,
        nms_params: NMSParams | None = None,
        device: int = 0,
        check_compatibility: bool = True,
    ) -> None:
        import torch

        self.nms_params = nms_params or NMSParams()
        self.device = torch.device("cuda", device)
        self.engine_path = Path(engine_path)
        trt = import_tensorrt(TensorRTError)
        if not torch.cuda.is_available():
            raise TensorRTError(
                "no CUDA device: the TensorRT backend needs an NVIDIA GPU and driver "
                "(torch.cuda.is_available() is False); use the onnxruntime backend on CPU"
            )
        if not self.engine_path.is_file():
            raise TensorRTError(f"engine file not found: {self.engine_path}")
        data = self.engine_path.read_bytes()
        if self.engine_path.suffix == ".onnx" or len(data) < MIN_ENGINE_BYTES:
            raise TensorRTError(
                f"{self.engine_path} is not a TensorRT engine ({len(data)} bytes"
                f"{', an ONNX file' if self.engine_path.suffix == '.onnx' else ''}): build one "
                "with stages.detect.engine_cache.build_engine(onnx_path)"
            )

        self.sidecar = self._read_sidecar()
        gpu_name = torch.cuda.get_device_name(self.device)
        cc = "{}.{}".format(*torch.cuda.get_device_capability(self.device))
        if self.sidecar is not None and check_compatibility:
            problems = compatibility_problems(
                self.sidecar.key,
                gpu_name=gpu_name,
                compute_capability=cc,
                trt_version=trt.__version__,
            )
            mismatch = tuning_mismatch(self.sidecar.key, gpu_name=gpu_name)
            if mismatch and not problems:
                log.warning("%s", mismatch)
            if problems:
                raise TensorRTError(
                    f"engine {self.engine_path.name} does not match this machine: "
                    + "; ".join(problems)
                    + ". Rebuild it here (build_engine(...) reuses the cache only when the key "
                    "matches), or pass check_compatibility=False if it is hardware-compatible."
                )

        self._trt = trt
        self._logger = make_trt_logger(trt)
        trt.init_libnvinfer_plugins(self._logger, "")  # EfficientNMS_TRT
        with torch.cuda.device(self.device):
            torch.cuda.init()  # torch creates the primary context TensorRT will share
            self.stream = torch.cuda.Stream(self.device)
            self._runtime = trt.Runtime(self._logger)
            try:  # returns None on a bad plan; some versions raise instead
                engine = self._runtime.deserialize_cuda_engine(data)
            except (RuntimeError, TypeError, ValueError) as e:
                self._logger.errors.append(str(e))
                engine = None
            if engine is None:
                detail = "; ".join(self._logger.errors[-3:])
                raise TensorRTError(
                    f"TensorRT {trt.__version__} could not load {self.engine_path}: it is not an "
                    "engine, is truncated, or was built by another TensorRT version or for another "
                    f"GPU (this is a {gpu_name}, sm {cc}). Rebuild it with build_engine(). "
                    f"TensorRT said: {detail or 'nothing'}"
                )
            self._engine = engine
            self._setup_io(max_batch)
        self.info = self._model_info()
        log.info(
            "TensorRT engine %s: input %s %s, layout %s, max_batch %d",
            self.engine_path.name,
            self.input_name,
            self.input_dtype,
            self.layout,
            self.max_batch,
        )

    # -- setup ---------------------------------------------------------------------------

    def _read_sidecar(self) -> EngineSidecar | None:
        try:
            return read_sidecar(self.engine_path)
        except FileNotFoundError:
            log.warning(
                "no sidecar %s: class names unknown, GPU/TensorRT compatibility unchecked",
                sidecar_path(self.engine_path),
            )
        except (ValueError, OSError) as e:
            log.warning("ignoring unreadable sidecar: %s", e)
        return None

    def _setup_io(self, max_batch: int | None) -> None:
        import torch

        trt, engine = self._trt, self._engine
        inputs: list[str] = []
        outputs: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(
                name
            )
        if len(inputs) != 1:
            raise TensorRTError(f"expected one input tensor, the engine has {inputs}")
        self.input_name = inputs[0]
        self.output_names = tuple(outputs)
        self.layout = output_layout(outputs, TensorRTError)

        shape = tuple(engine.get_tensor_shape(self.input_name))
        if len(shape) != 4 or shape[1] != 3:
            raise TensorRTError(f"expected an NCHW RGB input, got shape {shape}")
        self.input_hw = (int(shape[2]), int(shape[3]))
        if shape[0] == -1:  # dynamic batch: read optimization profile 0
            pmin, _popt, pmax = engine.get_tensor_profile_shape(self.input_name, 0)
            self.max_batch = resolve_max_batch(max_batch, int(pmin[0]), int(pmax[0]))
            self.fixed_batch: int | None = None
        else:  # static batch: always run the engine at that size, pad smaller batches
            self.fixed_batch = int(shape[0])
            self.max_batch = resolve_max_batch(max_batch, 1, self.fixed_batch)

        self.context = engine.create_execution_context()
        if self.context is None:
            raise TensorRTError("could not create an execution context (out of GPU memory?)")
        alloc_batch = self.fixed_batch or self.max_batch
        full = (alloc_batch, 3, *self.input_hw)

        in_dtype = _torch_dtype(trt, engine.get_tensor_dtype(self.input_name))
        if in_dtype not in (torch.uint8, torch.float32, torch.float16):
            raise TensorRTError(f"unsupported input dtype {in_dtype} (uint8, float32, float16)")
        self.input_dtype = in_dtype
        self._host_u8 = torch.empty(full, dtype=torch.uint8, pin_memory=True)
        self._dev_u8 = torch.empty(full, dtype=torch.uint8, device=self.device)
        # A uint8 engine reads the staging tensor directly; a float one gets x / 255 in place.
        self._dev_in = (
            self._dev_u8
            if in_dtype == torch.uint8
            else torch.empty(full, dtype=in_dtype, device=self.device)
        )
        if not self.context.set_input_shape(self.input_name, full):
            raise TensorRTError(f"the engine rejected input shape {full}")
        self._bound_batch = alloc_batch

        self._out: dict[str, Any] = {}
        for name in outputs:
            oshape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in oshape):
                raise TensorRTError(f"output {name} has a data-dependent shape {oshape}")
            dt = _torch_dtype(trt, engine.get_tensor_dtype(name))
            self._out[name] = torch.empty(oshape, dtype=dt, device=self.device)
        # Addresses never change (slices keep the base pointer): set them once.
        self.context.set_tensor_address(self.input_name, self._dev_in.data_ptr())
        for name, t in self._out.items():
            self.context.set_tensor_address(name, t.data_ptr())
        if self.layout == "nms":  # pinned host mirrors for the four small outputs
            self._host_out = {
                n: torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                for n, t in self._out.items()
            }

    def _model_info(self) -> ModelInfo:
        sc = self.sidecar
        if sc is None:
            return ModelInfo(input_hw=self.input_hw)
        return ModelInfo(
            arch=sc.arch,
            num_classes=sc.num_classes or (len(sc.class_names) or None),
            class_names=list(sc.class_names),
            input_hw=self.input_hw,
        )

    # -- inference -----------------------------------------------------------------------

    def infer(self, batch: np.ndarray) -> list[Detections]:
        """Detect on a uint8 RGB NCHW batch of letterboxed images (B <= max_batch)."""
        import torch

        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (3, *self.input_hw):
            raise ValueError(
                f"expected uint8 (B, 3, {self.input_hw[0]}, {self.input_hw[1]}), got "
                f"{batch.dtype} {batch.shape}"
            )
        b = batch.shape[0]
        if not 1 <= b <= self.max_batch:
            raise ValueError(f"batch of {b} images; this backend takes 1..{self.max_batch}")
        run_b = self.fixed_batch or b

        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            self._host_u8[:b].copy_(torch.from_numpy(np.ascontiguousarray(batch)))
            self._dev_u8[:b].copy_(self._host_u8[:b], non_blocking=True)
            if self._dev_in is not self._dev_u8:
                self._dev_in[:b].copy_(self._dev_u8[:b]).div_(255.0)
            if run_b != self._bound_batch:
                if not self.context.set_input_shape(self.input_name, (run_b, 3, *self.input_hw)):
                    raise TensorRTError(f"the engine rejected batch size {run_b}")
                self._bound_batch = run_b
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                detail = "; ".join(self._logger.errors[-3:])
                raise TensorRTError(f"TensorRT execution failed: {detail or 'see the log'}")
            if self.layout == "raw":
                return self._postprocess_raw(b)
            return self._postprocess_nms(b)

    def _postprocess_raw(self, b: int) -> list[Detections]:
        from stages.detect.postprocess import postprocess

        boxes = self._out["boxes"][:b].float()
        scores = self._out["scores"][:b].float()
        # Runs on self.stream (current); its host copies synchronise with that stream.
        return postprocess(boxes, scores, self.nms_params)

    def _postprocess_nms(self, b: int) -> list[Detections]:
        for name in NMS_OUTPUTS:
            self._host_out[name][:b].copy_(self._out[name][:b], non_blocking=True)
        self.stream.synchronize()
        h = {n: self._host_out[n][:b].numpy() for n in NMS_OUTPUTS}
        # EfficientNMS_TRT's candidates are (box, class) pairs: multi-label thresholding
        return slice_nms_outputs(
            h["num_dets"],
            h["det_boxes"],
            h["det_scores"],
            h["det_classes"],
            self.nms_params.conf,
            multi_label=True,
        )

    def close(self) -> None:
        """Release the context, engine and buffers (idempotent)."""
        for attr in (
            "context",
            "_engine",
            "_runtime",
            "_out",
            "_host_out",
            "_dev_in",
            "_dev_u8",
            "_host_u8",
        ):
            if hasattr(self, attr):
                delattr(self, attr)

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "TensorRTBackend",
    "TensorRTError",
    "resolve_max_batch",
]
