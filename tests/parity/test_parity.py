"""Parity with super-gradients 3.7.1 (YOLO-NAS), against the committed golden files.

The goldens were written by make_golden.py in the reference venv (README.md beside this file).
The inputs (weights, images, stress outputs) are procedural and rebuilt here bit for bit, so
only the reference's answers are stored. What is checked:

(a) preprocessing: our letterbox of each synthetic image vs the reference's, within 1/255,
    same geometry; our float conversion of the reference's uint8 tensor, bit for bit.
(b) postprocessing: our postprocess + to_source on the reference's own raw outputs gives
    the reference's final detections; and on procedural stress outputs (top-k, both
    torchvision NMS paths, single-label, class-agnostic, max_det) the callback's results.
(c) the network: state_dict keys/shapes; raw outputs of S, M, L on the reference's input;
    end to end (our letterbox + model + postprocess + to_source) vs the reference predict().
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from det_weights import deterministic_state_dict, fingerprint  # noqa: E402
from synthetic_images import IMAGES, STRESS_CASES, image, stress_outputs  # noqa: E402

from stages.detect.postprocess import postprocess  # noqa: E402
from stages.detect.preprocess import letterbox, letterbox_geometry, to_float  # noqa: E402
from stages.detect.types import NMSParams  # noqa: E402

GOLDEN = HERE / "golden"
META = json.loads((GOLDEN / "meta.json").read_text())
VARIANTS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
PREDICT_IMAGE = "predict_1920x1080"
# Forward passes of M and L take a minute each on a small CPU box.
MODEL_VARIANTS = [
    "yolo_nas_s",
    pytest.param("yolo_nas_m", marks=pytest.mark.slow),
    pytest.param("yolo_nas_l", marks=pytest.mark.slow),
]

BOX_TOL_PX = 5e-3  # model boxes, input pixels
SCORE_TOL = 5e-5  # model scores
DET_TOL_PX = 1e-2  # final detections from the reference's own raw outputs


def _predict_params() -> NMSParams:
    d = META["predict_defaults"]
    return NMSParams(
        conf=d["conf"],
        iou=d["iou"],
        multi_label=d["multi_label_per_box"],
        top_k=d["nms_top_k"],
        max_det=d["max_predictions"],
    )


@functools.cache
def _golden_letterbox(name: str) -> np.ndarray:
    with np.load(GOLDEN / "letterbox.npz") as z:
        return np.cumsum(z[name], axis=-1, dtype=np.uint8)  # undo the delta coding


@functools.cache
def _raw(variant: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"raw_{variant}.npz") as z:
        return {k: z[k] for k in z.files}


def _full_outputs(variant: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 8400, 4), (1, 8400, C) with the stored rows in place and zeros elsewhere.

    Every anchor with any score above conf is stored, so postprocessing this is the same
    as postprocessing the reference's full output.
    """
    raw = _raw(variant)
    rows = raw[f"{name}/rows"]
    scores_rows = raw[f"{name}/scores"]
    boxes = np.zeros((8400, 4), np.float32)
    scores = np.zeros((8400, scores_rows.shape[1]), np.float32)
    boxes[rows] = raw[f"{name}/boxes"]
    scores[rows] = scores_rows
    return torch.from_numpy(boxes)[None], torch.from_numpy(scores)[None]


def test_golden_files_are_small_and_complete() -> None:
    total = sum(f.stat().st_size for f in GOLDEN.iterdir())
    assert total < 3_500_000, f"golden dir is {total} bytes"
    assert META["versions"]["super_gradients"] == "3.7.1"
    assert set(META["models"]) == set(VARIANTS)
    assert set(META["images"]) == set(IMAGES)


def test_predict_defaults_are_ours() -> None:
    """NMSParams() defaults are the reference predict() defaults (multi-label per box, as
    `edgestream detect` and these tests keep; the runtime's model.multi_label defaults to
    false: one box per object)."""
    assert _predict_params() == NMSParams()
    assert META["predict_defaults"]["class_agnostic_nms"] is False


@pytest.mark.parametrize("name", list(IMAGES))
def test_synthetic_image_is_the_one_the_reference_saw(name: str) -> None:
    img = image(name)
    assert hashlib.sha256(img.tobytes()).hexdigest() == META["images"][name]["image_sha256"]


# (a) preprocessing --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMAGES))
def test_letterbox_matches_reference(name: str) -> None:
    ref = META["images"][name]
    ours, meta = letterbox(image(name))
    assert (meta.pad_top, meta.pad_left) == (ref["pad_top"], ref["pad_left"])
    assert meta.scale == ref["scale"] == ref["scale_w"]
    golden = _golden_letterbox(name)
    assert hashlib.sha256(golden.tobytes()).hexdigest() == ref["letterbox_u8_sha256"]
    diff = np.abs(ours.astype(np.int16) - golden.astype(np.int16))
    assert diff.max() <= 1, f"{int((diff > 1).sum())} values differ by more than 1/255"


@pytest.mark.parametrize("name", list(IMAGES))
def test_float_conversion_is_bit_identical(name: str) -> None:
    x = to_float(_golden_letterbox(name))
    assert hashlib.sha256(x.tobytes()).hexdigest() == META["images"][name]["float_sha256"]


# (b) postprocessing -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_postprocess_on_reference_outputs(variant: str, name: str) -> None:
    raw = _raw(variant)
    expected = raw[f"{name}/dets_input"]
    assert 5 <= len(expected) < 300, "goldens too sparse/saturated to test NMS"
    det = postprocess(*_full_outputs(variant, name), _predict_params())[0]

    assert len(det) == len(expected)
    np.testing.assert_array_equal(det.class_ids, expected[:, 5].astype(np.int64))
    np.testing.assert_allclose(det.scores, expected[:, 4], rtol=0, atol=1e-7)
    np.testing.assert_allclose(det.boxes, expected[:, :4], rtol=0, atol=DET_TOL_PX)

    h, w = IMAGES[name]
    _, _, meta = letterbox_geometry(h, w)
    src = meta.to_source(det.boxes)
    np.testing.assert_allclose(src, raw[f"{name}/dets_source_boxes"], rtol=0, atol=DET_TOL_PX)
    np.testing.assert_array_equal(det.class_ids, raw[f"{name}/dets_source_labels"])
    np.testing.assert_allclose(det.scores, raw[f"{name}/dets_source_scores"], rtol=0, atol=1e-7)


@pytest.mark.parametrize("case", list(STRESS_CASES))
def test_postprocess_stress_cases(case: str) -> None:
    prm = STRESS_CASES[case]
    with np.load(GOLDEN / "stress.npz") as z:
        expected = z[case]
    boxes, scores = stress_outputs(case)
    params = NMSParams(prm.conf, prm.iou, prm.multi_label, prm.top_k, prm.max_det)
    det = postprocess(torch.from_numpy(boxes), torch.from_numpy(scores), params, prm.agnostic)[0]
    assert len(expected) > 20
    assert len(det) == len(expected)
    np.testing.assert_array_equal(det.scores, expected[:, 4])
    np.testing.assert_array_equal(det.class_ids, expected[:, 5].astype(np.int64))
    np.testing.assert_array_equal(det.boxes, expected[:, :4])


# (c) the network ----------------------------------------------------------------------------


def _nn() -> ModuleType:
    return pytest.importorskip(
        "stages.detect.nn.yolo_nas", reason="stages/detect/nn/yolo_nas.py not written yet"
    )


@functools.cache
def _model(variant: str) -> torch.nn.Module:
    model = getattr(_nn(), variant)(num_classes=80)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in model.state_dict().items()}
    weights = deterministic_state_dict(shapes, dtypes, variant=variant)
    assert fingerprint(weights) == META["models"][variant]["weights_fingerprint"]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    return model.eval()


@functools.cache
def _forward(variant: str, x_u8_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
    x = to_float(np.frombuffer(x_u8_bytes, np.uint8).reshape(1, 3, 640, 640))
    with torch.no_grad():
        boxes, scores = _model(variant)(torch.from_numpy(x))
    return boxes[0].numpy(), scores[0].numpy()


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_and_shapes(variant: str) -> None:
    model = getattr(_nn(), variant)(num_classes=80)
    golden = json.loads((GOLDEN / f"keys_{variant}.json").read_text())
    ours = {
        k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in model.state_dict().items()
    }
    assert len(golden) == META["models"][variant]["n_keys"]
    assert sorted(set(golden) - set(ours)) == [], "keys missing from our model"
    assert sorted(set(ours) - set(golden)) == [], "keys our model has and the reference lacks"
    assert ours == golden


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_raw_outputs_match_reference(variant: str) -> None:
    x = _golden_letterbox(PREDICT_IMAGE)  # the reference's own input, not ours
    boxes, scores = _forward(variant, x.tobytes())
    raw = _raw(variant)
    rows = raw[f"{PREDICT_IMAGE}/rows"]
    assert boxes.shape == (8400, 4) and scores.shape == (8400, 80)
    box_err = np.abs(boxes[rows] - raw[f"{PREDICT_IMAGE}/boxes"]).max()
    score_err = np.abs(scores[rows] - raw[f"{PREDICT_IMAGE}/scores"]).max()
    assert box_err <= BOX_TOL_PX, f"boxes differ by up to {box_err:.3g} px"
    assert score_err <= SCORE_TOL, f"scores differ by up to {score_err:.3g}"

    stats = META["models"][variant]["images"][PREDICT_IMAGE]
    np.testing.assert_allclose(
        boxes.astype(np.float64).mean(axis=0), stats["boxes_col_mean"], rtol=0, atol=BOX_TOL_PX
    )
    np.testing.assert_allclose(
        scores.astype(np.float64).mean(axis=0), stats["scores_class_mean"], rtol=0, atol=1e-6
    )
    assert abs(float(np.abs(boxes).max()) - stats["boxes_abs_max"]) <= BOX_TOL_PX
    assert int((scores > 0.25).sum()) == stats["n_candidates"]


@pytest.mark.parametrize("variant", MODEL_VARIANTS)
def test_end_to_end_predict(variant: str) -> None:
    """Our letterbox + model + postprocess + to_source vs the reference predict()."""
    raw = _raw(variant)
    x, meta = letterbox(image(PREDICT_IMAGE))
    boxes, scores = _forward(variant, x.tobytes())
    det = postprocess(torch.from_numpy(boxes)[None], torch.from_numpy(scores)[None], NMSParams())[0]
    src = meta.to_source(det.boxes)

    expected = raw[f"{PREDICT_IMAGE}/dets_source_boxes"]
    assert len(det) == len(expected)
    np.testing.assert_array_equal(det.class_ids, raw[f"{PREDICT_IMAGE}/dets_source_labels"])
    np.testing.assert_allclose(
        det.scores, raw[f"{PREDICT_IMAGE}/dets_source_scores"], rtol=0, atol=SCORE_TOL
    )
    np.testing.assert_allclose(src, expected, rtol=0, atol=BOX_TOL_PX / meta.scale)
