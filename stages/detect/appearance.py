"""A cheap appearance cue for the tracker: the colour layout of each detection's box.

Two people walking side by side, or crossing, give boxes that overlap and move alike: IoU and a
motion model cannot tell which is which, and ids flip between them. Their clothes can. Each
detection gets a small descriptor — the mean colour of a grid of cells over its box (4 bands
from head to feet, 2 halves left and right; 24 numbers) — computed from the image the detector
just saw (no network, no weights; ~0.1-0.2 ms per box on a CPU, one integral image per frame
on a GPU).

The descriptor is centred (its mean over the 24 numbers subtracted, so a uniform brightness
change cancels) and L2-normalised, so two descriptors compare by their dot product (cosine
similarity in [-1, 1]). It is a weak cue on its own — same-coloured clothes look alike, and
an occluder's colours leak into a partly hidden box — so the tracker uses it only to rank pairs
that motion and overlap already allow, and it learns a track's look only from unoccluded views
(`stages.track.tracker`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

ROWS, COLS = 4, 2
DIM = 3 * ROWS * COLS
SIDE_MARGIN = 0.15
"""Fraction of the box width left out on each side: a box's side strips are mostly background
(a walking person fills the middle of their box)."""


def describe(images: Any, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Descriptors for ``boxes[i]`` ((k, 4) xyxy pixels of image i) in ``images``.

    images: (n, 3, H, W) uint8, a numpy array or a torch tensor. Host images are read box by
        box (two numpy reductions per box, ~0.1-0.2 ms on this project's CI VM); CUDA tensors
        through one integral image per image on the GPU (no per-box kernel launches). Both
        give the same numbers.
        Returns one (k, DIM) float32 numpy array per image.
    """
    shape = tuple(images.shape)
    if len(shape) != 4 or shape[1] != 3:
        raise ValueError(f"images must be (n, 3, H, W), got {shape}")
    if len(boxes) != shape[0]:
        raise ValueError(f"{len(boxes)} box arrays for {shape[0]} images")
    on_gpu = getattr(getattr(images, "device", None), "type", "cpu") == "cuda"
    if on_gpu:
        return _describe_integral(images, boxes)
    host = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    return [_describe_host(host[i], boxes[i]) for i in range(shape[0])]


def _describe_host(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(k, DIM) for one (3, H, W) uint8 image."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros((0, DIM), np.float32)
    _, h, w = image.shape
    ys, xs = _edges(b, h, w)
    out = np.empty((len(b), 3, ROWS, COLS), np.float64)
    for j in range(len(b)):
        y, x = ys[j], xs[j]
        crop = image[:, y[0] : y[-1], x[0] : x[-1]]
        sums = np.add.reduceat(np.add.reduceat(crop, y[:-1] - y[0], axis=1, dtype=np.int64),
                               x[:-1] - x[0], axis=2)  # fmt: skip
        out[j] = sums / (np.diff(y)[:, None] * np.diff(x)[None, :])
    return _normalise(out.transpose(0, 2, 3, 1).reshape(len(b), DIM))


def _describe_integral(images: Any, boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The same descriptors from integral images, computed where the tensor lives."""
    import torch

    x = torch.as_tensor(images)
    n, _, h, w = x.shape
    out: list[np.ndarray] = [np.zeros((0, DIM), np.float32)] * n
    todo = [i for i in range(n) if len(boxes[i])]
    if not todo:
        return out
    # integral images of the images that have boxes: int32 holds 255 * 4096 * 2048 exactly
    ii = torch.zeros((len(todo), 3, h + 1, w + 1), dtype=torch.int32, device=x.device)
    rows = x[todo].to(torch.int32).cumsum(2, dtype=torch.int32)
    ii[:, :, 1:, 1:] = rows.cumsum(3, dtype=torch.int32)
    for slot, i in enumerate(todo):
        b = np.asarray(boxes[i], np.float64).reshape(-1, 4)
        ys, xs = _edges(b, h, w)  # (k, ROWS+1), (k, COLS+1) integer pixel edges
        yt, yb = ys[:, :-1, None], ys[:, 1:, None]  # (k, ROWS, 1)
        xl, xr = xs[:, None, :-1], xs[:, None, 1:]  # (k, 1, COLS)
        t, bot, left, right = (
            torch.as_tensor(np.broadcast_to(a, (len(b), ROWS, COLS)).copy(), device=x.device)
            for a in (yt, yb, xl, xr)
        )
        img = ii[slot]  # (3, H+1, W+1)
        sums = img[:, bot, right] - img[:, t, right] - img[:, bot, left] + img[:, t, left]
        means = sums.to(torch.float64) / ((bot - t) * (right - left)).to(torch.float64)
        d = means.permute(1, 2, 3, 0).reshape(len(b), DIM)  # (k, ROWS, COLS, 3) order
        out[i] = _normalise(d.cpu().numpy())
    return out


def _normalise(d: np.ndarray) -> np.ndarray:
    d = d - d.mean(axis=1, keepdims=True)
    return (d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-6)).astype(np.float32)


def _edges(b: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer cell edges inside each box (clipped to the image), every cell at least 1 px."""
    bw = b[:, 2] - b[:, 0]
    x1 = b[:, 0] + SIDE_MARGIN * bw
    x2 = b[:, 2] - SIDE_MARGIN * bw
    fy = np.linspace(0.0, 1.0, ROWS + 1)
    fx = np.linspace(0.0, 1.0, COLS + 1)
    ys = b[:, 1:2] + (b[:, 3:4] - b[:, 1:2]) * fy[None, :]
    xs = x1[:, None] + (x2 - x1)[:, None] * fx[None, :]
    return _monotone(ys, h, ROWS), _monotone(xs, w, COLS)


def _monotone(e: np.ndarray, size: int, cells: int) -> np.ndarray:
    e = np.rint(e).astype(np.int64)
    e[:, 0] = np.clip(e[:, 0], 0, max(0, size - cells))
    for j in range(1, cells + 1):  # each edge at least one pixel past the previous one
        e[:, j] = np.minimum(np.maximum(e[:, j], e[:, j - 1] + 1), size - (cells - j))
    return e
