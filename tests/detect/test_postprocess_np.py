"""The numpy postprocessing (ONNX Runtime's, torch-free) gives the torch path's detections.

Scores are made distinct (a permutation) so that the top_k cut is defined: with exact ties at
the cut, torch.topk and a stable sort may keep different equals (the module docstring).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.detect.postprocess_np import passes_conf, postprocess_np, slice_nms_outputs
from stages.detect.types import NMSParams

torch = pytest.importorskip("torch")
from stages.detect.postprocess import postprocess  # noqa: E402  (needs torch)

REPO = Path(__file__).resolve().parents[2]


def _random_outputs(rng: np.random.Generator, b: int, n: int, c: int, clustered: bool):
    centres = rng.uniform(0, 640, (b, n, 2))
    if clustered:  # many heavy overlaps: NMS does real work
        centres = np.round(centres / 40) * 40 + rng.normal(0, 3, (b, n, 2))
    wh = rng.uniform(4, 120, (b, n, 2))
    boxes = np.concatenate([centres - wh / 2, centres + wh / 2], axis=-1).astype(np.float32)
    scores = (rng.permutation(b * n * c).reshape(b, n, c) / (b * n * c)).astype(np.float32)
    scores = scores**3  # most scores low, as a detector's are
    return boxes, scores


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.boxes, y.boxes)
        np.testing.assert_array_equal(x.scores, y.scores)
        np.testing.assert_array_equal(x.class_ids, y.class_ids)
        assert x.boxes.dtype == y.boxes.dtype and x.class_ids.dtype == y.class_ids.dtype


@pytest.mark.parametrize(
    "params",
    [
        NMSParams(),  # the reference defaults: multi-label, top_k 1024
        NMSParams(multi_label=False),
        NMSParams(conf=0.05, top_k=100, max_det=30),  # the top_k cut and the max_det cut
        NMSParams(conf=0.01, iou=0.3, top_k=5000),  # > 1000 boxes: torchvision's per-class path
        NMSParams(conf=0.99),  # nothing survives
    ],
)
@pytest.mark.parametrize("clustered", [False, True])
def test_numpy_postprocess_equals_the_torch_path(params: NMSParams, clustered: bool) -> None:
    rng = np.random.default_rng(7)
    boxes, scores = _random_outputs(rng, b=2, n=2100, c=3, clustered=clustered)
    ref = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), params)
    _same(postprocess_np(boxes, scores, params), ref)
    agnostic = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), params, True)
    _same(postprocess_np(boxes, scores, params, class_agnostic=True), agnostic)


def test_numpy_postprocess_on_the_demo_models_real_outputs(tmp_path: Path) -> None:
    """Raw outputs of the shipped demo ONNX on a synthetic street frame, both paths."""
    ort = pytest.importorskip("onnxruntime")
    import av

    from stages.demo.scenes import ensure_scenes
    from stages.detect.preprocess import letterbox, resize_to_for, to_float

    model = REPO / "stages" / "detect" / "models" / "demo.onnx"
    if not model.is_file():
        pytest.skip("no shipped demo.onnx")
    (video,) = ensure_scenes(tmp_path, cameras=1, seconds=0.2)
    with av.open(str(video)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
    x = to_float(letterbox(rgb, input_hw=(416, 416), resize_to=resize_to_for((416, 416)))[0])
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    boxes, scores = sess.run(["boxes", "scores"], {"images": x[None]})
    for params in (NMSParams(), NMSParams(conf=0.001, multi_label=False)):
        ref = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), params)
        _same(postprocess_np(boxes, scores, params), ref)
        assert len(ref[0]) > 0


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="expected"):
        postprocess_np(np.zeros((10, 4)), np.zeros((10, 3)), NMSParams())
    with pytest.raises(ValueError, match="disagree"):
        postprocess_np(np.zeros((1, 10, 4)), np.zeros((1, 11, 3)), NMSParams())


def test_slice_nms_outputs() -> None:
    num = np.array([[2], [0]], np.int32)
    boxes = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    scores = np.array([[0.9, 0.2, 0, 0], [0, 0, 0, 0]], np.float32)
    classes = np.array([[3, 1, 0, 0], [0, 0, 0, 0]], np.int32)
    out = slice_nms_outputs(num, boxes, scores, classes, conf=0.25, multi_label=True)
    assert len(out) == 2 and len(out[0]) == 1 and len(out[1]) == 0
    assert out[0].class_ids.dtype == np.int64 and out[0].class_ids[0] == 3
    np.testing.assert_array_equal(out[0].boxes[0], boxes[0, 0])
    boxes[0, 0] = -1  # the caller may reuse its buffers: the detections are copies
    assert out[0].boxes[0, 0] == 0


@pytest.mark.parametrize("multi_label", [True, False])
def test_slice_nms_outputs_at_a_score_equal_to_conf(multi_label: bool) -> None:
    """The boundary: a row whose score is exactly ``conf`` survives as in the reference at
    that conf, i.e. dropped for multi-label (> conf) and kept for single-label (>= conf)."""
    s = np.float32(0.53797626)
    num = np.array([[3]], np.int64)
    boxes = np.zeros((1, 4, 4), np.float32)
    scores = np.array([[0.9, s, 0.3, 0]], np.float32)
    classes = np.array([[1, 2, 3, -1]], np.int64)
    [d] = slice_nms_outputs(num, boxes, scores, classes, float(s), multi_label)
    assert d.class_ids.tolist() == ([1] if multi_label else [1, 2])
    # the reference at that conf, on raw scores (zero-area boxes: NMS suppresses nothing)
    raw = np.array([[0.1, float(s)], [float(s), 0.0]], np.float32)
    want = postprocess(torch.zeros(1, 2, 4), torch.from_numpy(raw[None]),
                       NMSParams(conf=float(s), multi_label=multi_label, iou=1.0))  # fmt: skip
    assert len(want[0]) == (0 if multi_label else 2)
    assert passes_conf(raw[0], float(s), multi_label).tolist() == [False, not multi_label]
