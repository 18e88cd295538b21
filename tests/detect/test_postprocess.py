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
from stages.detect.types import Detections, NMSParams

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


# ------------------------------------------------------------------ batched = per image


def assert_same_detection_sets(got: Detections, want: Detections) -> None:
    """The same detections as a set of (class, score, box) rows: for cases where exactly equal
    scores may leave a top-k cut (or NMS) in another order. Rows are compared exactly."""

    def rows(d: Detections) -> list[tuple[float, ...]]:
        return sorted(
            (float(c), float(s), *map(float, b))
            for b, s, c in zip(d.boxes, d.scores, d.class_ids, strict=True)
        )

    assert rows(got) == rows(want)


def assert_same_detections(got: Detections, want: Detections) -> None:
    """Equal arrays: same boxes, scores and classes in the same order, same dtypes."""
    assert got.boxes.dtype == want.boxes.dtype == np.float32
    assert got.scores.dtype == want.scores.dtype == np.float32
    assert got.class_ids.dtype == want.class_ids.dtype == np.int64
    np.testing.assert_array_equal(got.boxes, want.boxes)
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.class_ids, want.class_ids)


def _model_like(bsz: int, n: int, c: int, hot: list[float], seed: int,
                grid: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Boxes clustered around objects (so NMS has work), sigmoid-like scores with image b's
    share of hot (above-threshold) pairs ``hot[b]``: from none to thousands (top-k cut, and
    torchvision's per-class path above 1000 boxes on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(bsz, max(1, n // 20), 2, generator=g) * 600
    pick = torch.randint(0, centres.shape[1], (bsz, n), generator=g)
    ctr = (
        centres.gather(1, pick[..., None].expand(bsz, n, 2))
        + torch.randn(bsz, n, 2, generator=g) * 5
    )
    wh = torch.rand(bsz, n, 2, generator=g) * 100 + 10
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], dim=2).clamp(0, 640)
    if grid:
        boxes = torch.round(boxes / grid) * grid
    scores = torch.rand(bsz, n, c, generator=g) * 0.2  # below conf
    for b, frac in enumerate(hot):
        mask = torch.rand(n, c, generator=g) < frac
        k = int(mask.sum())  # distinct scores (no ties: the order is defined)
        scores[b][mask] = 0.26 + 0.7 * torch.randperm(k, generator=g).float() / max(k, 1)
    return boxes, scores


@pytest.mark.parametrize(
    "params",
    [
        P,
        NMSParams(multi_label=False),
        NMSParams(max_det=5),
        NMSParams(top_k=50, iou=0.5),
        NMSParams(conf=0.9),  # some images have nothing
    ],
    ids=["default", "single_label", "max_det_5", "top_k_50", "empty_images"],
)
@pytest.mark.parametrize("class_agnostic", [False, True])
def test_batched_postprocess_equals_the_per_image_path(params: NMSParams,
                                                       class_agnostic: bool) -> None:  # fmt: skip
    """Four images from nothing above the threshold to 3000 candidates (top-k cut at 1024 and
    torchvision's per-class path): the batched path gives each image the same boxes, scores
    and classes in the same order as the per-image path. Scores are continuous random floats,
    so no two are equal and the order is defined."""
    boxes, scores = _model_like(4, 2000, 8, hot=[0.0, 0.002, 0.03, 0.2], seed=1)
    per_image = postprocess(boxes, scores, params, class_agnostic, batched=False)
    batched = postprocess(boxes, scores, params, class_agnostic, batched=True)
    assert len(batched) == len(per_image) == 4
    assert sum(len(d) for d in per_image) > 0 or params.conf == 0.9
    for got, want in zip(batched, per_image, strict=True):
        assert_same_detections(got, want)


def test_batched_postprocess_uses_torchvisions_two_paths_per_image() -> None:
    """One image under torchvision's offset-path limit (few candidates), one over it (per-class
    NMS on original coordinates), in one batch: each follows its own path as it does alone. On
    coordinates that are multiples of 1/8 the paths agree exactly, so use arbitrary floats."""
    boxes, scores = _model_like(2, 3000, 4, hot=[0.01, 0.3], seed=7)
    params = NMSParams(top_k=2000, max_det=2000)
    per_image = postprocess(boxes, scores, params, batched=False)
    assert len(per_image[1]) > 300  # enough kept boxes to tell paths apart
    for got, want in zip(postprocess(boxes, scores, params, batched=True), per_image, strict=True):
        assert_same_detections(got, want)


def test_batched_postprocess_with_equal_scores() -> None:
    """Scores quantised to 1/64 tie a lot. Without a top-k cut the order is defined (score,
    then anchor-major, a stable sort in both paths): equal. With a cut, which of several equal
    scores `torch.topk` keeps, and in what order, is not defined (the per-image path has the
    same freedom as the reference); on boxes that do not overlap (so the order among equals
    cannot change what NMS keeps) the two paths give the same sets."""
    boxes, scores = _model_like(3, 1500, 6, hot=[0.01, 0.05, 0.2], seed=3, grid=0.5)
    scores = torch.round(scores * 64) / 64
    everything = NMSParams(top_k=100000, max_det=100000)
    per_image = postprocess(boxes, scores, everything, batched=False)
    assert any(len(np.unique(d.scores)) < len(d) for d in per_image)  # ties
    for got, want in zip(postprocess(boxes, scores, everything, batched=True), per_image,
                         strict=True):  # fmt: skip
        assert_same_detections(got, want)

    n = 400  # disjoint boxes on a grid, 2 classes, scores in 8 levels: a cut among equals
    i = torch.arange(n, dtype=torch.float32)
    grid = torch.stack([(i % 20) * 30, (i // 20) * 30], dim=1)
    disjoint = torch.cat([grid, grid + 20], dim=1)[None].repeat(2, 1, 1)
    g = torch.Generator().manual_seed(5)
    levels = (torch.randint(0, 8, (2, n, 2), generator=g).float() + 20) / 32
    cut = NMSParams(top_k=150, max_det=1000)
    per_image = postprocess(disjoint, levels, cut, batched=False)
    assert [len(d) for d in per_image] == [150, 150]
    for got, want in zip(postprocess(disjoint, levels, cut, batched=True), per_image,
                         strict=True):  # fmt: skip
        np.testing.assert_array_equal(got.scores, want.scores)  # same scores, same order
        above = float(want.scores.min())  # the cut: equals there may be other boxes
        assert_same_detection_sets(_above(got, above), _above(want, above))


def _above(d: Detections, score: float) -> Detections:
    m = d.scores > score
    return Detections(d.boxes[m], d.scores[m], d.class_ids[m])


def test_batched_postprocess_one_image_and_no_anchors() -> None:
    b, s = _one([[0, 0, 10, 10], [0, 0, 10, 9.5], [20, 20, 30, 30]], [[0.9], [0.8], [0.7]])
    (det,) = postprocess(b, s, P, batched=True)
    np.testing.assert_array_equal(det.scores, np.float32([0.9, 0.7]))
    out = postprocess(torch.zeros((3, 0, 4)), torch.zeros((3, 0, 80)), P, batched=True)
    assert [len(d) for d in out] == [0, 0, 0] and out[0].boxes.shape == (0, 4)


def test_batched_postprocess_equals_super_gradients_on_the_parity_stress_cases() -> None:
    """The golden stress cases of tests/parity (super-gradients 3.7.1's own detections on
    8400-anchor, 80-class outputs: top-k cut, per-class path, offset path, single label,
    class-agnostic), run as one batch per parameter set with the batched path: every image
    equals the reference row for row."""
    import sys
    from pathlib import Path

    parity = Path(__file__).resolve().parents[1] / "parity"
    if str(parity) not in sys.path:
        sys.path.insert(0, str(parity))
    from synthetic_images import STRESS_CASES, stress_outputs

    with np.load(parity / "golden" / "stress.npz") as z:
        golden = {k: z[k] for k in z.files}
    cases = list(STRESS_CASES)
    assert len(cases) >= 3
    for case in cases:
        prm = STRESS_CASES[case]
        params = NMSParams(prm.conf, prm.iou, prm.multi_label, prm.top_k, prm.max_det)
        boxes, scores = stress_outputs(case)
        # the case three times over, next to an image with nothing in it
        b = torch.from_numpy(np.concatenate([boxes, boxes, 0 * boxes, boxes]))
        s = torch.from_numpy(np.concatenate([scores, scores, 0 * scores, scores]))
        out = postprocess(b, s, params, prm.agnostic, batched=True)
        assert len(out[2]) == 0
        expected = golden[case]
        for det in (out[0], out[1], out[3]):
            assert len(det) == len(expected) > 20
            np.testing.assert_array_equal(det.scores, expected[:, 4])
            np.testing.assert_array_equal(det.class_ids, expected[:, 5].astype(np.int64))
            np.testing.assert_array_equal(det.boxes, expected[:, :4])


@pytest.mark.gpu
def test_batched_postprocess_on_cuda_equals_both_per_image_paths() -> None:
    """On the GPU (where `postprocess` batches by default): the batched path on CUDA tensors
    gives every image the same detections as the per-image path on CUDA, and, for images under
    the CPU's per-class-path limit (1000 boxes: the CPU and CUDA reference paths differ above
    it), as the per-image path on the CPU."""
    hot = [0.0, 1e-4, 5e-4, 1e-3, 0.01, 0.02]  # ~0 .. 13000 candidates of 8400 x 80
    boxes, scores = _model_like(6, 8400, 80, hot=hot, seed=11)
    for params in (P, NMSParams(multi_label=False), NMSParams(top_k=100, max_det=50)):
        cpu = postprocess(boxes, scores, params, batched=False)
        gpu_per_image = postprocess(boxes.cuda(), scores.cuda(), params, batched=False)
        gpu_batched = postprocess(boxes.cuda(), scores.cuda(), params)  # the default there
        for i, (got, a, b) in enumerate(zip(gpu_batched, gpu_per_image, cpu, strict=True)):
            assert_same_detections(got, a)
            if hot[i] <= 1e-3 or params.top_k <= 1000:
                assert_same_detections(got, b)
