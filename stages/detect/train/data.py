"""Detection datasets for training: YOLO format (``data.yaml`` + images/labels) or COCO JSON.

Both load into the same plain records (`Sample`: image path, xyxy boxes in source pixels,
class ids) and the same class-name list, so the trainer knows nothing of file formats.

YOLO format: ``data.yaml`` with ``names`` (list, or dict id -> name), ``train`` and ``val``
(a folder of images, a list of folders, or a ``.txt`` list of image paths), relative to
``path`` when given, else to the yaml's folder. Labels: ``.../labels/<stem>.txt`` beside
``.../images/``, one ``class cx cy w h`` line per object, normalised to [0, 1].

COCO format: an instances JSON; images are found relative to ``images_dir`` (default: the
JSON's folder, then its ``images/`` subfolder). Category ids are mapped to 0..C-1 in id order;
``iscrowd`` boxes are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import yaml

from stages.detect.preprocess import PAD_VALUE
from stages.detect.sources import SourceError, read_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DatasetError(ValueError):
    """A dataset that cannot be used, with a message that says why."""


@dataclass
class Sample:
    """One image: xyxy ``boxes`` (N, 4) float32 in source pixels, ``classes`` (N,) int64."""

    path: Path
    boxes: np.ndarray
    classes: np.ndarray
    image_id: int = 0


@dataclass
class DetectionData:
    """A train and a validation split and the class names."""

    train: list[Sample]
    val: list[Sample]
    class_names: list[str]
    source: str = ""
    test: list[Sample] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        """``train``, ``val`` or ``test``; a `DatasetError` when the dataset lacks it."""
        samples = {"train": self.train, "val": self.val, "test": self.test}.get(name)
        if samples is None:
            raise DatasetError(f"unknown split {name!r}; choose train, val or test")
        if not samples:
            raise DatasetError(f"{self.source}: the dataset has no '{name}' split")
        return samples


# --------------------------------------------------------------------------------------------
# YOLO format
# --------------------------------------------------------------------------------------------


def _names(raw: Any, where: Path) -> list[str]:
    if isinstance(raw, dict):
        ids = sorted(int(k) for k in raw)
        if ids != list(range(len(ids))):
            raise DatasetError(f"{where}: names ids must be 0..N-1, got {ids}")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in ids]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise DatasetError(f"{where}: 'names' must be a non-empty list or an id -> name mapping")


def _image_paths(spec: Any, root: Path, where: Path) -> list[Path]:
    entries = spec if isinstance(spec, list) else [spec]
    out: list[Path] = []
    for entry in entries:
        p = Path(str(entry))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    out.append(q if q.is_absolute() else root / q)
        else:
            raise DatasetError(f"{where}: {p} is neither an image folder nor a .txt list")
    return out


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def _image_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"{path}: cannot read the image")
    return int(img.shape[0]), int(img.shape[1])


def read_yolo_labels(
    label: Path, h: int, w: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(boxes xyxy px, classes) from one YOLO label file (missing file: no objects)."""
    if not label.is_file():
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    rows = [ln.split() for ln in label.read_text().splitlines() if ln.strip()]
    if any(len(r) != 5 for r in rows):
        raise DatasetError(f"{label}: every line must be 'class cx cy w h' (5 numbers)")
    arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
    cls = arr[:, 0].astype(np.int64)
    if len(cls) and (cls.min() < 0 or cls.max() >= num_classes):
        raise DatasetError(f"{label}: class id {int(cls.max())} outside 0..{num_classes - 1}")
    cx, cy, bw, bh = arr[:, 1] * w, arr[:, 2] * h, arr[:, 3] * w, arr[:, 4] * h
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
    return boxes, cls


def load_yolo(data_yaml: str | Path) -> DetectionData:
    """Read a YOLO-format dataset described by ``data_yaml``."""
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise DatasetError(f"{data_yaml}: no such file")
    cfg = yaml.safe_load(data_yaml.read_text()) or {}
    if not isinstance(cfg, dict):
        raise DatasetError(f"{data_yaml}: expected a mapping with names/train/val")
    names = _names(cfg.get("names"), data_yaml)
    root = Path(str(cfg.get("path", data_yaml.parent)))
    if not root.is_absolute():
        root = data_yaml.parent / root
    splits: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    if not any(k in cfg for k in splits):
        raise DatasetError(f"{data_yaml}: no 'train', 'val' or 'test' split")
    for split in splits:
        if split not in cfg:
            continue
        samples = []
        for i, img in enumerate(_image_paths(cfg[split], root, data_yaml)):
            h, w = _image_size(img)
            boxes, cls = read_yolo_labels(_label_path(img), h, w, len(names))
            samples.append(Sample(img, boxes, cls, image_id=i + 1))
        if not samples:
            raise DatasetError(f"{data_yaml}: the '{split}' split has no images")
        splits[split] = samples
    return DetectionData(
        splits["train"], splits["val"], names, source=str(data_yaml), test=splits["test"]
    )


# --------------------------------------------------------------------------------------------
# COCO format
# --------------------------------------------------------------------------------------------


def load_coco_split(
    ann_json: str | Path, images_dir: str | Path | None = None
) -> tuple[list[Sample], list[str]]:
    """Samples and class names (category order by id) of one COCO instances file."""
    ann_json = Path(ann_json)
    if not ann_json.is_file():
        raise DatasetError(f"{ann_json}: no such file")
    try:
        coco = json.loads(ann_json.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{ann_json}: not valid JSON ({e})") from e
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DatasetError(f"{ann_json}: not a COCO instances file (no '{key}')")
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c["name"]) for c in cats]
    dirs = [Path(images_dir)] if images_dir else [ann_json.parent, ann_json.parent / "images"]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    samples = []
    for img in sorted(coco["images"], key=lambda i: i["id"]):
        path = next((d / img["file_name"] for d in dirs if (d / img["file_name"]).is_file()), None)
        if path is None:
            raise DatasetError(
                f"{ann_json}: image {img['file_name']} not found under "
                f"{', '.join(str(d) for d in dirs)}"
            )
        boxes, classes = [], []
        for ann in by_image.get(img["id"], []):
            if ann.get("iscrowd", 0):
                continue
            x, y, w, h = ann["bbox"]
            if w <= 0 or h <= 0:
                continue
            if ann["category_id"] not in cat_index:
                raise DatasetError(f"{ann_json}: unknown category_id {ann['category_id']}")
            boxes.append([x, y, x + w, y + h])
            classes.append(cat_index[ann["category_id"]])
        samples.append(
            Sample(
                path,
                np.array(boxes, np.float32).reshape(-1, 4),
                np.array(classes, np.int64),
                image_id=int(img["id"]),
            )
        )
    if not samples:
        raise DatasetError(f"{ann_json}: no images")
    return samples, names


def load_coco(
    train_json: str | Path, val_json: str | Path, images_dir: str | Path | None = None
) -> DetectionData:
    """A COCO-format dataset from its train and val instances files."""
    train, names = load_coco_split(train_json, images_dir)
    val, val_names = load_coco_split(val_json, images_dir)
    if names != val_names:
        raise DatasetError(f"{train_json} and {val_json} have different categories")
    return DetectionData(train, val, names, source=str(train_json))


def load_dataset(data: str | Path, val: str | Path | None = None) -> DetectionData:
    """``data.yaml`` (YOLO) or a COCO train JSON plus ``val`` (its val JSON)."""
    data = Path(data)
    if data.suffix.lower() in (".yaml", ".yml"):
        return load_yolo(data)
    if data.suffix.lower() == ".json":
        if val is None:
            raise DatasetError(f"{data}: a COCO dataset needs --val VAL.json as well")
        return load_coco(data, val)
    raise DatasetError(f"{data}: expected a YOLO data.yaml or a COCO instances .json")


# --------------------------------------------------------------------------------------------
# Augmentation and batches
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """Training augmentations; the defaults suit small synthetic or surveillance data.

    hsv_h / hsv_s / hsv_v: max random gain on hue (fraction of the circle), saturation and
        value; colour robustness at no geometric cost.
    flip: probability of a horizontal flip.
    scale: random zoom in [1 - scale, 1 + scale] around the inference letterbox size: objects
        of more sizes, at the price of slower convergence when large.
    translate: random shift, fraction of the input size.
    mosaic: probability of a 2x2 mosaic of four images (more objects and contexts per batch).
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.5
    hsv_v: float = 0.4
    flip: float = 0.5
    scale: float = 0.4
    translate: float = 0.1
    mosaic: float = 0.0


NO_AUGMENT = Augment(0, 0, 0, 0, 0, 0, 0)


def read_rgb(path: Path) -> np.ndarray:
    """`stages.detect.sources.read_image`, failing with a `DatasetError`."""
    try:
        return read_image(path)
    except SourceError as e:
        raise DatasetError(f"{path}: cannot read the image") from e


def _hsv(img: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    if not (aug.hsv_h or aug.hsv_s or aug.hsv_v):
        return img
    gains = rng.uniform(-1, 1, 3) * [aug.hsv_h, aug.hsv_s, aug.hsv_v] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def place(
    img: np.ndarray,
    boxes: np.ndarray,
    input_hw: tuple[int, int],
    resize_to: int,
    zoom: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox ``img`` as inference does (longest side -> ``resize_to``, centred), then
    zoom about the centre and shift by ``shift`` px; returns the (H, W, 3) canvas and boxes."""
    h, w = img.shape[:2]
    in_h, in_w = input_hw
    s = min(resize_to / h, resize_to / w) * zoom
    tx = (in_w - round(w * s)) // 2 + shift[0]  # integer centring, as `letterbox`
    ty = (in_h - round(h * s)) // 2 + shift[1]
    m = np.array([[s, 0, tx], [0, s, ty]], dtype=np.float64)
    out = cv2.warpAffine(img, m, (in_w, in_h), flags=cv2.INTER_LINEAR, borderValue=(PAD_VALUE,) * 3)
    b = boxes.astype(np.float64) * s
    b[:, [0, 2]] += tx
    b[:, [1, 3]] += ty
    return out, b.astype(np.float32)


def clip_boxes(
    boxes: np.ndarray,
    classes: np.ndarray,
    hw: tuple[int, int],
    min_size: float = 2.0,
    min_visible: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the canvas; drop boxes thinner than ``min_size`` px or with less than
    ``min_visible`` of their area left inside."""
    if not len(boxes):
        return boxes, classes
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    c = boxes.copy()
    c[:, [0, 2]] = c[:, [0, 2]].clip(0, hw[1])
    c[:, [1, 3]] = c[:, [1, 3]].clip(0, hw[0])
    bw, bh = c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]
    keep = (bw >= min_size) & (bh >= min_size) & (bw * bh >= min_visible * np.maximum(area, 1e-6))
    return c[keep], classes[keep]


class TrainDataset(torch.utils.data.Dataset):
    """Augmented training images: (3, H, W) uint8 tensors and (N, 5) ``[class, x1, y1, x2,
    y2]`` input-pixel targets. Randomness comes from ``(seed, epoch, index)`` only, so a run
    is the same whatever the number of loader workers."""

    def __init__(
        self,
        samples: list[Sample],
        input_hw: tuple[int, int],
        resize_to: int,
        augment: Augment = Augment(),
        seed: int = 0,
        cache: bool = False,
    ) -> None:
        self.samples = samples
        self.input_hw = input_hw
        self.resize_to = resize_to
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, float]] = {}

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The image at the inference letterbox scale, its boxes at that scale, and the
        scale. ``cache``: kept in memory after the first read (decode and resize once)."""
        s = self.samples[i]
        hit = self._cache.get(i)
        if hit is None:
            img = read_rgb(s.path)
            h, w = img.shape[:2]
            k = min(self.resize_to / h, self.resize_to / w)
            if k != 1.0:
                img = cv2.resize(
                    img,
                    (round(w * k), round(h * k)),
                    interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR,
                )
            hit = (img, k)
            if self.cache:
                self._cache[i] = hit
        img, k = hit
        return img, s.boxes * np.float32(k), k

    def __len__(self) -> int:
        return len(self.samples)

    def _one(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        aug = self.augment
        img, boxes, _ = self._load(i)
        zoom = 1 + rng.uniform(-aug.scale, aug.scale)
        shift = rng.uniform(-aug.translate, aug.translate, 2) * [self.input_hw[1], self.input_hw[0]]
        longest = max(img.shape[:2])
        img, boxes = place(img, boxes, self.input_hw, longest, zoom, (shift[0], shift[1]))
        return img, boxes, self.samples[i].classes

    def _mosaic(
        self, i: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        in_h, in_w = self.input_hw
        cy, cx = (int(rng.uniform(0.3, 0.7) * in_h), int(rng.uniform(0.3, 0.7) * in_w))
        canvas = np.full((in_h, in_w, 3), PAD_VALUE, np.uint8)
        all_boxes, all_cls = [], []
        ids = [i, *rng.integers(0, len(self.samples), 3).tolist()]
        cells = [(0, 0, cx, cy), (cx, 0, in_w, cy), (0, cy, cx, in_h), (cx, cy, in_w, in_h)]
        for j, (x0, y0, x1, y1) in zip(ids, cells, strict=True):
            img, base_boxes, _ = self._load(j)
            h, w = img.shape[:2]
            k = 1 + rng.uniform(-self.augment.scale, self.augment.scale)
            img = cv2.resize(img, (max(1, round(w * k)), max(1, round(h * k))))
            ih, iw = img.shape[:2]
            # anchor the image at the mosaic centre's corner of its cell
            ox = x1 - iw if x0 == 0 else x0
            oy = y1 - ih if y0 == 0 else y0
            sx0, sy0 = max(x0, ox), max(y0, oy)
            sx1, sy1 = min(x1, ox + iw), min(y1, oy + ih)
            if sx1 > sx0 and sy1 > sy0:
                canvas[sy0:sy1, sx0:sx1] = img[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox]
            b = base_boxes * np.float32(k)
            b[:, [0, 2]] += ox
            b[:, [1, 3]] += oy
            b[:, [0, 2]] = b[:, [0, 2]].clip(sx0, sx1)
            b[:, [1, 3]] = b[:, [1, 3]].clip(sy0, sy1)
            all_boxes.append(b)
            all_cls.append(self.samples[j].classes)
        return canvas, np.concatenate(all_boxes), np.concatenate(all_cls)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        aug = self.augment
        if aug.mosaic and rng.random() < aug.mosaic:
            img, boxes, classes = self._mosaic(i, rng)
        else:
            img, boxes, classes = self._one(i, rng)
        img = _hsv(img, rng, aug)
        boxes, classes = clip_boxes(boxes, classes, self.input_hw)
        if aug.flip and rng.random() < aug.flip:
            img = img[:, ::-1]
            w = self.input_hw[1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        chw = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        target = np.concatenate([classes[:, None].astype(np.float32), boxes.reshape(-1, 4)], 1)
        return chw, torch.from_numpy(target.astype(np.float32))


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images; targets become (M, 6) ``[image_index, class, x1, y1, x2, y2]``."""
    images = torch.stack([b[0] for b in batch])
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, (_, t) in enumerate(batch)]
    return images, torch.cat(rows) if rows else torch.zeros((0, 6))


def worker_init(_: int) -> None:
    """Loader workers: one OpenCV and torch thread each (the trainer owns the cores)."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
