"""The device letterbox (`stages.detect.preprocess.letterbox_device`, torch, here on CPU
tensors) against the OpenCV one: the same geometry and padding, pixels within a grey level or
two (OpenCV's bilinear uses 11-bit fixed-point weights, torch float32), and the same
detections from the demo model on a real clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.detect.preprocess import PAD_VALUE, letterbox, letterbox_device, resize_to_for


@pytest.mark.parametrize(
    ("h", "w", "hw"),
    [(1080, 1920, (640, 640)), (432, 768, (640, 640)), (481, 303, (640, 640)),
     (640, 640, (640, 640)), (720, 1280, (416, 416)), (100, 150, (640, 640))],
)  # fmt: skip
def test_device_letterbox_matches_opencv(h: int, w: int, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(h * w)
    # smooth content (a real picture's neighbours are alike) plus some noise and hard edges
    yy, xx = np.mgrid[0:h, 0:w]
    base = (127 + 100 * np.sin(xx / 37.0) * np.cos(yy / 23.0))[..., None]
    img = np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    img[h // 3 : h // 2, w // 4 : w // 2] = (250, 10, 30)
    ref, meta = letterbox(img, None, hw, resize_to_for(hw))
    got, got_meta = letterbox_device(torch.from_numpy(img), hw, resize_to_for(hw))
    assert got_meta == meta
    assert got.dtype == torch.uint8 and tuple(got.shape) == (3, *hw)
    g = got.numpy()
    top, left = meta.pad_top, meta.pad_left
    new_h = round(h * meta.scale) if meta.scale != 1.0 else h
    new_w = round(w * meta.scale) if meta.scale != 1.0 else w
    pad = np.ones(hw, bool)
    pad[top : top + new_h, left : left + new_w] = False
    assert (g[:, pad] == PAD_VALUE).all() and (ref[:, pad] == PAD_VALUE).all()
    diff = np.abs(g.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 2, diff.max()
    assert diff.mean() < 0.25
    if meta.scale == 1.0:
        assert diff.max() == 0  # no resize: a copy


def test_device_letterbox_writes_into_a_batch_row_and_refuses_bad_input() -> None:
    img = torch.full((300, 400, 3), 7, dtype=torch.uint8)
    batch = torch.zeros((2, 3, 640, 640), dtype=torch.uint8)
    row, _ = letterbox_device(img, (640, 640), 636, out=batch[1])
    assert row.data_ptr() == batch[1].data_ptr()
    assert int(batch[1, 0, 320, 320]) == 7 and int(batch[1, 0, 0, 0]) == PAD_VALUE
    assert int(batch[0].sum()) == 0  # the other row is untouched
    with pytest.raises(ValueError, match="uint8"):
        letterbox_device(img.float())
    with pytest.raises(ValueError, match="out must be"):
        letterbox_device(img, out=torch.zeros((3, 320, 320), dtype=torch.uint8))


def test_demo_model_detects_the_same_on_both_letterboxes(shared_data: Path) -> None:
    """Every 10th frame of car-detection.mp4, demo model on ONNX Runtime: the detections on the
    device letterbox match those on OpenCV's (same class, IoU >= 0.5) for >= 95 % of boxes."""
    import av

    from stages.detect.backends.onnxruntime_backend import OnnxRuntimeBackend
    from stages.detect.quantize import match_detections

    repo = Path(__file__).resolve().parents[2]
    model = repo / "stages" / "detect" / "models" / "demo.onnx"
    matched = total = 0
    with OnnxRuntimeBackend(model, intra_op_threads=1, max_batch=2) as backend:
        hw = backend.info.input_hw
        with av.open(str(shared_data / "media" / "car-detection.mp4")) as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i % 10:
                    continue
                rgb = frame.to_ndarray(format="rgb24")
                ref, _ = letterbox(rgb, None, hw, resize_to_for(hw))
                dev, _ = letterbox_device(torch.from_numpy(rgb), hw, resize_to_for(hw))
                a, b = backend.infer(np.stack([dev.numpy(), ref]))
                total += max(len(a), len(b))
                matched += len(match_detections(b, a, 0.5))
    assert total > 50  # the clip has cars the model finds
    assert matched >= 0.95 * total, (matched, total)
