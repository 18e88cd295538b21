"""Write tests/parity/golden/* from the reference, super-gradients 3.7.1.

Runs ONLY in the reference venv (see README.md in this folder), never in CI:

    HOME=/tmp/sghome /tmp/sg/bin/python tests/parity/make_golden.py

Everything it feeds the reference is procedural (det_weights.py, synthetic_images.py), so the
tests rebuild the same inputs and only the reference's answers are stored:

* meta.json            versions, predict() defaults, letterbox geometry, fingerprints
* keys_<variant>.json  state_dict key -> shape, dtype (our model must match exactly)
* letterbox.npz        the reference's preprocessed images as uint8 (x * 255 is exact),
                       delta-coded along width so smooth regions compress
* raw_<variant>.npz    per image: a deterministic subset of anchor rows of the raw outputs
                       (every 29th anchor, the 200 best, and every anchor with a score above
                       conf, so postprocessing can be replayed exactly) + summary statistics
                       over all 8400 anchors; the final detections in input (640) space and
                       in source pixels (predict())
* stress.npz           the reference post-prediction callback on procedural raw outputs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import super_gradients
import torch
import torchvision
from super_gradients.training import models
from super_gradients.training.models.detection_models.pp_yolo_e import (
    PPYoloEPostPredictionCallback,
)
from super_gradients.training.processing.processing import (
    default_yolo_nas_coco_processing_params,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from det_weights import deterministic_state_dict, fingerprint  # noqa: E402
from synthetic_images import IMAGES, STRESS_CASES, image, stress_outputs  # noqa: E402

GOLDEN = HERE / "golden"
VARIANTS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
CONF, IOU = 0.25, 0.7
ROW_STRIDE = 29  # prime: does not line up with the 80/40/20 grids
TOP_ROWS = 200


def build(variant: str) -> tuple[torch.nn.Module, dict[str, list[object]]]:
    model = models.get(variant, num_classes=80)
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()}
    weights = deterministic_state_dict(shapes, dtypes, variant=variant)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    model.eval()
    model.set_dataset_processing_params(**default_yolo_nas_coco_processing_params())
    keys = {k: [list(shapes[k]), dtypes[k]] for k in sd}
    return model, {"keys": keys, "fingerprint": fingerprint(weights)}  # type: ignore[dict-item]


def predict_defaults(model: torch.nn.Module) -> dict[str, object]:
    """What predict() uses when only conf/iou are given (read off the model, not assumed)."""
    return {
        "conf": CONF,
        "iou": IOU,
        "nms_top_k": model._default_nms_top_k,
        "max_predictions": model._default_max_predictions,
        "multi_label_per_box": model._default_multi_label_per_box,
        "class_agnostic_nms": model._default_class_agnostic_nms,
        "fp16_default": True,
        "fp16_note": "torch.cuda.amp.autocast: no effect on CPU, where the goldens are made",
        "fuse_model": False,
        "post_prediction_callback": "PPYoloEPostPredictionCallback",
    }


def delta_code(u8: np.ndarray) -> np.ndarray:
    """Differences along the last axis mod 256 (undo: cumsum with dtype uint8)."""
    d = u8.astype(np.int16)
    d[..., 1:] -= u8[..., :-1].astype(np.int16)
    return (d % 256).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description="Write the parity goldens from super-gradients.")
    ap.add_argument("--out", type=Path, default=GOLDEN, help="default: tests/parity/golden")
    out = ap.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    processor = default_yolo_nas_coco_processing_params()["image_processor"]

    meta: dict[str, object] = {
        "versions": {
            "super_gradients": super_gradients.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "opencv": cv2.__version__,
        },
        "row_stride": ROW_STRIDE,
        "top_rows": TOP_ROWS,
        "images": {},
        "models": {},
    }

    # 1. Preprocessing.
    inputs: dict[str, np.ndarray] = {}
    letterboxes: dict[str, np.ndarray] = {}
    for name in IMAGES:
        img = image(name)
        x, md = processor.preprocess_image(img.copy())
        rescale, padding = md.metadata_lst[0], md.metadata_lst[1].padding_coordinates
        u8 = np.rint(x.astype(np.float64) * 255.0).astype(np.uint8)
        assert np.array_equal((u8 / 255.0).astype(np.float32), x), "x * 255 is not exact"
        inputs[name] = x
        letterboxes[name] = delta_code(u8)
        meta["images"][name] = {  # type: ignore[index]
            "src_hw": list(img.shape[:2]),
            "image_sha256": hashlib.sha256(img.tobytes()).hexdigest(),
            "scale": rescale.scale_factor_h,
            "scale_w": rescale.scale_factor_w,
            "pad_top": padding.top,
            "pad_bottom": padding.bottom,
            "pad_left": padding.left,
            "pad_right": padding.right,
            "letterbox_u8_sha256": hashlib.sha256(u8.tobytes()).hexdigest(),
            "float_sha256": hashlib.sha256(x.tobytes()).hexdigest(),
        }
    np.savez_compressed(out / "letterbox.npz", **letterboxes)

    # 2. Models: keys, raw outputs, final detections.
    for variant in VARIANTS:
        model, info = build(variant)
        if variant == VARIANTS[0]:
            meta["predict_defaults"] = predict_defaults(model)
        (out / f"keys_{variant}.json").write_text(json.dumps(info["keys"], indent=0) + "\n")
        callback = PPYoloEPostPredictionCallback(
            score_threshold=CONF,
            nms_threshold=IOU,
            nms_top_k=model._default_nms_top_k,
            max_predictions=model._default_max_predictions,
            multi_label_per_box=model._default_multi_label_per_box,
            class_agnostic_nms=model._default_class_agnostic_nms,
        )
        arrays: dict[str, np.ndarray] = {}
        model_meta: dict[str, object] = {
            "n_keys": len(info["keys"]),
            "weights_fingerprint": info["fingerprint"],
            "images": {},
        }
        for name in IMAGES:
            with torch.no_grad():
                (boxes, scores), _ = model(torch.from_numpy(inputs[name])[None])
            dets = callback(((boxes, scores), None))[0].numpy()  # [N, 6] in 640 space

            pred = model.predict(image(name), conf=CONF, iou=IOU, fuse_model=False).prediction
            # Our replay of the pipeline must be the pipeline: same boxes, bit for bit.
            n_pred = len(pred.confidence)
            assert n_pred == len(dets), (variant, name, n_pred, len(dets))
            assert np.array_equal(pred.confidence, dets[:, 4]), (variant, name)
            assert np.array_equal(pred.labels, dets[:, 5].astype(int)), (variant, name)

            b = boxes[0].numpy()
            s = scores[0].numpy()
            best = s.max(axis=1)
            rows = set(range(0, b.shape[0], ROW_STRIDE))
            rows |= set(np.argsort(-best, kind="stable")[:TOP_ROWS].tolist())
            rows |= set(np.nonzero((s > CONF).any(axis=1))[0].tolist())
            idx = np.array(sorted(rows), dtype=np.int32)
            p = f"{name}/"
            arrays[p + "rows"] = idx
            arrays[p + "boxes"] = b[idx]
            arrays[p + "scores"] = s[idx]
            arrays[p + "dets_input"] = dets.astype(np.float32)
            arrays[p + "dets_source_boxes"] = pred.bboxes_xyxy.astype(np.float32)
            arrays[p + "dets_source_scores"] = pred.confidence.astype(np.float32)
            arrays[p + "dets_source_labels"] = pred.labels.astype(np.int64)
            model_meta["images"][name] = {  # type: ignore[index]
                "n_rows": int(idx.size),
                "n_dets": n_pred,
                "n_candidates": int((s > CONF).sum()),
                "boxes_sum": float(b.astype(np.float64).sum()),
                "boxes_abs_max": float(np.abs(b).max()),
                "scores_sum": float(s.astype(np.float64).sum()),
                "scores_max": float(s.max()),
                "boxes_col_mean": b.astype(np.float64).mean(axis=0).tolist(),
                "scores_class_mean": s.astype(np.float64).mean(axis=0).tolist(),
            }
            print(variant, name, "rows", idx.size, "dets", n_pred, flush=True)
        np.savez_compressed(out / f"raw_{variant}.npz", **arrays)
        meta["models"][variant] = model_meta  # type: ignore[index]

    # 3. Postprocessing stress cases.
    stress: dict[str, np.ndarray] = {}
    for case, prm in STRESS_CASES.items():
        boxes_np, scores_np = stress_outputs(case)
        cb = PPYoloEPostPredictionCallback(
            score_threshold=prm.conf,
            nms_threshold=prm.iou,
            nms_top_k=prm.top_k,
            max_predictions=prm.max_det,
            multi_label_per_box=prm.multi_label,
            class_agnostic_nms=prm.agnostic,
        )
        res = cb(((torch.from_numpy(boxes_np), torch.from_numpy(scores_np)), None))[0]
        stress[case] = res.numpy().astype(np.float32)
        print("stress", case, "->", len(res), flush=True)
    np.savez_compressed(out / "stress.npz", **stress)

    (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    total = sum(f.stat().st_size for f in out.iterdir())
    print(f"golden: {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
