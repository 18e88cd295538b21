"""Letterbox geometry, padding, writing into slabs, and the uint8 -> float conversion.

Parity with the reference on real images is in tests/parity/test_parity.py; these tests pin
the rules themselves (rounding, odd padding split, no resize at scale 1) on small cases.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.payloads import LetterboxMeta
from stages.detect.preprocess import (
    PAD_VALUE,
    letterbox,
    letterbox_batch,
    letterbox_geometry,
    to_float,
)


def _ramp(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(
    ("hw", "resized_hw", "pads"),
    [
        ((1080, 1920), (358, 636), (141, 2)),  # 1080 * 0.33125 = 357.75 -> 358
        ((480, 640), (477, 636), (81, 2)),  # odd padding: 163 -> 81 top, 82 bottom
        ((1280, 720), (636, 358), (2, 141)),  # portrait: padding on the width
        ((636, 636), (636, 636), (2, 2)),  # scale exactly 1: no resize at all
        ((100, 50), (636, 318), (2, 161)),  # upscaling
    ],
)
def test_geometry(hw: tuple[int, int], resized_hw: tuple[int, int], pads: tuple[int, int]) -> None:
    new_h, new_w, meta = letterbox_geometry(*hw)
    assert (new_h, new_w) == resized_hw
    assert (meta.pad_top, meta.pad_left) == pads
    assert meta.scale == min(636 / hw[0], 636 / hw[1])


def test_rounding_is_half_to_even() -> None:
    # 1272 x 1 -> scale 0.5 -> width 0.5 rounds to 0 (Python round): too extreme, must raise
    with pytest.raises(ValueError, match="does not fit"):
        letterbox_geometry(1272, 1)
    # 636 * 5 / 1272 = 2.5 -> 2 (half to even), not 3
    new_h, new_w, _ = letterbox_geometry(1272, 5)
    assert (new_h, new_w) == (636, 2)


def test_letterbox_content_and_padding() -> None:
    img = _ramp(480, 640)
    out, meta = letterbox(img)
    assert out.shape == (3, 640, 640) and out.dtype == np.uint8
    top, left = meta.pad_top, meta.pad_left
    expected = cv2.resize(img, (636, 477), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    np.testing.assert_array_equal(out[:, top : top + 477, left : left + 636], expected)
    assert (out[:, :top] == PAD_VALUE).all()
    assert (out[:, top + 477 :] == PAD_VALUE).all()
    assert (out[:, :, :left] == PAD_VALUE).all()
    assert (out[:, :, left + 636 :] == PAD_VALUE).all()
    assert 640 - 477 - top == top + 1  # the odd row goes to the bottom


def test_scale_one_copies_pixels_exactly() -> None:
    img = _ramp(636, 400)
    out, meta = letterbox(img)
    assert meta.scale == 1.0
    np.testing.assert_array_equal(
        out[:, 2:638, meta.pad_left : meta.pad_left + 400], img.transpose(2, 0, 1)
    )


def test_writes_into_given_slab_row_and_overwrites_stale_pixels() -> None:
    slab = np.full((4, 3, 640, 640), 7, dtype=np.uint8)
    images = [_ramp(480, 640), _ramp(1280, 720)]
    batch, metas = letterbox_batch(images, out=slab)
    assert batch.shape == (2, 3, 640, 640)
    assert np.shares_memory(batch, slab)
    for i, img in enumerate(images):
        single, meta = letterbox(img)
        np.testing.assert_array_equal(slab[i], single)  # no stale 7s left anywhere
        assert metas[i] == meta
    assert (slab[2:] == 7).all()  # rows beyond the batch untouched


def test_accepts_non_contiguous_input() -> None:
    bgr = _ramp(480, 640)
    rgb_view = bgr[..., ::-1]
    out, _ = letterbox(rgb_view)
    ref, _ = letterbox(np.ascontiguousarray(rgb_view))
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3))],
)
def test_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        letterbox(bad)


def test_rejects_bad_out() -> None:
    with pytest.raises(ValueError, match="out must be"):
        letterbox(_ramp(10, 10), out=np.empty((3, 320, 320), np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        letterbox_batch([_ramp(10, 10)] * 3, out=np.empty((2, 3, 640, 640), np.uint8))


def test_to_float_matches_reference_formula_bit_for_bit() -> None:
    allvals = np.arange(256, dtype=np.uint8).reshape(1, 1, 256)
    ours = to_float(allvals)
    reference = (allvals / 255.0).astype(np.float32)  # super-gradients' StandardizeImage
    assert ours.dtype == np.float32
    assert ours.tobytes() == reference.tobytes()


def test_to_source_inverts_letterbox() -> None:
    _, _, meta = letterbox_geometry(1080, 1920)
    src = np.array([[0.0, 0.0, 1920.0, 1080.0], [100.5, 200.25, 300.0, 400.0]], np.float32)
    inp = src * np.float32(meta.scale)
    inp[:, [0, 2]] += meta.pad_left
    inp[:, [1, 3]] += meta.pad_top
    back = meta.to_source(inp)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, src, atol=1e-3)


def test_to_source_arithmetic_matches_reference() -> None:
    # super-gradients: shift by the padding, then multiply by float32(1 / scale)
    meta = LetterboxMeta(src_h=1080, src_w=1920, scale=636 / 1920, pad_top=141, pad_left=2)
    boxes = np.array([[10.1, 150.3, 600.7, 480.9]], np.float32)
    ref = boxes.copy()
    ref[:, [0, 2]] += -2
    ref[:, [1, 3]] += -141
    ref *= np.array([[1 / meta.scale] * 4], dtype=np.float32)
    assert meta.to_source(boxes).tobytes() == ref.tobytes()
    assert meta.to_source(np.zeros((0, 4), np.float32)).shape == (0, 4)
