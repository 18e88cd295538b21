"""Letterboxing exactly as YOLO-NAS was trained and as super-gradients 3.7.1 ``predict()`` does it.

The reference chain (``default_yolo_nas_coco_processing_params``) is:

1. scale = min(636 / H, 636 / W); unless scale == 1, resize to
   (round(H * scale), round(W * scale)) with ``cv2.INTER_LINEAR``. ``round`` is Python's
   round-half-to-even, applied to the float64 product.
2. centre-pad to 640x640 with 114: top = (640 - h) // 2, the odd pixel goes to the bottom
   (and to the right for the width).
3. divide by 255 (float64, then cast to float32), HWC -> CHW.

We stop at step 2 and keep uint8 CHW: it is a quarter of the float32 size in shared memory and
on the host-to-device copy, and :func:`to_float` (or the same division on the GPU) reproduces
step 3 bit for bit: float32(x) / float32(255) is correctly rounded, and so is float64 division
followed by a cast, because float64 carries more than twice float32's precision.

Speed: one ``cv2.resize`` into a small HWC scratch image, one strided copy into the CHW
destination (which may be a row of a preallocated batch slab), and only the padding borders
are filled. No per-pixel Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from pipeline.payloads import LetterboxMeta

PAD_VALUE = 114
"""Grey of the padding, as in training."""


def resize_to_for(input_hw: tuple[int, int]) -> int:
    """The longest side after resizing for a model input of ``input_hw``: the smaller input
    side minus 4 px (636 for 640x640, 316 for 320x320), as YOLO-NAS trains and predicts."""
    if len(input_hw) != 2 or min(input_hw) <= 4:
        raise ValueError(f"input_hw must be (height, width) > 4, got {input_hw}")
    return min(input_hw) - 4


def letterbox_geometry(
    src_h: int, src_w: int, input_hw: tuple[int, int] = (640, 640), resize_to: int = 636
) -> tuple[int, int, LetterboxMeta]:
    """The resized size (h, w) and the mapping for a ``src_h`` x ``src_w`` image.

    ``resize_to`` is the longest side after resizing; the remaining 2 px per side of the
    default 640 input are always padding, as in training.
    """
    if src_h <= 0 or src_w <= 0:
        raise ValueError(f"image must be non-empty, got {src_h}x{src_w}")
    scale = min(resize_to / src_h, resize_to / src_w)
    if scale != 1.0:
        new_h, new_w = round(src_h * scale), round(src_w * scale)
    else:
        new_h, new_w = src_h, src_w
    in_h, in_w = input_hw
    if not (0 < new_h <= in_h and 0 < new_w <= in_w):
        raise ValueError(
            f"a {src_h}x{src_w} image resizes to {new_h}x{new_w}, which does not fit a "
            f"{in_h}x{in_w} input (aspect ratio too extreme, or resize_to > input size)"
        )
    pad_top = (in_h - new_h) // 2
    pad_left = (in_w - new_w) // 2
    meta = LetterboxMeta(src_h=src_h, src_w=src_w, scale=scale, pad_top=pad_top, pad_left=pad_left)
    return new_h, new_w, meta


def letterbox(
    image_rgb: np.ndarray,
    out: np.ndarray | None = None,
    input_hw: tuple[int, int] = (640, 640),
    resize_to: int = 636,
) -> tuple[np.ndarray, LetterboxMeta]:
    """Resize and centre-pad one (H, W, 3) uint8 RGB image into a (3, *input_hw) uint8 array.

    ``out``, when given, is written in place (it may be a view such as ``slab[i]``) and
    returned; otherwise a new array is allocated. The channel order is kept (RGB in, RGB out).
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}"
        )
    in_h, in_w = input_hw
    if out is None:
        out = np.empty((3, in_h, in_w), dtype=np.uint8)
    elif out.shape != (3, in_h, in_w) or out.dtype != np.uint8:
        raise ValueError(f"out must be (3, {in_h}, {in_w}) uint8, got {out.shape} {out.dtype}")

    src_h, src_w = image_rgb.shape[:2]
    new_h, new_w, meta = letterbox_geometry(src_h, src_w, input_hw, resize_to)

    if (new_h, new_w) != (src_h, src_w):
        # cv2 rejects negative strides (e.g. a BGR->RGB ``[..., ::-1]`` view): copy only then.
        resized = cv2.resize(
            np.ascontiguousarray(image_rgb), (new_w, new_h), interpolation=cv2.INTER_LINEAR
        )
    else:
        resized = image_rgb
    top, left = meta.pad_top, meta.pad_left
    bottom, right = top + new_h, left + new_w
    np.copyto(out[:, top:bottom, left:right], resized.transpose(2, 0, 1))

    out[:, :top, :] = PAD_VALUE
    out[:, bottom:, :] = PAD_VALUE
    out[:, top:bottom, :left] = PAD_VALUE
    out[:, top:bottom, right:] = PAD_VALUE
    return out, meta


def letterbox_batch(
    images: Sequence[np.ndarray],
    out: np.ndarray | None = None,
    input_hw: tuple[int, int] = (640, 640),
    resize_to: int = 636,
) -> tuple[np.ndarray, list[LetterboxMeta]]:
    """Letterbox several images into rows of one (B, 3, *input_hw) uint8 batch.

    ``out`` may be larger than ``len(images)`` along the batch axis (a reusable slab); only
    the first ``len(images)`` rows are written, and that leading view is returned.
    """
    n = len(images)
    in_h, in_w = input_hw
    if out is None:
        out = np.empty((n, 3, in_h, in_w), dtype=np.uint8)
    elif out.ndim != 4 or out.shape[0] < n or out.shape[1:] != (3, in_h, in_w):
        raise ValueError(f"out must be (>= {n}, 3, {in_h}, {in_w}) uint8, got {out.shape}")
    metas = [letterbox(img, out[i], input_hw, resize_to)[1] for i, img in enumerate(images)]
    return out[:n], metas


def letterbox_device(
    image_rgb: Any,
    input_hw: tuple[int, int] = (640, 640),
    resize_to: int = 636,
    out: Any = None,
) -> tuple[Any, LetterboxMeta]:
    """`letterbox` in torch on the image's own device (a GPU: frames uploaded from the pinned
    slab are resized and padded there, and preprocess workers only copy).

    ``image_rgb``: an (H, W, 3) uint8 tensor; returns a (3, *input_hw) uint8 tensor on the same
    device (``out`` when given, written in place: e.g. a row of a device batch) and the same
    `LetterboxMeta` as `letterbox`. The resize is bilinear with half-pixel centres like
    ``cv2.INTER_LINEAR``, computed in float32 and rounded; OpenCV uses 11-bit fixed-point
    weights, so pixels may differ by about 1 grey level (not bit-exact; the detections agree:
    tests/bench/bench_gpu_hotpath.py letterbox). Runs on CPU tensors too.
    """
    import torch
    import torch.nn.functional as F

    if (
        not isinstance(image_rgb, torch.Tensor)
        or image_rgb.ndim != 3
        or image_rgb.shape[2] != 3
        or image_rgb.dtype != torch.uint8
    ):
        raise ValueError(
            f"expected an (H, W, 3) uint8 tensor, got {getattr(image_rgb, 'shape', None)} "
            f"{getattr(image_rgb, 'dtype', type(image_rgb).__name__)}"
        )
    in_h, in_w = input_hw
    src_h, src_w = int(image_rgb.shape[0]), int(image_rgb.shape[1])
    new_h, new_w, meta = letterbox_geometry(src_h, src_w, input_hw, resize_to)
    if out is None:
        out = torch.empty((3, in_h, in_w), dtype=torch.uint8, device=image_rgb.device)
    elif tuple(out.shape) != (3, in_h, in_w) or out.dtype != torch.uint8:
        raise ValueError(f"out must be (3, {in_h}, {in_w}) uint8, got {tuple(out.shape)}")
    chw = image_rgb.permute(2, 0, 1)
    if (new_h, new_w) != (src_h, src_w):
        x = F.interpolate(chw[None].float(), size=(new_h, new_w), mode="bilinear",
                          align_corners=False, antialias=False)[0]  # fmt: skip
        chw = x.round_().clamp_(0, 255).to(torch.uint8)
    top, left = meta.pad_top, meta.pad_left
    bottom, right = top + new_h, left + new_w
    out[:, top:bottom, left:right] = chw
    out[:, :top, :] = PAD_VALUE
    out[:, bottom:, :] = PAD_VALUE
    out[:, top:bottom, :left] = PAD_VALUE
    out[:, top:bottom, right:] = PAD_VALUE
    return out, meta


def to_float(batch_u8: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], bit-identical to the reference's ``(x / 255.0).astype(f32)``.

    Works on any shape (a single (3, H, W) image or a batch).
    """
    return np.divide(batch_u8, np.float32(255.0), dtype=np.float32)
