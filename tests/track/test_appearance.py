"""The appearance cue: colour-layout descriptors, and the tracker keeping two overlapping objects
apart by their looks where overlap and motion cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from track_helpers import box

from stages.detect.appearance import DIM, _describe_integral, describe
from stages.track.config import TrackerConfig
from stages.track.tracker import Tracker


def _canvas() -> np.ndarray:
    """(1, 3, 240, 320) uint8: grey street, a red-over-blue person and a green-over-yellow one."""
    img = np.full((240, 320, 3), 90, np.uint8)
    img[40:100, 50:80] = (200, 30, 30)  # red shirt
    img[100:160, 50:80] = (30, 30, 200)  # blue trousers
    img[40:100, 200:230] = (40, 190, 40)  # green shirt
    img[100:160, 200:230] = (210, 200, 40)  # yellow trousers
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


RED_BLUE = [48.0, 40.0, 82.0, 160.0]
GREEN_YELLOW = [198.0, 40.0, 232.0, 160.0]


def test_descriptors_are_unit_vectors_that_tell_two_people_apart() -> None:
    (d,) = describe(_canvas(), [np.array([RED_BLUE, GREEN_YELLOW, RED_BLUE])])
    assert d.shape == (3, DIM) and d.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert d[0] @ d[2] == pytest.approx(1.0, abs=1e-6)  # same box, same descriptor
    assert d[0] @ d[1] < 0.3  # different clothes: far apart


def test_a_uniform_brightness_change_does_not_change_the_look() -> None:
    img = _canvas()
    brighter = np.clip(img.astype(np.int32) + 30, 0, 255).astype(np.uint8)
    (a,) = describe(img, [np.array([RED_BLUE])])
    (b,) = describe(brighter, [np.array([RED_BLUE])])
    assert float(a[0] @ b[0]) > 0.99


EDGE_CASES = [
    [300.0, 200.0, 340.0, 260.0],  # runs off the bottom-right corner
    [-20.0, -10.0, 3.0, 5.0],  # mostly outside, top-left
    [100.0, 100.0, 100.5, 100.2],  # less than a pixel
    [319.0, 239.0, 319.0, 239.0],  # empty, on the last pixel
]


def test_host_and_integral_image_paths_agree_and_empty_images_cost_nothing() -> None:
    """Host arrays go box by box, CUDA tensors through integral images: same numbers (the
    integral path is run here on a CPU tensor; tests below run it on the GPU)."""
    img = _canvas()
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, img.shape, dtype=np.uint8)
    boxes = [np.array([RED_BLUE, GREEN_YELLOW, *EDGE_CASES])]
    for image in (img, noisy):
        (from_np,) = describe(image, boxes)
        (from_torch,) = describe(torch.from_numpy(image), boxes)
        (integral,) = _describe_integral(torch.from_numpy(image), boxes)
        np.testing.assert_array_equal(from_np, from_torch)
        np.testing.assert_allclose(integral, from_np, atol=1e-6)
    (from_np,) = describe(img, [np.array([RED_BLUE, GREEN_YELLOW])])
    two = np.concatenate([img, img])
    first, second = describe(two, [np.zeros((0, 4)), np.array([GREEN_YELLOW])])
    assert first.shape == (0, DIM)
    np.testing.assert_allclose(second[0], from_np[1], atol=1e-6)


@pytest.mark.parametrize("b", EDGE_CASES)
def test_boxes_at_edges_or_tiny_give_finite_descriptors(b: list[float]) -> None:
    (d,) = describe(_canvas(), [np.array([b])])
    assert d.shape == (1, DIM) and np.isfinite(d).all()


@pytest.mark.gpu
def test_cuda_tensors_give_the_host_descriptors() -> None:
    img = _canvas()
    boxes = [np.array([RED_BLUE, GREEN_YELLOW, *EDGE_CASES])]
    (on_gpu,) = describe(torch.from_numpy(img).cuda(), boxes)
    (on_host,) = describe(img, boxes)
    np.testing.assert_allclose(on_gpu, on_host, atol=1e-6)


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3, H, W\)"):
        describe(np.zeros((240, 320, 3), np.uint8), [np.zeros((0, 4))])
    with pytest.raises(ValueError, match="2 box arrays for 1 images"):
        describe(_canvas(), [np.zeros((0, 4)), np.zeros((0, 4))])


def _meet_stop_and_pass(tracker: Tracker, looks: bool) -> dict[int, list[float]]:
    """A (look a) walks right, B (look b) walks left; they meet, stand overlapping for 10
    frames (their velocities die away), then each walks on in its own direction. Right after
    they part, A's box is nearer B's track than its own: overlap alone swaps them."""
    a_look = np.eye(DIM, dtype=np.float32)[0]
    b_look = np.eye(DIM, dtype=np.float32)[1]
    xa, xb = 100.0, 300.0
    path: list[tuple[float, float]] = []
    while xa < 196:
        path.append((xa, xb))
        xa, xb = xa + 4, xb - 4
    path += [(198.0, 202.0)] * 10  # standing together, A a little left of B
    path += [(202.0 + 4 * k, 198.0 - 4 * k) for k in range(20)]  # they pass each other
    seen: dict[int, list[float]] = {}
    for f, (xa, xb) in enumerate(path):
        boxes = np.array([box(xa, 100), box(xb, 100)], np.float32)
        feats = np.stack([a_look, b_look]) if looks else None
        out = tracker.update(boxes, np.array([0.9, 0.9], np.float32), np.zeros(2, np.int64),
                             f / tracker.frame_rate_hz, feats)  # fmt: skip
        for tid, idx in zip(out.tracks.track_ids, out.tracks.detection_index, strict=True):
            seen.setdefault(int(tid), []).append("ab"[int(idx)])
    return seen


def test_looks_keep_two_overlapping_people_apart_where_motion_swaps_them() -> None:
    cfg = TrackerConfig(appearance_weight=0.4, direction_weight=0.0)
    without = _meet_stop_and_pass(Tracker(cfg, frame_rate_hz=25), looks=False)
    assert any(len(set(who)) > 1 for who in without.values()), "the scene must fool motion"
    with_looks = _meet_stop_and_pass(Tracker(cfg, frame_rate_hz=25), looks=True)
    assert sorted(with_looks) == [1, 2]
    assert all(len(set(who)) == 1 for who in with_looks.values()), with_looks


def test_appearance_weight_zero_ignores_descriptors() -> None:
    cfg = TrackerConfig(appearance_weight=0.0, direction_weight=0.0)
    plain = _meet_stop_and_pass(Tracker(cfg, frame_rate_hz=25), looks=False)
    given = _meet_stop_and_pass(Tracker(cfg, frame_rate_hz=25), looks=True)
    assert plain == given


def test_features_that_do_not_fit_the_detections_are_a_clear_error() -> None:
    t = Tracker(TrackerConfig(appearance_weight=0.4), frame_rate_hz=25)
    boxes = np.array([box(10, 10), box(100, 10)], np.float32)
    with pytest.raises(ValueError, match=r"features must be \(N, D\) with N = 2"):
        t.update(boxes, np.full(2, 0.9, np.float32), np.zeros(2, np.int64), 0.0,
                 np.zeros((3, DIM), np.float32))  # fmt: skip
