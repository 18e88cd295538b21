"""mAP on a validation split through the real inference path, scored by pycocotools.

The model runs exactly as it will in deployment: `Detector` (letterbox with the model's input
size, the torch backend on the fused model, the reference postprocessing) with boxes mapped
back to source pixels, then COCOeval against the labels in source pixels. The NMS settings
are the usual mAP ones (score > 0.001, IoU 0.7, up to 300 boxes) rather than the serving
threshold, so the figures compare with published ones.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from stages.detect.train.data import Sample, read_rgb
from stages.detect.types import ModelInfo, NMSParams

EVAL_NMS = NMSParams(conf=0.001, iou=0.7, multi_label=True, top_k=1024, max_det=300)


@dataclass(frozen=True)
class Metrics:
    """COCO box mAP averaged over IoU 0.5:0.95, at 0.5, and at 0.75 (all -1 without labels)."""

    map50_95: float
    map50: float
    map75: float
    images: int

    def __str__(self) -> str:
        return f"mAP@0.5={self.map50:.4f} mAP@0.5:0.95={self.map50_95:.4f} ({self.images} images)"


def coco_ground_truth(samples: Sequence[Sample], num_classes: int) -> dict[str, Any]:
    """An in-memory COCO instances dict for ``samples`` (category ids = class index + 1)."""
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i, s in enumerate(samples):
        img_id = i + 1
        images.append({"id": img_id, "file_name": str(s.path)})
        for box, cls in zip(s.boxes, s.classes, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = x2 - x1, y2 - y1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": int(cls) + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def evaluate(
    model: nn.Module,
    samples: Sequence[Sample],
    info: ModelInfo,
    batch: int = 8,
    nms: NMSParams = EVAL_NMS,
) -> Metrics:
    """COCO mAP of ``model`` (left untouched: a fused copy runs) on ``samples``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from stages.detect.backends.torch_backend import TorchBackend
    from stages.detect.detector import Detector

    num_classes = int(info.num_classes or 80)
    backend = TorchBackend(
        copy.deepcopy(model).eval(), device="cpu", max_batch=batch, nms_params=nms, info=info
    )
    detector = Detector(backend)
    dets = []
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        results = detector.detect([read_rgb(s.path) for s in chunk])
        for k, det in enumerate(results):
            for box, score, cls in zip(det.boxes, det.scores, det.class_ids, strict=True):
                x1, y1, x2, y2 = (float(v) for v in box)
                dets.append(
                    {
                        "image_id": start + k + 1,
                        "category_id": int(cls) + 1,
                        "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": float(score),
                    }
                )
    detector.close()
    gt_dict = coco_ground_truth(samples, num_classes)
    if not gt_dict["annotations"]:
        return Metrics(-1.0, -1.0, -1.0, len(samples))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        if not dets:
            return Metrics(0.0, 0.0, 0.0, len(samples))
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats)
    return Metrics(float(stats[0]), float(stats[1]), float(stats[2]), len(samples))
