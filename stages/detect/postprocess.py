"""YOLO-NAS postprocessing: the same detections as super-gradients 3.7.1 ``predict()``.

Per image, in this order (``PPYoloEPostPredictionCallback``):

1. threshold: multi-label keeps every (anchor, class) with score ``> conf`` in anchor-major
   order; single-label keeps each anchor's best class when its score is ``>= conf``
   (yes, the two modes differ in strictness; we keep that).
2. top-k: only when more than ``top_k`` candidates survive, keep the ``top_k`` best
   (``torch.topk``, as the reference).
3. class-aware NMS equivalent to ``torchvision.ops.batched_nms``, including its two code paths:
   up to 4000 box coordinates on CPU (100000 on CUDA) it offsets each class's boxes by
   ``class * (max_coordinate + 1)`` and runs one NMS on the shifted boxes; above that it runs
   NMS per class on the original boxes. The two differ only in float rounding of the IoU, but
   "exactly the reference" means the same path. IoU is computed with torchvision's float32
   formula ``inter / (area_i + area_j - inter)`` and compared against the threshold as a double.
4. keep the ``max_det`` best (the NMS output is sorted by decreasing score).

torchvision is not a dependency (its wheels are tied to specific torch builds), so NMS is our
own: the greedy loop is replaced by a vectorised fixed-point iteration over the (<= top_k)^2
suppression matrix ("Cluster-NMS", Zheng et al. 2020). ``keep[i] = not any(keep[j] and
S[j, i] for j < i)`` determines the greedy result uniquely, iterating it from "keep all" fixes
one more position per pass, and it usually converges in a handful of passes, each a single
tensor op, so it runs on the GPU with one host sync per pass instead of one per box.

Everything stays on the tensors' device; only the final (<= max_det) rows are copied to host.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from stages.detect.postprocess_np import VANILLA_NUMEL_CPU
from stages.detect.postprocess_np import float32_threshold as _float32_threshold
from stages.detect.postprocess_np import greedy_rows_cpu as _greedy_rows_cpu
from stages.detect.types import Detections, NMSParams

_VANILLA_NUMEL = {"cpu": VANILLA_NUMEL_CPU}
"""torchvision 0.29 switches to per-class NMS above this many box coordinates (100k on GPUs)."""


def _greedy_keep(suppress: torch.Tensor) -> torch.Tensor:
    """Greedy NMS result given ``suppress[j, i]`` (j < i, both in decreasing-score order)."""
    n = suppress.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=suppress.device)
    for _ in range(n + 1):
        new_keep = ~(suppress & keep[:, None]).any(dim=0)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    """(N, N) IoU in float32 with torchvision's operation order."""
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    areas = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, None], x2[None, :]) - torch.maximum(x1[:, None], x1[None, :])).clamp(
        min=0
    )
    h = (torch.minimum(y2[:, None], y2[None, :]) - torch.maximum(y1[:, None], y1[None, :])).clamp(
        min=0
    )
    inter = w * h
    return inter / (areas[:, None] + areas[None, :] - inter)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    class_ids: torch.Tensor,
    iou_threshold: float,
    class_agnostic: bool = False,
) -> torch.Tensor:
    """Indices of the kept boxes, by decreasing score, like ``torchvision.ops.batched_nms``
    (or ``torchvision.ops.nms`` when ``class_agnostic``).

    Ties in score keep their input order (stable sort).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    same_class_only = False
    if not class_agnostic:
        if boxes.numel() > _VANILLA_NUMEL.get(boxes.device.type, 100_000):
            same_class_only = True  # per-class NMS on the original coordinates
        else:
            max_coordinate = boxes.max()
            offsets = class_ids[order].to(b) * (max_coordinate + torch.tensor(1).to(b))
            b = b + offsets[:, None]
    thr = _float32_threshold(iou_threshold)
    if b.device.type == "cpu":
        cls = class_ids[order].numpy() if same_class_only else None
        return order[torch.from_numpy(_greedy_rows_cpu(b.float().numpy(), thr, cls))]
    suppress = _pairwise_iou(b) > thr
    suppress.triu_(diagonal=1)
    if same_class_only:
        c = class_ids[order]
        suppress &= c[:, None] == c[None, :]
    return order[_greedy_keep(suppress)]


def postprocess_one(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    params: NMSParams,
    class_agnostic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image: (N, 4) xyxy and (N, C) scores -> kept (boxes, scores, class ids) on device."""
    boxes = boxes.float()
    scores = scores.float()
    if params.multi_label:
        anchor, cls = (scores > params.conf).nonzero(as_tuple=True)
        cand_boxes = boxes[anchor]
        cand_scores = scores[anchor, cls]
        cand_cls = cls
    else:
        best, best_cls = torch.max(scores, dim=1)
        mask = best >= params.conf
        cand_boxes, cand_scores, cand_cls = boxes[mask], best[mask], best_cls[mask]

    if cand_scores.shape[0] > params.top_k:
        top = torch.topk(cand_scores, k=params.top_k, largest=True).indices
        cand_boxes, cand_scores, cand_cls = cand_boxes[top], cand_scores[top], cand_cls[top]

    keep = batched_nms(cand_boxes, cand_scores, cand_cls, params.iou, class_agnostic)
    keep = keep[: params.max_det]
    return cand_boxes[keep], cand_scores[keep], cand_cls[keep]


@contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """Run the small CPU tensor ops of NMS on one thread.

    These ops take microseconds; with an intra-op pool each one also waits for every pool
    thread, which on a busy edge box (decoders, other stages) costs a scheduler slice per op:
    measured 150-200 ms per image with 2 threads on a loaded 2-core machine, 5-50 ms with 1.
    The model itself keeps the caller's thread count.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    params: NMSParams,
    class_agnostic: bool = False,
    batched: bool | None = None,
) -> list[Detections]:
    """Detections per image from (B, N, 4) xyxy boxes and (B, N, C) sigmoid scores.

    Boxes stay in the coordinates they come in (model-input pixels); map them to the camera
    image with ``LetterboxMeta.to_source``. ``class_agnostic`` mirrors the reference's
    ``class_agnostic_nms`` (default False: boxes of different classes never suppress each other).
    ``batched``: all images at once (`postprocess_batched`: a handful of host syncs per batch,
    one copy back) or one image at a time; None: batched on a GPU, per image on the CPU (where
    the numpy greedy NMS on each image's few candidates is faster than padded batch tensors).
    """
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or scores.ndim != 3:
        raise ValueError(f"expected (B, N, 4) and (B, N, C), got {boxes.shape}, {scores.shape}")
    if boxes.shape[:2] != scores.shape[:2]:
        raise ValueError(f"boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)} disagree")
    if batched is None:
        batched = boxes.device.type != "cpu"
    if batched:
        return postprocess_batched(boxes, scores, params, class_agnostic)
    out: list[Detections] = []
    with torch.no_grad(), _one_thread_on_cpu(boxes.device):
        for b in range(boxes.shape[0]):
            kb, ks, kc = postprocess_one(boxes[b], scores[b], params, class_agnostic)
            out.append(
                Detections(
                    boxes=kb.cpu().numpy().astype(np.float32, copy=False),
                    scores=ks.cpu().numpy().astype(np.float32, copy=False),
                    class_ids=kc.cpu().numpy().astype(np.int64, copy=False),
                )
            )
    return out


def _candidates(
    boxes: torch.Tensor, scores: torch.Tensor, params: NMSParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Threshold and top-k of every image at once, padded to the batch's largest candidate
    count K (<= top_k): (B, K, 4) boxes, (B, K) scores, class ids, valid mask, and each
    image's candidate count, ordered as `postprocess_one` then `batched_nms` order them (score
    descending, equal scores in anchor-major order). None: no candidate in any image."""
    bsz, n, c = scores.shape
    if params.multi_label:
        flat = scores.reshape(bsz, n * c)
        passed = flat > params.conf
    else:
        flat, best_cls = torch.max(scores, dim=2)
        passed = flat >= params.conf
    counts = passed.sum(dim=1)
    k = min(params.top_k, int(counts.max()) if counts.numel() else 0)  # one host sync
    if k == 0:
        return None
    masked = torch.where(passed, flat, torch.full_like(flat, -torch.inf))
    # the k best of each image; then their anchor-major order, then a stable sort by score:
    # the order the per-image path gives (its candidates are listed anchor-major)
    picked = torch.topk(masked, k, dim=1).indices.sort(dim=1).values
    cand_scores = masked.gather(1, picked)
    order = torch.sort(cand_scores, dim=1, descending=True, stable=True).indices
    picked = picked.gather(1, order)
    cand_scores = cand_scores.gather(1, order)
    if params.multi_label:
        anchor, cls = picked // c, picked % c
    else:
        anchor, cls = picked, best_cls.gather(1, picked)
    cand_boxes = boxes.gather(1, anchor[..., None].expand(bsz, k, 4))
    valid = cand_scores > -torch.inf
    return cand_boxes, cand_scores, cls, valid, counts.clamp(max=params.top_k)


def postprocess_batched(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    params: NMSParams,
    class_agnostic: bool = False,
) -> list[Detections]:
    """`postprocess` of a whole batch in batch-wide tensor ops on the tensors' device.

    Every image's candidates are padded to the batch's largest count (<= ``top_k``); one
    batched class-aware NMS runs on all of them (each image keeps its own class offsets, or
    its per-class path when it has more boxes than torchvision's offset path takes); the
    survivors of all images are packed into one small tensor and copied to the host once.
    Host syncs per batch: the candidate count, one per NMS pass (usually a handful) and the
    copy back, whatever the batch size. The detections equal the per-image path's, except
    which of several exactly equal scores survive a top-k cut (and their order), as with
    ``torch.topk`` there.
    """
    bsz = boxes.shape[0]
    with torch.no_grad():
        got = _candidates(boxes.float(), scores.float(), params)
        if got is None:
            return [Detections.empty() for _ in range(bsz)]
        cand_boxes, cand_scores, cand_cls, valid, counts = got
        keep = _batched_greedy_keep(cand_boxes, cand_cls, valid, counts, params.iou,
                                    class_agnostic)  # fmt: skip
        rank = keep.cumsum(dim=1)
        keep &= rank <= params.max_det
        image, pos = keep.nonzero(as_tuple=True)  # image-major, score order within an image
        packed = torch.cat(
            [
                cand_boxes[image, pos],
                cand_scores[image, pos, None],
                cand_cls[image, pos, None].to(torch.float32),  # exact below 2**24 classes
                image[:, None].to(torch.float32),
            ],
            dim=1,
        ).cpu()  # the one copy back
    rows = packed.numpy()
    out = []
    for part in np.split(rows, np.searchsorted(rows[:, 6], np.arange(1, bsz))):
        out.append(
            Detections(
                boxes=np.ascontiguousarray(part[:, :4], np.float32),
                scores=np.ascontiguousarray(part[:, 4], np.float32),
                class_ids=part[:, 5].astype(np.int64),
            )
        )
    return out


def _batched_greedy_keep(
    boxes: torch.Tensor,
    cls: torch.Tensor,
    valid: torch.Tensor,
    counts: torch.Tensor,
    iou_threshold: float,
    class_agnostic: bool,
) -> torch.Tensor:
    """(B, K) keep mask of greedy NMS on score-ordered padded candidates, as `batched_nms`
    decides per image: class offsets of ``class * (max_coordinate + 1)`` (the image's own
    maximum), or, for an image with more than torchvision's offset-path limit of coordinates,
    suppression only within a class on the original coordinates."""
    limit = _VANILLA_NUMEL.get(boxes.device.type, 100_000)
    b = boxes
    same_class_only = torch.zeros_like(counts, dtype=torch.bool)
    if not class_agnostic:
        same_class_only = counts * 4 > limit
        neg = torch.full_like(boxes, -torch.inf)
        max_coordinate = torch.where(valid[..., None], boxes, neg).amax(dim=(1, 2))
        offsets = cls.to(b) * (max_coordinate[:, None] + torch.tensor(1).to(b))
        shifted = b + offsets[..., None]
        b = torch.where(same_class_only[:, None, None], b, shifted)
    x1, y1, x2, y2 = b.unbind(dim=2)
    areas = (x2 - x1) * (y2 - y1)
    w = (
        torch.minimum(x2[:, :, None], x2[:, None, :])
        - torch.maximum(x1[:, :, None], x1[:, None, :])
    ).clamp(min=0)
    h = (
        torch.minimum(y2[:, :, None], y2[:, None, :])
        - torch.maximum(y1[:, :, None], y1[:, None, :])
    ).clamp(min=0)
    inter = w * h
    suppress = inter / (areas[:, :, None] + areas[:, None, :] - inter) > _float32_threshold(
        iou_threshold
    )
    suppress.triu_(diagonal=1)
    if not class_agnostic:
        same = cls[:, :, None] == cls[:, None, :]
        suppress &= same | ~same_class_only[:, None, None]
    keep = valid.clone()
    for _ in range(boxes.shape[1] + 1):
        new_keep = valid & ~(suppress & keep[:, :, None]).any(dim=1)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def postprocess_numpy(
    boxes: np.ndarray,
    scores: np.ndarray,
    params: NMSParams,
    class_agnostic: bool = False,
) -> list[Detections]:
    """:func:`postprocess` for numpy outputs (e.g. from ONNX Runtime on CPU); no copy in."""
    return postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), params, class_agnostic)
