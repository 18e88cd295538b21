"""YOLO-NAS postprocessing in numpy: `stages.detect.postprocess` without torch.

ONNX Runtime and TensorRT hand back host arrays; on the lean install (no torch) this module is
their postprocessing. It follows the torch CPU path of `stages.detect.postprocess` operation for
operation (same thresholds in float32, same stable descending order, same class offsets and
float32 IoU in the same greedy sweep), so both give the same detections; tests/detect checks
that on random and real model outputs. The one freedom: when more than ``top_k`` candidates
survive the threshold and several have exactly the score at the cut, ``torch.topk`` may pick
others among those equals than the stable sort here (the reference itself does not define it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from stages.detect.types import Detections, NMSParams

VANILLA_NUMEL_CPU = 4000
"""torchvision 0.29 switches to per-class NMS above this many box coordinates on the CPU."""


def float32_threshold(threshold: float) -> float:
    """The largest float32 t with ``x > t  <=>  x > threshold`` for every float32 x.

    torchvision compares a float32 IoU with a double threshold; comparing in float32 against a
    threshold that rounded *up* would drop boxes with IoU equal to that float32 value.
    """
    t = np.float32(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


def greedy_rows_cpu(
    boxes: np.ndarray, thr: float, classes: np.ndarray | None, block: int = 64
) -> np.ndarray:
    """Greedy NMS on the CPU, a block of rows of the suppression matrix at a time.

    ``boxes`` (N, 4) float32 in decreasing-score order; returns the keep mask. IoU is
    torchvision's float32 formula ``inter / (area_i + area_j - inter)``. Each block computes
    the IoU of ``block`` consecutive boxes against every later box in a few vectorised numpy
    ops; the greedy sweep inside the block then costs one op per *kept* box. That avoids both
    the full (n, n) matrix (~30 ms at top_k=1024) and one IoU row per kept box (numpy call
    overhead, ~20 ms): ~5 ms at n=1024, all on one core. ``classes`` restricts suppression to
    equal classes (torchvision's per-class path).
    """
    n = boxes.shape[0]
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = np.ones(n, dtype=bool)
    t = np.float32(thr)
    for s in range(0, n - 1, block):
        rows = np.flatnonzero(keep[s : s + block]) + s
        if rows.size == 0:
            continue
        c0 = rows[0] + 1  # columns before the first kept row are settled
        w = np.minimum(x2[rows, None], x2[None, c0:]) - np.maximum(x1[rows, None], x1[None, c0:])
        h = np.minimum(y2[rows, None], y2[None, c0:]) - np.maximum(y1[rows, None], y1[None, c0:])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        sup = inter / (areas[rows, None] + areas[None, c0:] - inter) > t
        if classes is not None:
            sup &= classes[rows, None] == classes[None, c0:]
        for r, i in enumerate(rows):
            if keep[i]:  # may have been suppressed by an earlier row of this block
                keep[i + 1 :] &= ~sup[r, i + 1 - c0 :]
    return keep


def passes_conf(scores: np.ndarray, conf: float, multi_label: bool) -> np.ndarray:
    """The reference's score threshold, in float32: a multi-label candidate (one (anchor,
    class) pair) needs ``> conf``, a single-label one (each anchor's best class) ``>= conf``
    (the reference's own asymmetry)."""
    c = np.float32(conf)
    return np.greater(scores, c) if multi_label else np.greater_equal(scores, c)


RAW_OUTPUTS = ("boxes", "scores")
"""Outputs of an export without NMS (``nms="none"``): decoded boxes and class scores."""
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
"""Outputs of an export with NMS in the graph (``nms="onnx"`` or EfficientNMS_TRT)."""


def output_layout(
    output_names: Sequence[str], error: type[Exception] = ValueError
) -> Literal["raw", "nms"]:
    """ "raw" or "nms" from a graph's (or engine's) output names; ``error`` names the rest."""
    names = set(output_names)
    if names == set(RAW_OUTPUTS):
        return "raw"
    if names == set(NMS_OUTPUTS):
        return "nms"
    raise error(
        f"unrecognised outputs {sorted(names)}: an edgestream YOLO-NAS export has "
        f"{list(RAW_OUTPUTS)} (nms='none') or {list(NMS_OUTPUTS)} (nms='onnx' or 'tensorrt')"
    )


def slice_nms_outputs(
    num_dets: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    conf: float,
    multi_label: bool,
) -> list[Detections]:
    """One `Detections` per image from in-graph NMS outputs (``num_dets`` (B, 1), ``det_boxes``
    (B, K, 4), ``det_scores`` (B, K), ``det_classes`` (B, K); ONNX ``nms="onnx"`` or TensorRT
    EfficientNMS_TRT), already on the host. The graph's thresholds were fixed at export time,
    so ``conf`` can only raise the score threshold: it applies `passes_conf` with the graph's
    ``multi_label`` mode, which is the reference's answer at ``conf`` (and keeps every row
    when ``conf`` is at or below the graph's own). Boxes stay in model-input pixels, rows in
    the graph's order (best first); the arrays returned are copies, so the caller may reuse
    its output buffers."""
    num = num_dets.reshape(num_dets.shape[0], -1)[:, 0]
    out = []
    for i in range(num.shape[0]):
        n = int(num[i])
        s = scores[i, :n].astype(np.float32, copy=False)
        keep = passes_conf(s, conf, multi_label)
        out.append(
            Detections(
                boxes=boxes[i, :n][keep].astype(np.float32, copy=False),
                scores=s[keep],
                class_ids=classes[i, :n][keep].astype(np.int64, copy=False),
            )
        )
    return out


def postprocess_one_np(
    boxes: np.ndarray, scores: np.ndarray, params: NMSParams, class_agnostic: bool = False
) -> Detections:
    """One image: (N, 4) xyxy and (N, C) scores (float32) -> kept detections, best first."""
    boxes = boxes.astype(np.float32, copy=False)
    scores = scores.astype(np.float32, copy=False)
    if params.multi_label:  # every (anchor, class) above conf, anchor-major
        anchor, cls = np.nonzero(passes_conf(scores, params.conf, multi_label=True))
        cand_boxes, cand_scores = boxes[anchor], scores[anchor, cls]
    else:  # each anchor's best class, kept at >= conf (the reference's own asymmetry)
        cls = np.argmax(scores, axis=1)
        best = np.take_along_axis(scores, cls[:, None], axis=1)[:, 0]
        mask = passes_conf(best, params.conf, multi_label=False)
        cand_boxes, cand_scores, cls = boxes[mask], best[mask], cls[mask]
    cand_cls = cls.astype(np.int64, copy=False)
    # descending by score, equal scores in candidate order (torch.sort(stable=True)); the
    # top_k cut is torch.topk's
    order = np.argsort(-cand_scores, kind="stable")[: params.top_k]
    if len(order) == 0:
        keep = order
    else:
        b = cand_boxes[order]
        classes = None
        if not class_agnostic:
            if b.size > VANILLA_NUMEL_CPU:
                classes = cand_cls[order]  # per-class NMS on the original coordinates
            else:  # one NMS on boxes shifted apart per class, as torchvision does it
                step = b.max() + np.float32(1)
                b = b + (cand_cls[order].astype(np.float32) * step)[:, None]
        keep = order[greedy_rows_cpu(b, float32_threshold(params.iou), classes)]
    keep = keep[: params.max_det]
    return Detections(
        boxes=cand_boxes[keep].astype(np.float32, copy=False),
        scores=cand_scores[keep].astype(np.float32, copy=False),
        class_ids=cand_cls[keep],
    )


def postprocess_np(
    boxes: np.ndarray, scores: np.ndarray, params: NMSParams, class_agnostic: bool = False
) -> list[Detections]:
    """Detections per image from (B, N, 4) xyxy boxes and (B, N, C) sigmoid scores, in the
    coordinates they come in (model-input pixels), like `stages.detect.postprocess.postprocess`.
    """
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.ndim != 3:
        raise ValueError(f"expected (B, N, 4) and (B, N, C), got {boxes.shape}, {scores.shape}")
    if boxes.shape[:2] != scores.shape[:2]:
        raise ValueError(f"boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)} disagree")
    return [
        postprocess_one_np(boxes[i], scores[i], params, class_agnostic) for i in range(len(boxes))
    ]
