"""Quantization (ModelOpt) and the agreement check, on ONNX Runtime CPU.

Frame loading, matching and the agreement metrics run everywhere. The conversions need the
optional extra (``pip install "edgestream[quant]"``) and skip without it, with that reason.
The models are tiny or carry deterministic *untrained* weights: agreement here measures
numerical fidelity of the conversion, not detection accuracy.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from tiny_detector import TinyDetector

from stages.detect.export import export_onnx
from stages.detect.onnx_facts import inspect_onnx
from stages.detect.quantize import (
    QuantizeError,
    agreement,
    agreement_of,
    box_iou,
    evenly_spaced,
    load_frames,
    match_detections,
    model_input,
    modelopt_available,
    quantize_onnx,
    read_image_folder,
    read_video_frames,
    synthetic_frames,
)
from stages.detect.types import Detections, NMSParams

needs_modelopt = pytest.mark.skipif(
    not modelopt_available(),
    reason='needs NVIDIA ModelOpt: pip install "edgestream[quant]" (nvidia-modelopt[onnx])',
)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tiny")
    names = ["a", "b", "c"]
    return {
        "float": export_onnx(
            TinyDetector(), d / "float.onnx", input_hw=(64, 64), class_names=names
        ),
        "uint8": export_onnx(
            TinyDetector(),
            d / "uint8.onnx",
            input_hw=(64, 64),
            input_dtype="uint8",
            dynamic_batch=True,
            class_names=names,
        ),
        "trt_nms": export_onnx(TinyDetector(), d / "nms.onnx", input_hw=(64, 64), nms="tensorrt"),
    }


def frames() -> list[np.ndarray]:
    return synthetic_frames(6, hw=(96, 128), seed=3)


# -- frames ------------------------------------------------------------------------------


def test_evenly_spaced() -> None:
    assert evenly_spaced(10, 3) == [0, 4, 9] or evenly_spaced(10, 3) == [0, 5, 9]
    assert evenly_spaced(4, 10) == [0, 1, 2, 3]
    assert evenly_spaced(0, 3) == [] and evenly_spaced(5, 0) == []
    idx = evenly_spaced(1000, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 999


def test_synthetic_frames_are_deterministic() -> None:
    a, b = synthetic_frames(3, seed=7), synthetic_frames(3, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (480, 640, 3) and a[0].dtype == np.uint8
    assert not np.array_equal(a[0], synthetic_frames(1, seed=8)[0])


def test_image_folder_is_read_as_rgb(tmp_path: Path) -> None:
    red_bgr = np.zeros((20, 30, 3), np.uint8)
    red_bgr[..., 2] = 255  # pure red, in OpenCV's BGR order
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), red_bgr)
    (tmp_path / "notes.txt").write_text("ignored")
    out = read_image_folder(tmp_path, 3)
    assert len(out) == 3
    assert out[0].shape == (20, 30, 3) and tuple(out[0][0, 0]) == (255, 0, 0)


def test_video_frames(shared_data: Path, require: Callable[[str | None], None]) -> None:
    video = shared_data / "media" / "car-detection.mp4"
    require(None if video.is_file() else f"{video} missing")
    out = read_video_frames(video, 4)
    assert len(out) == 4
    assert all(f.dtype == np.uint8 and f.ndim == 3 and f.shape[2] == 3 for f in out)
    assert not np.array_equal(out[0], out[-1])  # spread over the clip, not 4 copies


def test_load_frames_errors(tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="no images"):
        load_frames(tmp_path, 4)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(QuantizeError, match="not a video"):
        load_frames(tmp_path / "x.txt", 4)
    with pytest.raises(QuantizeError, match="uint8 RGB"):
        load_frames([np.zeros((4, 4), np.uint8)], 1)


def test_model_input_dtypes() -> None:
    fr = frames()[:2]
    u8 = model_input(fr, "uint8", (64, 64))
    f32 = model_input(fr, "float32", (64, 64))
    assert u8.dtype == np.uint8 and u8.shape == (2, 3, 64, 64)
    assert f32.dtype == np.float32 and np.allclose(f32 * 255, u8)


# -- matching / metrics --------------------------------------------------------------------


def dets(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array(classes, np.int64),
    )


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]], rtol=1e-6)
    assert box_iou(a[:0], b).shape == (0, 3)


def test_match_is_class_aware_and_one_to_one() -> None:
    ref = dets([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1])
    other = dets([[1, 0, 11, 10], [0, 0, 10, 10]], [0.7, 0.6], [1, 2])
    pairs = match_detections(ref, other)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0)]  # second ref: only a class-2 box left


def test_agreement_of() -> None:
    a = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [0, 3])
    same = agreement_of([a, a], [a, a])
    assert same["recall"] == same["precision"] == 1.0 and same["max_score_diff"] == 0.0
    b = dets([[0, 0, 10, 11]], [0.8], [0])
    m = agreement_of([a], [b])
    assert m["recall"] == 0.5 and m["precision"] == 1.0 and m["count_diff_max"] == 1
    assert m["max_score_diff"] == pytest.approx(0.1, abs=1e-6)
    assert m["mean_iou"] == pytest.approx(100 / 110, rel=1e-5)
    empty = agreement_of([Detections.empty()], [Detections.empty()])
    assert empty["recall"] == 1.0 and empty["matched"] == 0


def test_agreement_of_a_model_with_itself(tiny_onnx: dict[str, Path]) -> None:
    m = agreement(tiny_onnx["float"], tiny_onnx["float"], frames())
    assert m["images"] == 6 and m["ref_detections"] > 0
    assert m["recall"] == 1.0 and m["max_abs_score_diff"] == 0.0 and m["nonfinite_outputs"] == 0
    # float input with /255 outside vs uint8 input with /255 in the graph: same numbers
    m = agreement(tiny_onnx["float"], tiny_onnx["uint8"], frames())
    assert m["recall"] == 1.0 and m["max_abs_score_diff"] < 1e-5


# -- conversions ---------------------------------------------------------------------------


def test_efficient_nms_export_is_refused(tiny_onnx: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="EfficientNMS_TRT"):
        quantize_onnx(tiny_onnx["trt_nms"], tmp_path / "q.onnx", "fp16")


@pytest.mark.skipif(modelopt_available(), reason="checks the error shown without ModelOpt")
def test_missing_modelopt_names_the_extra(tiny_onnx: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match=r"edgestream\[quant\]"):
        quantize_onnx(tiny_onnx["float"], tmp_path / "q.onnx", "fp16")


def io_types(path: Path) -> tuple[list[int], list[int]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return (
        [i.type.tensor_type.elem_type for i in m.graph.input],
        [o.type.tensor_type.elem_type for o in m.graph.output],
    )


@needs_modelopt
@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_fp16_autocast(tiny_onnx: dict[str, Path], tmp_path: Path, kind: str) -> None:
    src = tiny_onnx[kind]
    out = quantize_onnx(src, tmp_path / f"{kind}.fp16.onnx", "fp16", progress=False)
    facts = inspect_onnx(out)
    assert facts.precision == "fp16"
    assert io_types(out) == io_types(src)  # backends feed the same tensors as before
    assert facts.class_names == ["a", "b", "c"] and facts.metadata["precision"] == "fp16"
    m = agreement(src, out, frames())
    assert m["recall"] >= 0.95 and m["precision"] >= 0.95, m
    assert m["max_abs_score_diff"] < 5e-3 and m["nonfinite_outputs"] == 0, m
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{kind}.fp16.onnx"]  # no litter


@needs_modelopt
@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_int8_qdq(tiny_onnx: dict[str, Path], tmp_path: Path, kind: str) -> None:
    import onnx

    src = tiny_onnx[kind]
    out = quantize_onnx(
        src, tmp_path / "q.onnx", "int8", calib=synthetic_frames(8, (96, 128)), progress=False
    )
    facts = inspect_onnx(out)
    assert facts.precision == "int8" and facts.metadata["precision"] == "int8"
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "DequantizeLinear" in ops
    assert io_types(out) == io_types(src)
    m = agreement(src, out, frames())
    assert m["recall"] >= 0.6 and m["mean_iou"] >= 0.8, m


@needs_modelopt
def test_int8_calibrates_on_a_video(
    tiny_onnx: dict[str, Path], tmp_path: Path, shared_data: Path
) -> None:
    video = shared_data / "media" / "bottle-detection.mp4"
    out = quantize_onnx(tiny_onnx["float"], tmp_path / "v.onnx", "int8", calib=video, num_calib=4)
    assert inspect_onnx(out).precision == "int8"


# -- YOLO-NAS S, deterministic untrained weights (slow: export ~25 s, INT8 ~2 min) ----------


@pytest.fixture(scope="module")
def yolo_nas_s_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from det_weights import deterministic_state_dict

    from stages.detect.nn.yolo_nas import yolo_nas_s

    model = yolo_nas_s(80).eval()
    sd = model.state_dict()
    det = deterministic_state_dict(
        {k: tuple(v.shape) for k, v in sd.items()},
        {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()},
    )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in det.items()})
    return export_onnx(model, tmp_path_factory.mktemp("s") / "yolo_nas_s.onnx")


@needs_modelopt
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_yolo_nas_s_agreement(
    yolo_nas_s_onnx: Path, tmp_path: Path, shared_data: Path, precision: str
) -> None:
    video = shared_data / "media" / "car-detection.mp4"
    out = quantize_onnx(
        yolo_nas_s_onnx, tmp_path / f"s.{precision}.onnx", precision, calib=video, num_calib=8
    )
    m = agreement(yolo_nas_s_onnx, out, video, num_images=4, nms_params=NMSParams())
    print(json.dumps({precision: m}, indent=1), file=sys.stderr)
    assert m["ref_detections"] > 0
    # Untrained weights blow activations up far past fp16's range, so only loose bounds hold
    # (see the issue note); what this guards is "the converted model runs and still detects".
    assert m["recall"] >= 0.3, m


def test_iter_frames_reads_only_the_indices_asked_for(tmp_path: Path) -> None:
    """The one frame reader (`stages.detect.sources.iter_frames`) behind `load_frames`."""
    from stages.detect.sources import iter_frames

    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((4, 6, 3), i, np.uint8))
    (tmp_path / "03.png").write_bytes(b"not a png")  # never read: not asked for
    got = list(iter_frames(tmp_path, [4, 0, 9]))
    assert [(f.index, f.name, int(f.rgb[0, 0, 0])) for f in got] == [
        (0, "00.png", 0),
        (4, "04.png", 4),
    ]
    with pytest.raises(QuantizeError, match="not a readable image"):
        load_frames(tmp_path, 5)
    assert len(load_frames(tmp_path / "00.png", 3)) == 1
