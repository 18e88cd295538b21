"""ONNX Runtime backend: runs an edgestream export (`stages.detect.export.export_onnx`).

It adapts to what the file says about itself, so one class serves every export form:

* input ``uint8`` -> the batch goes in as is (the graph divides by 255); ``float``/``float16``
  -> converted here with `stages.detect.preprocess.to_float` (bit-identical to the reference);
* a fixed batch dimension -> the batch is split into chunks of that size and the last chunk
  padded with zeros (their results are dropped); a dynamic one -> one run per call;
* outputs ``boxes``/``scores`` (``nms="none"``) -> `stages.detect.postprocess` on zero-copy
  ``torch.from_numpy`` views when torch is installed (the reference's own top-k among exact
  ties), else its numpy twin `stages.detect.postprocess_np` (so this backend needs no torch);
  either way ``nms_params`` apply at run time; outputs ``num_dets``, ``det_boxes``,
  ``det_scores``, ``det_classes`` (``nms="onnx"``) -> sliced per image. Those thresholds were
  fixed at export time: ``nms_params.conf`` can only raise the score threshold here, and
  other differences are logged once.

Anything else (not ONNX, a TensorRT-only export, a graph whose I/O is not an edgestream
YOLO-NAS export) fails in the constructor with an `OnnxModelError` that says what was found.

Providers: CUDA first when ONNX Runtime has it, else CPU. On CPU, batching gives nothing (see
platform-facts); with the CUDA provider, inputs are still copied from host numpy each run — an
IOBinding path would save that copy and is future work.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.detect.describe import info_from_onnx_metadata
from stages.detect.postprocess_np import output_layout, postprocess_np, slice_nms_outputs
from stages.detect.preprocess import to_float
from stages.detect.types import Detections, ModelInfo, NMSParams

log = logging.getLogger(__name__)


@functools.cache
def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _postprocess(boxes: np.ndarray, scores: np.ndarray, params: NMSParams) -> list[Detections]:
    """The torch postprocessing when torch is installed, else the numpy one: the same
    detections except which of several exactly equal scores survive a top-k cut."""
    if _torch_installed():
        from stages.detect.postprocess import postprocess_numpy

        return postprocess_numpy(boxes, scores, params)
    return postprocess_np(boxes, scores, params)


_INPUT_TYPES = {"tensor(float)": "float", "tensor(uint8)": "uint8", "tensor(float16)": "float16"}


class OnnxModelError(ValueError):
    """The file is not an ONNX model this backend can run (the message says why)."""


def default_providers() -> list[str]:
    """CUDA then CPU when this onnxruntime build has CUDA; CPU otherwise."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def _explain_load_failure(path: Path, err: Exception) -> str:
    """Turn ONNX Runtime's load error into one that names the problem."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return (
            f"{path} is not an ONNX model (it does not parse as an ONNX protobuf); "
            "export one with `edgestream export`"
        )
    ops = {n.op_type for n in proto.graph.node}
    if "EfficientNMS_TRT" in ops:
        return (
            f"{path} ends in the TensorRT EfficientNMS_TRT plugin (an nms='tensorrt' export), "
            "which ONNX Runtime cannot run: build a TensorRT engine from it, or export with "
            "nms='none' or nms='onnx' for this backend"
        )
    return f"ONNX Runtime cannot load {path}: {err}"


class OnnxRuntimeBackend:
    """Run an edgestream ONNX export with ONNX Runtime.

    providers: execution providers in priority order; None picks `default_providers`.
    intra_op_threads: threads per operator (0: ONNX Runtime's default, one per core). Set it
        when several processes share the CPU, or they oversubscribe it.
    max_batch: the largest batch `infer` accepts (a fixed-batch graph is run in chunks).
    nms_params: used as is for raw exports; for in-graph NMS see the module docstring.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        max_batch: int = 8,
        nms_params: NMSParams = NMSParams(),  # noqa: B008 - frozen dataclass
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"ONNX file not found: {self.path}")
        if max_batch < 1:
            raise OnnxModelError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.nms_params = nms_params

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT warns about every unused initializer
        # Idle intra-op threads sleep instead of spinning: the model shares the cores with
        # decode and preprocess, and spinning threads took the CPU they needed (bench pipeline,
        # 12 x 720p cameras on 2 cores: 54 -> 60 frames/s published, 1.97 -> 1.59 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session: Any = ort.InferenceSession(
                str(self.path), options, providers=list(providers or default_providers())
            )
        except Exception as err:  # ORT raises its own exception types per failure kind
            raise OnnxModelError(_explain_load_failure(self.path, err)) from err

        self._setup_io()
        self._metadata: dict[str, str] = dict(
            self._session.get_modelmeta().custom_metadata_map or {}
        )
        self.info = self._model_info()
        self._graph_nms: NMSParams | None = None  # thresholds baked into an nms="onnx" graph
        self._check_nms_params()

    # ------------------------------------------------------------------ set-up

    def _setup_io(self) -> None:
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise OnnxModelError(
                f"{self.path} has {len(inputs)} inputs {[i.name for i in inputs]}; "
                "a YOLO-NAS export has one (images)"
            )
        inp = inputs[0]
        self.input_name: str = inp.name
        if inp.type not in _INPUT_TYPES:
            raise OnnxModelError(
                f"{self.path}: input {inp.name} is {inp.type}; expected float, float16 or uint8"
            )
        self.input_dtype = _INPUT_TYPES[inp.type]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise OnnxModelError(
                f"{self.path}: input {inp.name} has shape {shape}; expected (B, 3, H, W)"
            )
        if not isinstance(shape[2], int) or not isinstance(shape[3], int):
            raise OnnxModelError(f"{self.path}: input H/W must be fixed, got {shape[2:]}")
        self.input_hw: tuple[int, int] = (shape[2], shape[3])
        self.fixed_batch: int | None = shape[0] if isinstance(shape[0], int) else None

        self.output_names: list[str] = [o.name for o in self._session.get_outputs()]
        self.layout = output_layout(self.output_names, OnnxModelError)
        if self.layout == "raw":
            by_name = {o.name: o for o in self._session.get_outputs()}
            b_shape, s_shape = by_name["boxes"].shape, by_name["scores"].shape
            four = b_shape[-1] == 4 or not isinstance(b_shape[-1], int)  # or symbolic
            if len(b_shape) != 3 or not four or len(s_shape) != 3:
                raise OnnxModelError(
                    f"{self.path}: boxes {b_shape} / scores {s_shape}; expected (B, N, 4) and "
                    "(B, N, C)"
                )
            self._num_classes_from_graph = s_shape[-1] if isinstance(s_shape[-1], int) else None
        else:
            self._num_classes_from_graph = None

    def _model_info(self) -> ModelInfo:
        info = info_from_onnx_metadata(
            self._metadata, input_hw=self.input_hw, num_classes=self._num_classes_from_graph
        )
        info.nms = "none" if self.layout == "raw" else "onnx"
        return info

    def _check_nms_params(self) -> None:
        if self.layout != "nms":
            return
        try:
            self._graph_nms = NMSParams(**json.loads(self._metadata["nms_params"]))
        except (KeyError, TypeError, json.JSONDecodeError):
            log.warning("%s: in-graph NMS, thresholds unknown (no nms_params metadata)", self.path)
            return
        g, p = self._graph_nms, self.nms_params
        if (g.iou, g.multi_label, g.top_k, g.max_det) != (p.iou, p.multi_label, p.top_k, p.max_det):
            log.warning(
                "%s: NMS is inside the graph with %s; only conf can be raised at run time, "
                "asked for %s",
                self.path,
                g,
                p,
            )
        if p.conf < g.conf:
            log.warning(
                "%s: conf=%s is below the graph's %s: detections under %s are already gone",
                self.path,
                p.conf,
                g.conf,
                g.conf,
            )

    # ------------------------------------------------------------------ inference

    def infer(self, batch: np.ndarray) -> list[Detections]:
        """Detections per image, in model-input pixels, for a uint8 (B, 3, H, W) RGB batch."""
        return self.detections(self.outputs(batch))

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's outputs by name, before any postprocessing, for a uint8 (B, 3, H, W)
        RGB batch (a fixed-batch graph runs in chunks; rows of padding are dropped)."""
        h, w = self.input_hw
        if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4:
            raise ValueError(
                f"expected a uint8 (B, 3, {h}, {w}) numpy batch, got {type(batch).__name__} "
                f"{getattr(batch, 'dtype', '')} {getattr(batch, 'shape', '')}"
            )
        if tuple(batch.shape[1:]) != (3, h, w):
            raise ValueError(f"expected (B, 3, {h}, {w}) images, got {batch.shape}")
        b = int(batch.shape[0])
        if not 1 <= b <= self.max_batch:
            raise ValueError(f"batch of {b} images; this backend takes 1..{self.max_batch}")
        step = self.fixed_batch or b
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, b, step):
            chunk = batch[start : start + step]
            n = chunk.shape[0]
            if n < step:  # a fixed-batch graph: pad with black images, drop their results
                pad = np.zeros((step - n, *chunk.shape[1:]), np.uint8)
                chunk = np.concatenate([chunk, pad])
            parts.append({k: v[:n] for k, v in self._run(chunk).items()})
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([part[k] for part in parts]) for k in self.output_names}

    def detections(self, outputs: dict[str, np.ndarray]) -> list[Detections]:
        """Detections per image from `outputs`: postprocessed with ``nms_params`` (raw
        export) or sliced (in-graph NMS)."""
        if self.layout == "raw":
            return _postprocess(outputs["boxes"], outputs["scores"], self.nms_params)
        return self._slice_nms(outputs)

    def _run(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        x: np.ndarray
        if self.input_dtype == "uint8":
            x = np.ascontiguousarray(chunk)
        elif self.input_dtype == "float16":
            x = to_float(chunk).astype(np.float16)
        else:
            x = to_float(chunk)
        return dict(
            zip(self.output_names, self._session.run(None, {self.input_name: x}), strict=True)
        )

    def _slice_nms(self, outputs: dict[str, np.ndarray]) -> list[Detections]:
        # the graph's own mode decides > or >= (see `passes_conf`); the asked one if unknown
        multi_label = (self._graph_nms or self.nms_params).multi_label
        return slice_nms_outputs(
            outputs["num_dets"],
            outputs["det_boxes"],
            outputs["det_scores"],
            outputs["det_classes"],
            self.nms_params.conf,
            multi_label,
        )

    def close(self) -> None:
        """Release the session (idempotent)."""
        self._session = None

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
