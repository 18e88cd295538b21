"""Export a YOLO-NAS model to ONNX, with or without NMS inside the graph.

Three forms, chosen by ``nms``:

``"none"`` (default, the most portable)
    input  ``images``  (B, 3, H, W) float32 RGB in [0, 1], or uint8 RGB (cast and /255 in-graph)
    output ``boxes``   (B, N, 4) float32, xyxy in input pixels
    output ``scores``  (B, N, C) float32, per-class sigmoid scores
    NMS runs outside (``stages.detect.postprocess.postprocess``), so the thresholds stay
    adjustable at run time. N = 8400 at 640x640.

``"onnx"`` (standard ONNX ops, runs on ONNX Runtime and TensorRT's ONNX parser)
    output ``num_dets``    (B, 1)          int64   valid rows per image
    output ``det_boxes``   (B, max_det, 4) float32 xyxy input pixels, zeros past num_dets
    output ``det_scores``  (B, max_det)    float32 decreasing, zeros past num_dets
    output ``det_classes`` (B, max_det)    int64   -1 past num_dets
    The graph follows the reference ``predict()`` postprocessing: with ``multi_label`` every
    (box, class) pair whose score is > ``conf`` is a candidate, else each box's best class
    only; the ``top_k`` best candidates go through class-aware NMS (``NonMaxSuppression``
    with one score row per class, so boxes of different classes never suppress each other);
    the ``max_det`` best survivors come out, best first. The thresholds are baked in.
    Differences from the torch path: ONNX's NMS keeps scores strictly above the threshold
    (the reference's single-label mode uses >=), and candidates with exactly equal scores
    may come out in another order.

``"tensorrt"`` (TensorRT only: ONNX Runtime cannot run it)
    one ``EfficientNMS_TRT`` plugin node (domain ``TRT``; TensorRT's ONNX parser dispatches
    on op_type alone and falls back to the plugin registry) on ``boxes``/``scores``:
    output ``num_dets`` (B, 1) int32, ``det_boxes`` (B, max_det, 4) float32,
    ``det_scores`` (B, max_det) float32, ``det_classes`` (B, max_det) int32.
    The plugin sorts the best 4096 scores above ``conf`` instead of applying ``top_k``, and
    always considers every class of a box (multi-label), so it can differ from the reference
    on very crowded frames.

Every export carries ``metadata_props`` (see `METADATA_KEYS`) so a backend can rebuild
`ModelInfo` and know what the graph expects. Exporting fuses a deep copy of the model: the
caller's module is never modified.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from stages.detect.postprocess_np import NMS_OUTPUTS, RAW_OUTPUTS
from stages.detect.types import NMSParams

NmsMode = Literal["none", "onnx", "tensorrt"]
InputDtype = Literal["float", "uint8"]

INPUT_NAME = "images"
TRT_DOMAIN = "TRT"

# Keys written to ModelProto.metadata_props (all values are strings).
METADATA_KEYS = (
    "edgestream_version",
    "arch",
    "num_classes",
    "class_names",  # JSON list
    "input_dtype",  # "float" | "uint8"
    "input_hw",  # JSON [H, W]
    "nms",  # "none" | "onnx" | "tensorrt"
    "nms_params",  # JSON of NMSParams baked into the graph (informative for nms="none")
    "batch",  # "dynamic" or the fixed batch size
)


class ExportError(ValueError):
    """The model or the options cannot be exported as asked."""


def edgestream_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("edgestream")
    except PackageNotFoundError:
        return "0+unknown"


class _ExportWrapper(nn.Module):
    """The graph's body: optional uint8 -> float /255, then the detector."""

    def __init__(self, model: nn.Module, uint8_input: bool) -> None:
        super().__init__()
        self.model = model
        self.uint8_input = uint8_input

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / 255.0 if self.uint8_input else images
        boxes, scores = self.model(x)
        return boxes, scores


def arch_name(model: nn.Module) -> str | None:
    """``"yolo_nas_s"``/``_m``/``_l`` for our YOLO-NAS modules, else None."""
    from stages.detect.nn import yolo_nas

    spec = getattr(model, "arch", None)
    known = {
        "yolo_nas_s": yolo_nas.YOLO_NAS_S,
        "yolo_nas_m": yolo_nas.YOLO_NAS_M,
        "yolo_nas_l": yolo_nas.YOLO_NAS_L,
    }
    return next((name for name, arch in known.items() if arch == spec), None)


def _fused_copy(model: nn.Module) -> nn.Module:
    fused = copy.deepcopy(model).cpu().float().eval()
    fuse = getattr(fused, "fuse", None)
    if callable(fuse):
        fuse()
    return fused


def export_onnx(
    model: nn.Module,
    output_path: str | Path,
    *,
    nms: NmsMode = "none",
    input_dtype: InputDtype = "float",
    dynamic_batch: bool = False,
    batch_size: int = 1,
    opset: int = 17,
    nms_params: NMSParams = NMSParams(),  # noqa: B008 - frozen dataclass, safe default
    input_hw: tuple[int, int] = (640, 640),
    class_names: list[str] | None = None,
    arch: str | None = None,
) -> Path:
    """Export ``model`` (eval-mode ``forward(x) -> (boxes, scores)``) to ``output_path``.

    dynamic_batch: a symbolic batch dimension; one file serves every batch size, at the cost
        of TensorRT needing an optimization profile and some ORT kernels picking slower paths.
        With False the graph is fixed at ``batch_size`` (backends pad/split batches to it).
    input_dtype: "uint8" moves the /255 into the graph, so callers ship 4x fewer bytes
        host->device; "float" matches the reference export.
    arch: written to the metadata; defaults to ``model.arch`` when the model has one.
    Returns the path written.
    """
    if nms not in ("none", "onnx", "tensorrt"):
        raise ExportError(f"nms must be 'none', 'onnx' or 'tensorrt', not {nms!r}")
    if input_dtype not in ("float", "uint8"):
        raise ExportError(f"input_dtype must be 'float' or 'uint8', not {input_dtype!r}")
    if batch_size < 1:
        raise ExportError(f"batch_size must be >= 1, got {batch_size}")
    if opset < 13:
        raise ExportError(f"opset {opset} is too old: the NMS graph needs >= 13")
    h, w = input_hw
    output_path = Path(output_path)

    wrapper = _ExportWrapper(_fused_copy(model), uint8_input=input_dtype == "uint8").eval()
    dtype = torch.uint8 if input_dtype == "uint8" else torch.float32
    dummy = torch.zeros((batch_size, 3, h, w), dtype=dtype)
    if input_dtype == "float":
        dummy += 0.5
    with torch.inference_mode():
        boxes, scores = wrapper(dummy)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.ndim != 3:
        raise ExportError(
            f"model must return boxes (B,N,4) and scores (B,N,C); got {tuple(boxes.shape)} "
            f"and {tuple(scores.shape)}"
        )
    num_anchors, num_classes = int(scores.shape[1]), int(scores.shape[2])
    if class_names is not None and len(class_names) != num_classes:
        raise ExportError(f"{len(class_names)} class names for a {num_classes}-class model")

    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {INPUT_NAME: {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}}
    with tempfile.TemporaryDirectory(prefix="edgestream-export-") as tmp:
        raw_path = Path(tmp) / "raw.onnx"
        _torch_export(wrapper, dummy, raw_path, opset, dynamic_axes)
        proto = onnx.load(str(raw_path))

    batch_dim: int | str = "batch" if dynamic_batch else batch_size
    if nms == "onnx":
        _append_onnx_nms(proto, num_anchors, num_classes, nms_params, batch_dim, opset)
    elif nms == "tensorrt":
        _append_trt_nms(proto, nms_params, batch_dim)

    meta = {
        "edgestream_version": edgestream_version(),
        "arch": arch or arch_name(model) or "",
        "num_classes": str(num_classes),
        "class_names": json.dumps(list(class_names or [])),
        "input_dtype": input_dtype,
        "input_hw": json.dumps([h, w]),
        "nms": nms,
        "nms_params": json.dumps(asdict(nms_params)),
        "batch": "dynamic" if dynamic_batch else str(batch_size),
    }
    onnx.helper.set_model_props(proto, meta)
    proto.producer_name = "edgestream"
    proto.producer_version = meta["edgestream_version"]

    # The checker skips custom domains it does not know (TRT), which is what we want: the
    # plugin node is validated by `tests/detect/test_export.py` instead.
    onnx.checker.check_model(proto, full_check=nms != "tensorrt")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(output_path))
    return output_path


def _torch_export(
    wrapper: nn.Module,
    dummy: torch.Tensor,
    path: Path,
    opset: int,
    dynamic_axes: dict[str, dict[int, str]] | None,
) -> None:
    """The TorchScript exporter (``dynamo=False``): the dynamo one needs onnxscript and gives
    no benefit for a static conv net."""
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=[INPUT_NAME],
        output_names=list(RAW_OUTPUTS),
        dynamic_axes=dynamic_axes,
        do_constant_folding=True,
    )


# --------------------------------------------------------------------------- graph editing


class _Builder:
    """Appends nodes and constants to a graph with unique names under one prefix."""

    def __init__(self, graph: onnx.GraphProto, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ops(
        self, op_type: str, inputs: list[str], hint: str, n_out: int, **attrs: Any
    ) -> list[str]:
        outs = [self.name(f"{hint}_out{i}") for i in range(n_out)]
        node = helper.make_node(op_type, inputs, outs, name=self.name(hint), **attrs)
        self.graph.node.append(node)
        return outs

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        return self.ops(op_type, inputs, hint, 1, **attrs)[0]


def _rename_raw_outputs(graph: onnx.GraphProto) -> tuple[str, str]:
    """Turn the graph outputs ``boxes``/``scores`` into internal tensors; return their names."""
    names = {o.name for o in graph.output}
    if set(RAW_OUTPUTS) - names:
        raise ExportError(f"exported graph lacks outputs {RAW_OUTPUTS}: {sorted(names)}")
    del graph.output[:]
    return RAW_OUTPUTS


def _set_outputs(
    graph: onnx.GraphProto, specs: list[tuple[str, str, int, list[int | str]]]
) -> None:
    """Wire (internal tensor, public name, elem type, shape) as the graph outputs."""
    for src, public, elem, shape in specs:
        if src != public:
            graph.node.append(helper.make_node("Identity", [src], [public], name=f"out/{public}"))
        graph.output.append(helper.make_tensor_value_info(public, elem, shape))


def _append_onnx_nms(
    proto: onnx.ModelProto,
    num_anchors: int,
    num_classes: int,
    p: NMSParams,
    batch_dim: int | str,
    opset: int,
) -> None:
    """Reference-style class-aware NMS with standard ONNX ops (see the module docstring)."""
    g = proto.graph
    boxes, scores = _rename_raw_outputs(g)
    b = _Builder(g, "nms")
    i64 = np.int64

    if p.multi_label:
        # Candidates are (box, class) pairs: flatten N*C and take the top_k scores.
        k = min(p.top_k, num_anchors * num_classes)
        flat = b.op("Reshape", [scores, b.const("flat_shape", np.array([0, -1], i64))], "flat")
        vals, idx = b.ops("TopK", [flat, b.const("k", np.array([k], i64))], "topk", 2)
        c = b.const("num_classes", np.array(num_classes, i64))
        box_idx = b.op("Div", [idx, c], "box_idx")
        cls = b.op("Mod", [idx, c], "cls")
    else:
        # One candidate per box: its best class.
        k = min(p.top_k, num_anchors)
        if opset >= 18:  # ReduceMax's axes became an input in opset 18
            axes = b.const("ax2", np.array([2], i64))
            best = b.op("ReduceMax", [scores, axes], "best", keepdims=0)
        else:
            best = b.op("ReduceMax", [scores], "best", axes=[2], keepdims=0)
        arg = b.op("ArgMax", [scores], "argbest", axis=2, keepdims=0)
        vals, box_idx = b.ops("TopK", [best, b.const("k", np.array([k], i64))], "topk", 2)
        cls = b.op("GatherElements", [arg, box_idx], "cls", axis=1)

    # cand_boxes[b, j] = boxes[b, box_idx[b, j]]
    box_idx_u = b.op("Unsqueeze", [box_idx, b.const("ax_last", np.array([-1], i64))], "bi_u")
    cand_boxes = b.op("GatherND", [boxes, box_idx_u], "cand_boxes", batch_dims=1)

    # Class-aware NMS: scores laid out (B, C, k) with each candidate's score in its class row
    # only (0 elsewhere, which never passes a threshold >= 0).
    ax1 = b.const("ax1", np.array([1], i64))
    cls_u = b.op("Unsqueeze", [cls, ax1], "cls_u")  # (B, 1, k)
    class_range = b.const("class_range", np.arange(num_classes, dtype=i64).reshape(1, -1, 1))
    in_class = b.op("Equal", [cls_u, class_range], "in_class")  # (B, C, k)
    vals_u = b.op("Unsqueeze", [vals, ax1], "vals_u")
    zero_f = b.const("zero_f", np.array(0.0, np.float32))
    class_scores = b.op("Where", [in_class, vals_u, zero_f], "class_scores")
    selected = b.op(
        "NonMaxSuppression",
        [
            cand_boxes,
            class_scores,
            b.const("max_per_class", np.array([p.max_det], i64)),
            b.const("iou", np.array([p.iou], np.float32)),
            b.const("conf", np.array([p.conf], np.float32)),
        ],
        "nms",
        center_point_box=0,
    )  # (M, 3): batch, class, candidate

    # Per-selection values; (batch, candidate) identifies a selection uniquely.
    bj = b.op("Gather", [selected, b.const("cols_bj", np.array([0, 2], i64))], "bj", axis=1)
    sel_b = b.op("Gather", [selected, b.const("col_b", np.array(0, i64))], "sel_b", axis=1)
    sel_scores = b.op("GatherND", [vals, bj], "sel_scores")  # (M,)
    sel_boxes = b.op("GatherND", [cand_boxes, bj], "sel_boxes")  # (M, 4)
    sel_cls = b.op("GatherND", [cls, bj], "sel_cls")  # (M,)

    # Dense (B, M) score matrix, -1 where the selection belongs to another image; padded with
    # max_det columns of -1 so a fixed-k TopK always works, even when M < max_det.
    shape = b.op("Shape", [scores], "shape")
    batch = b.op("Gather", [shape, b.const("dim0", np.array(0, i64))], "batch")
    brange = b.op(
        "Range",
        [b.const("r0", np.array(0, i64)), batch, b.const("r1", np.array(1, i64))],
        "brange",
    )
    brange_u = b.op("Unsqueeze", [brange, ax1], "brange_u")  # (B, 1)
    sel_b_u = b.op("Unsqueeze", [sel_b, b.const("ax0", np.array([0], i64))], "sel_b_u")
    mine = b.op("Equal", [sel_b_u, brange_u], "mine")  # (B, M)
    sel_scores_u = b.op("Unsqueeze", [sel_scores, b.const("ax0b", np.array([0], i64))], "ss_u")
    neg1 = b.const("neg1", np.array(-1.0, np.float32))
    dense = b.op("Where", [mine, sel_scores_u, neg1], "dense")
    dense_p = b.op(
        "Pad", [dense, b.const("pad_dense", np.array([0, 0, 0, p.max_det], i64)), neg1], "dense_p"
    )
    top_vals, top_idx = b.ops(
        "TopK", [dense_p, b.const("max_det", np.array([p.max_det], i64))], "final", 2
    )
    boxes_p = b.op(
        "Pad", [sel_boxes, b.const("pad_boxes", np.array([0, 0, p.max_det, 0], i64))], "boxes_p"
    )
    cls_p = b.op("Pad", [sel_cls, b.const("pad_cls", np.array([0, p.max_det], i64))], "cls_p")
    det_boxes_raw = b.op("Gather", [boxes_p, top_idx], "det_boxes_raw", axis=0)  # (B,max_det,4)
    det_cls_raw = b.op("Gather", [cls_p, top_idx], "det_cls_raw", axis=0)  # (B, max_det)

    valid = b.op("Greater", [top_vals, b.const("half_neg", np.array(-0.5, np.float32))], "valid")
    valid_u = b.op("Unsqueeze", [valid, b.const("ax_last2", np.array([-1], i64))], "valid_u")
    det_boxes = b.op("Where", [valid_u, det_boxes_raw, zero_f], "det_boxes")
    det_scores = b.op("Where", [valid, top_vals, zero_f], "det_scores")
    det_classes = b.op(
        "Where", [valid, det_cls_raw, b.const("neg1_i", np.array(-1, i64))], "det_classes"
    )
    valid_i = b.op("Cast", [valid], "valid_i", to=TensorProto.INT64)
    num_dets = b.op("ReduceSum", [valid_i, ax1], "num_dets", keepdims=1)

    _set_outputs(
        g,
        [
            (num_dets, "num_dets", TensorProto.INT64, [batch_dim, 1]),
            (det_boxes, "det_boxes", TensorProto.FLOAT, [batch_dim, p.max_det, 4]),
            (det_scores, "det_scores", TensorProto.FLOAT, [batch_dim, p.max_det]),
            (det_classes, "det_classes", TensorProto.INT64, [batch_dim, p.max_det]),
        ],
    )


def _append_trt_nms(proto: onnx.ModelProto, p: NMSParams, batch_dim: int | str) -> None:
    """One EfficientNMS_TRT node (TensorRT's plugin) on the raw outputs."""
    g = proto.graph
    boxes, scores = _rename_raw_outputs(g)
    node = helper.make_node(
        "EfficientNMS_TRT",
        [boxes, scores],
        list(NMS_OUTPUTS),
        name="EfficientNMS_TRT",
        domain=TRT_DOMAIN,
        plugin_version="1",
        background_class=-1,
        box_coding=0,  # BoxCorner: xyxy
        iou_threshold=float(p.iou),
        max_output_boxes=int(p.max_det),
        score_activation=0,  # scores are sigmoid already
        score_threshold=float(p.conf),
        class_agnostic=0,
    )
    g.node.append(node)
    g.output.extend(
        [
            helper.make_tensor_value_info("num_dets", TensorProto.INT32, [batch_dim, 1]),
            helper.make_tensor_value_info(
                "det_boxes", TensorProto.FLOAT, [batch_dim, p.max_det, 4]
            ),
            helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [batch_dim, p.max_det]),
            helper.make_tensor_value_info("det_classes", TensorProto.INT32, [batch_dim, p.max_det]),
        ]
    )
    if not any(o.domain == TRT_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(TRT_DOMAIN, 1))
