"""A cheap appearance cue for the tracker: the colour layout of each detection's box.

Two people walking side by side, or crossing, give boxes that overlap and move alike: IoU and a
motion model cannot tell which is which, and ids flip between them. Their clothes can. Each
detection gets a small descriptor — the mean colour of a grid of cells over its box (4 bands
from head to feet, 2 halves left and right; 24 numbers) — computed from the image the detector
just saw, at the cost of one integral image per frame and four lookups per cell (no network,
no weights, a few hundred microseconds per frame on a CPU).

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

    images: (n, 3, H, W) uint8, a numpy array or a torch tensor (CPU or CUDA; computed where
        it lives). Returns one (k, DIM) float32 numpy array per image.
    """
    import torch

    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (n, 3, H, W), got {tuple(x.shape)}")
    if len(boxes) != x.shape[0]:
        raise ValueError(f"{len(boxes)} box arrays for {x.shape[0]} images")
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
        idx = [
            torch.as_tensor(np.broadcast_to(a, (len(b), ROWS, COLS)).copy(), device=x.device)
            for a in (yt, yb, xl, xr)
        ]
        t, bot, left, right = idx
        img = ii[slot]  # (3, H+1, W+1)
        sums = img[:, bot, right] - img[:, t, right] - img[:, bot, left] + img[:, t, left]
        area = ((bot - t) * (right - left)).to(torch.float32)
        means = sums.to(torch.float32) / area  # (3, k, ROWS, COLS)
        d = means.permute(1, 2, 3, 0).reshape(len(b), DIM)
        d = d - d.mean(dim=1, keepdim=True)
        d = d / (d.norm(dim=1, keepdim=True) + 1e-6)
        out[i] = d.cpu().numpy().astype(np.float32)
    return out


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
