"""A tiny generated detection dataset (YOLO and COCO formats) for the training tests.

Three classes of flat shapes (0 square, 1 disc, 2 bar) in random colours on a noisy
gradient background; deterministic for a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

NAMES = ["square", "disc", "bar"]


def draw_image(
    rng: np.random.Generator, h: int, w: int
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """An RGB image and its objects as (class, x1, y1, x2, y2) px."""
    base = rng.integers(40, 200, 3)
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.integers(-60, 60, 3)
    img = np.clip(base + ramp + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    objects: list[tuple[int, float, float, float, float]] = []
    for _ in range(int(rng.integers(1, 4))):
        cls = int(rng.integers(0, 3))
        size = int(rng.integers(min(h, w) // 4, min(h, w) // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if cls == 2:
            bw, bh = size, max(6, size // 3)
        else:
            bw = bh = size
        x1 = int(rng.integers(0, w - bw))
        y1 = int(rng.integers(0, h - bh))
        if cls == 1:
            cv2.circle(img, (x1 + bw // 2, y1 + bh // 2), bw // 2, colour, -1)
        else:
            cv2.rectangle(img, (x1, y1), (x1 + bw - 1, y1 + bh - 1), colour, -1)
        objects.append((cls, float(x1), float(y1), float(x1 + bw), float(y1 + bh)))
    return img, objects


def write_yolo(
    root: Path, n_train: int = 24, n_val: int = 8, seed: int = 0, hw: tuple[int, int] = (120, 160)
) -> Path:
    """Write root/{images,labels}/{train,val} and root/data.yaml; returns the yaml path."""
    rng = np.random.default_rng(seed)
    h, w = hw
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, objs = draw_image(rng, h, w)
            cv2.imwrite(str(root / "images" / split / f"{i:05d}.png"), img[..., ::-1])
            lines = [
                f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                for c, x1, y1, x2, y2 in objs
            ]
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
    yaml_path = root / "data.yaml"
    yaml_path.write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames: {json.dumps(NAMES)}\n"
    )
    return yaml_path


def write_coco(root: Path, n: int = 6, seed: int = 1, hw: tuple[int, int] = (120, 160)) -> Path:
    """root/images/*.png + root/instances.json with category ids 3, 7, 9 (not 0-based)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    (root / "images").mkdir(parents=True, exist_ok=True)
    cat_ids = [3, 7, 9]
    images, anns = [], []
    for i in range(n):
        img, objs = draw_image(rng, h, w)
        name = f"{i:03d}.png"
        cv2.imwrite(str(root / "images" / name), img[..., ::-1])
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
        for c, x1, y1, x2, y2 in objs:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + i,
                    "category_id": cat_ids[c],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    cats = [{"id": cid, "name": nm} for cid, nm in zip(cat_ids, NAMES, strict=True)][::-1]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1])
    print(write_yolo(out, int(sys.argv[2]), int(sys.argv[3]), hw=(240, 320)))
