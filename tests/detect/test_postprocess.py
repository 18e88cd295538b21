"""Postprocessing rules on hand-made cases, and NMS against an independent slow greedy NMS.

The byte-for-byte comparison with super-gradients/torchvision is in tests/parity (stress
cases and real model outputs); here each rule is pinned by a case small enough to read.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.detect.postprocess import (
    _float32_threshold,
    batched_nms,
    postprocess,
    postprocess_numpy,
)
from stages.detect.types import NMSParams

P = NMSParams()  # the reference predict() defaults


def _one(boxes: list[list[float]], scores: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor([boxes], dtype=torch.float32),
        torch.tensor([scores], dtype=torch.float32),
    )


def _slow_greedy_nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float
) -> list[int]:
    """Textbook per-class greedy NMS (torchvision's CPU kernel, one class at a time)."""
    keep: list[int] = []
    for c in np.unique(classes):
        idx = np.nonzero(classes == c)[0]
        order = idx[np.argsort(-scores[idx], kind="stable")]
        suppressed = np.zeros(len(boxes), bool)
        for a, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(int(i))
            for j in order[a + 1 :]:
                if suppressed[j]:
                    continue
                b1, b2 = boxes[i], boxes[j]
                w = max(np.float32(0), min(b1[2], b2[2]) - max(b1[0], b2[0]))
                h = max(np.float32(0), min(b1[3], b2[3]) - max(b1[1], b2[1]))
                inter = np.float32(w * h)
                a1 = np.float32((b1[2] - b1[0]) * (b1[3] - b1[1]))
                a2 = np.float32((b2[2] - b2[0]) * (b2[3] - b2[1]))
                if float(np.float32(inter / np.float32(a1 + a2 - inter))) > iou:
                    suppressed[j] = True
    return sorted(keep, key=lambda k: (-scores[k], k))


def test_no_anchors_gives_empty() -> None:
    out = postprocess(torch.zeros((2, 0, 4)), torch.zeros((2, 0, 80)), P)
    assert len(out) == 2
    for det in out:
        assert len(det) == 0
        assert det.boxes.shape == (0, 4) and det.boxes.dtype == np.float32
        assert det.class_ids.dtype == np.int64


def test_all_below_threshold_gives_empty() -> None:
    boxes, scores = _one([[0, 0, 10, 10], [20, 20, 30, 30]], [[0.25, 0.1], [0.2, 0.0]])
    assert len(postprocess(boxes, scores, P)[0]) == 0  # 0.25 is not > 0.25


def test_threshold_strictness_differs_between_modes() -> None:
    boxes, scores = _one([[0, 0, 10, 10]], [[0.25, 0.1]])
    assert len(postprocess(boxes, scores, P)[0]) == 0  # multi-label: score > conf
    single = postprocess(boxes, scores, NMSParams(multi_label=False))[0]
    assert len(single) == 1 and single.scores[0] == np.float32(0.25)  # single: >= conf


def test_multi_label_yields_one_detection_per_class_above_conf() -> None:
    boxes, scores = _one([[0, 0, 10, 10]], [[0.9, 0.1, 0.6, 0.3]])
    det = postprocess(boxes, scores, P)[0]
    np.testing.assert_array_equal(det.class_ids, [0, 2, 3])
    np.testing.assert_array_equal(det.scores, np.float32([0.9, 0.6, 0.3]))
    np.testing.assert_array_equal(det.boxes, np.float32([[0, 0, 10, 10]] * 3))

    single = postprocess(boxes, scores, NMSParams(multi_label=False))[0]
    np.testing.assert_array_equal(single.class_ids, [0])


def test_class_aware_suppression() -> None:
    a, b = [0, 0, 10, 10], [0, 0, 10, 9.5]  # IoU 0.95
    boxes, scores = _one([a, b], [[0.9, 0.0], [0.8, 0.0]])
    det = postprocess(boxes, scores, P)[0]
    np.testing.assert_array_equal(det.scores, np.float32([0.9]))  # same class: suppressed

    boxes, scores = _one([a, b], [[0.9, 0.0], [0.0, 0.8]])
    det = postprocess(boxes, scores, P)[0]
    np.testing.assert_array_equal(det.class_ids, [0, 1])  # other class: kept
    det = postprocess(boxes, scores, P, class_agnostic=True)[0]
    np.testing.assert_array_equal(det.class_ids, [0])  # agnostic: suppressed


def test_suppression_is_greedy_not_transitive() -> None:
    # A suppresses B, B would suppress C, but B is gone, so C survives.
    a, b, c = [0, 0, 10, 10], [1.5, 0, 11.5, 10], [3, 0, 13, 10]
    boxes, scores = _one([a, b, c], [[0.9], [0.8], [0.7]])
    det = postprocess(boxes, scores, NMSParams(iou=0.7))[0]
    np.testing.assert_array_equal(det.scores, np.float32([0.9, 0.7]))


def test_iou_equal_to_threshold_is_kept() -> None:
    # inter 2, union 4: IoU exactly 0.5; suppression needs IoU > iou
    boxes, scores = _one([[0, 0, 4, 1], [0, 0, 2, 1]], [[0.9], [0.8]])
    assert len(postprocess(boxes, scores, NMSParams(iou=0.5))[0]) == 2
    assert len(postprocess(boxes, scores, NMSParams(iou=0.4999))[0]) == 1


def test_float32_threshold_keeps_double_comparison_semantics() -> None:
    for thr in (0.1, 0.7, 0.45, 0.65, 0.5, 1 / 3):
        t = _float32_threshold(thr)
        x = np.float32(thr)
        below = np.nextafter(x, np.float32(0))
        above = np.nextafter(x, np.float32(1))
        for v in (below, x, above):
            assert (float(v) > thr) == (float(v) > t), (thr, v)


def test_top_k_keeps_the_best_candidates_only() -> None:
    n = 50
    boxes = torch.tensor([[[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(n)]])  # disjoint
    scores = torch.linspace(0.3, 0.8, n).reshape(1, n, 1)
    det = postprocess(boxes, scores, NMSParams(top_k=7))[0]
    assert len(det) == 7
    np.testing.assert_array_equal(det.scores, scores[0, -7:, 0].flip(0).numpy())


def test_max_det_truncates_by_score() -> None:
    n = 40
    boxes = torch.tensor([[[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(n)]])
    scores = torch.rand(1, n, 3, generator=torch.Generator().manual_seed(0)) * 0.7 + 0.3
    full = postprocess(boxes, scores, NMSParams(max_det=1000))[0]
    capped = postprocess(boxes, scores, NMSParams(max_det=10))[0]
    assert len(full) == 3 * n
    np.testing.assert_array_equal(capped.scores, full.scores[:10])
    np.testing.assert_array_equal(capped.boxes, full.boxes[:10])
    assert np.all(np.diff(full.scores) <= 0)


def test_batch_images_are_independent() -> None:
    b1, s1 = _one([[0, 0, 10, 10]], [[0.9, 0.0]])
    b2, s2 = _one([[5, 5, 50, 50]], [[0.0, 0.3]])
    out = postprocess(torch.cat([b1, b2]), torch.cat([s1, s2]), P)
    np.testing.assert_array_equal(out[0].class_ids, [0])
    np.testing.assert_array_equal(out[1].class_ids, [1])
    np.testing.assert_array_equal(out[1].boxes, np.float32([[5, 5, 50, 50]]))


def test_half_precision_and_numpy_inputs() -> None:
    b, s = _one([[0, 0, 10, 10], [0, 0, 10, 9.5]], [[0.9], [0.8]])
    ref = postprocess(b, s, P)[0]
    half = postprocess(b.half(), s.half(), P)[0]
    assert half.boxes.dtype == np.float32 and len(half) == len(ref) == 1
    via_numpy = postprocess_numpy(b.numpy(), s.numpy(), P)[0]
    np.testing.assert_array_equal(via_numpy.boxes, ref.boxes)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="expected"):
        postprocess(torch.zeros(10, 4), torch.zeros(10, 80), P)
    with pytest.raises(ValueError, match="disagree"):
        postprocess(torch.zeros(1, 10, 4), torch.zeros(1, 11, 80), P)


@pytest.mark.parametrize(("n", "grid"), [(300, 0.125), (1500, 0.125), (1500, 0.0)])
def test_batched_nms_matches_slow_greedy(n: int, grid: float) -> None:
    """300 boxes take torchvision's coordinate-offset path, 1500 its per-class path; on
    coordinates that are multiples of 1/8 the offsets are exact, so both equal the textbook
    per-class greedy NMS; with arbitrary floats the per-class path must still match it."""
    rng = np.random.default_rng(n)
    centres = rng.uniform(0, 640, size=(n // 10, 2))
    c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 6, size=(n, 2))
    wh = rng.uniform(10, 120, size=(n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1).clip(0, 640)
    if grid:
        boxes = np.round(boxes / grid) * grid
    boxes = boxes.astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n + 0.01  # distinct scores
    classes = rng.integers(0, 5, n)
    ours = batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), 0.6
    ).tolist()
    expected = _slow_greedy_nms(boxes, scores, classes, 0.6)
    assert 0 < len(expected) < n  # the case does suppress something
    assert ours == expected
