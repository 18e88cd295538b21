"""Box similarity and linear assignment (the solver is scipy's `linear_sum_assignment`)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

_INVALID_COST = 1e6


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))
    bx1, by1, bx2, by2 = (b[:, i] for i in range(4))
    iw = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    ih = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def assign(similarity: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-similarity one-to-one matching restricted to ``valid`` pairs.

    ``similarity`` and ``valid`` are (N, M). Returns the matched row and column indices (two
    int arrays of equal length). Among valid pairs the solver maximises the number of matches
    first and the total similarity second, so a good pair is never dropped to gain a little
    similarity elsewhere.
    """
    n, m = similarity.shape
    if n == 0 or m == 0 or not valid.any():
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    # An invalid pair costs more than any set of valid ones can gain, so the solver takes one
    # only when a row has nothing else; those pairs are dropped afterwards. (scipy's solver is
    # ~10x faster than lap.lapjv with extend_cost on the 10-50 sized problems of a camera.)
    cost = np.where(valid, -similarity, _INVALID_COST)
    rows, cols = linear_sum_assignment(cost)
    keep = valid[rows, cols]
    return rows[keep], cols[keep]
