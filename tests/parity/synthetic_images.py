"""Procedural RGB test images, bit-identical on numpy 1.24 and 2.x (integer arithmetic only).

They stand in for camera frames in the parity tests: smooth gradients (exercise bilinear
interpolation), hard-edged rectangles and stripes (exercise edge handling and give the
detector something to fire on), and a hashed noise field (no two neighbouring pixels alike).
Shapes cover landscape (1920x1080, 640x480) and portrait (720x1280) so letterbox padding is
exercised on both axes, including odd splits.

Only numpy and the standard library may be imported here: this file runs in both venvs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from det_weights import uniform01

# name -> (height, width); "predict" is the frame used for the end-to-end predict parity.
IMAGES: dict[str, tuple[int, int]] = {
    "predict_1920x1080": (1080, 1920),
    "vga_640x480": (480, 640),
    "portrait_720x1280": (1280, 720),
}


def synthetic_rgb(height: int, width: int, tag: str = "") -> np.ndarray:
    """A (height, width, 3) uint8 RGB image derived from its size (and ``tag``) only."""
    yy = np.arange(height, dtype=np.int64)[:, None]
    xx = np.arange(width, dtype=np.int64)[None, :]
    img = np.empty((height, width, 3), dtype=np.int64)
    img[..., 0] = (xx * 255) // max(width - 1, 1)
    img[..., 1] = (yy * 255) // max(height - 1, 1)
    img[..., 2] = ((xx + yy) * 255) // max(width + height - 2, 1)

    key = f"image:{height}x{width}:{tag}"
    noise = (uniform01(key + ":noise", height * width * 3) * 49.0).astype(np.int64) - 24
    img += noise.reshape(height, width, 3)

    # Rectangles: position, size and colour from the hash; a third are striped.
    n_rects = 24
    params = uniform01(key + ":rects", n_rects * 8).reshape(n_rects, 8)
    for r in range(n_rects):
        p = params[r]
        rh = int(height * (0.05 + 0.3 * p[0]))
        rw = int(width * (0.05 + 0.3 * p[1]))
        y0 = int((height - rh) * p[2])
        x0 = int((width - rw) * p[3])
        colour = (p[4:7] * 255.0).astype(np.int64)
        patch = img[y0 : y0 + rh, x0 : x0 + rw]
        if p[7] < 0.33:
            period = 4 + int(p[7] * 60)
            stripes = ((np.arange(rw) // period) % 2).astype(np.int64)[None, :, None]
            patch[...] = colour * stripes + (255 - colour) * (1 - stripes)
        else:
            patch[...] = colour
    return np.clip(img, 0, 255).astype(np.uint8)


def image(name: str) -> np.ndarray:
    """One of the named images in :data:`IMAGES`."""
    h, w = IMAGES[name]
    return synthetic_rgb(h, w, tag=name)


# Postprocessing stress cases: raw model outputs made up from the hash, fed to the reference's
# post-prediction callback by make_golden.py and to ours by the tests. Nothing but the results
# needs storing.
@dataclass(frozen=True)
class StressCase:
    n: int  # anchors
    c: int  # classes
    clusters: int  # anchors are spread over this many box clusters
    hot: float  # fraction of anchors scoring high on their cluster's class
    background: float  # every score also gets U(0, background)
    conf: float
    iou: float
    top_k: int
    max_det: int
    multi_label: bool
    agnostic: bool


STRESS_CASES: dict[str, StressCase] = {
    # > top_k candidates: top-k, then 1024 boxes -> torchvision's per-class ("vanilla") path
    "dense": StressCase(8400, 80, 150, 0.35, 0.26, 0.25, 0.7, 1024, 300, True, False),
    # < 1000 candidates -> torchvision's coordinate-offset path
    "sparse": StressCase(8400, 80, 60, 0.04, 0.2, 0.25, 0.7, 1024, 300, True, False),
    "single_label": StressCase(8400, 80, 150, 0.35, 0.26, 0.25, 0.7, 1024, 300, False, False),
    "agnostic_low_iou": StressCase(8400, 80, 80, 0.1, 0.31, 0.3, 0.5, 500, 100, True, True),
    "few_classes_max_det": StressCase(2100, 3, 40, 0.5, 0.22, 0.2, 0.6, 1024, 50, True, False),
}


def stress_outputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(1, n, 4) float32 xyxy boxes in a 640x640 input and (1, n, c) float32 scores in [0, 1).

    Anchors belong to clusters (so boxes overlap and NMS has work), a ``hot`` fraction of
    anchors scores high on its cluster's class, and every anchor has low background scores
    on all classes (some above conf: multi-label candidates).
    """
    case = STRESS_CASES[name]
    n, c, k, hot, background = case.n, case.c, case.clusters, case.hot, case.background
    key = f"stress:{name}"
    cl = uniform01(key + ":clusters", k * 5).reshape(k, 5)
    cx, cy = 20.0 + 600.0 * cl[:, 0], 20.0 + 600.0 * cl[:, 1]
    bw, bh = 8.0 + 200.0 * cl[:, 2], 8.0 + 200.0 * cl[:, 3]
    cls = (cl[:, 4] * c).astype(np.int64)
    member = np.arange(n) % k
    j = uniform01(key + ":jitter", n * 4).reshape(n, 4) * 2.0 - 1.0
    x_c = cx[member] + 0.12 * bw[member] * j[:, 0]
    y_c = cy[member] + 0.12 * bh[member] * j[:, 1]
    w = bw[member] * (1.0 + 0.15 * j[:, 2])
    h = bh[member] * (1.0 + 0.15 * j[:, 3])
    boxes = np.stack([x_c - w / 2, y_c - h / 2, x_c + w / 2, y_c + h / 2], axis=1)

    scores = uniform01(key + ":background", n * c).reshape(n, c) * background
    hot_u = uniform01(key + ":hot", n * 2).reshape(n, 2)
    is_hot = hot_u[:, 0] < hot
    scores[np.arange(n)[is_hot], cls[member][is_hot]] = 0.2 + 0.79 * hot_u[is_hot, 1]
    return boxes.astype(np.float32)[None], scores.astype(np.float32)[None]
