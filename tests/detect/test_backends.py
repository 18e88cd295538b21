"""Backends: torch and ONNX Runtime give the same `Detections` on the same batch; bad input
fails with a message that names the problem; CUDA paths run where there is a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

# Models, images and exports are shared with test_export.py (cached per process).
from test_export import (
    BOX_ATOL,
    HW,
    TinyDetector,
    assert_same_detections,
    detecting_model,
    exported,
    reference_outputs,
    sample_batch,
    tiny_batch,
)

from stages.detect.backends import BackendError, backend_for_path, open_backend
from stages.detect.backends.onnxruntime_backend import OnnxModelError, OnnxRuntimeBackend
from stages.detect.backends.torch_backend import TorchBackend, TorchBackendError, graph_buckets
from stages.detect.export import export_onnx
from stages.detect.postprocess import postprocess
from stages.detect.types import Backend, ModelInfo, NMSParams

INFO = ModelInfo(arch="yolo_nas_s", num_classes=80, input_hw=HW)


def torch_backend(**kwargs) -> TorchBackend:
    return TorchBackend(detecting_model(), info=INFO, **kwargs)


@pytest.fixture(scope="module")
def torch_dets():
    """TorchBackend on CPU over the 3-image batch (computed once: it is the slow part)."""
    with torch_backend(max_batch=4) as backend:
        return backend.infer(np.ascontiguousarray(sample_batch(3)))


# --------------------------------------------------------------------------- torch


def test_torch_backend_equals_model_plus_postprocess(torch_dets) -> None:
    """uint8 -> device -> /255 gives bit-identical inputs to `to_float`, hence equal output."""
    want = postprocess(*reference_outputs(3), NMSParams())
    assert_same_detections(torch_dets, want, box_atol=0, score_atol=0)
    assert all(len(d) > 20 for d in torch_dets)
    assert torch_dets[0].boxes.dtype == np.float32 and torch_dets[0].class_ids.dtype == np.int64


def test_torch_backend_leaves_the_model_alone() -> None:
    model = TinyDetector()
    TorchBackend(model, info=ModelInfo(input_hw=HW)).infer(tiny_batch())
    assert model.fused is False


def test_torch_backend_rejects_bad_batches() -> None:
    backend = TorchBackend(TinyDetector(), max_batch=2, info=ModelInfo(input_hw=HW))
    with pytest.raises(TorchBackendError, match="uint8"):
        backend.infer(tiny_batch().astype(np.float32))
    with pytest.raises(TorchBackendError, match=r"\(B, 3, 320, 320\)"):
        backend.infer(np.zeros((1, 3, 640, 640), np.uint8))
    with pytest.raises(TorchBackendError, match=r"takes 1\.\.2"):
        backend.infer(tiny_batch())
    backend.close()
    with pytest.raises(TorchBackendError, match="closed"):
        backend.infer(tiny_batch()[:1])


def test_torch_backend_infer_device_takes_a_tensor_on_its_device() -> None:
    """The public device-batch entry point (the detect stage's GPU gather path)."""
    backend = TorchBackend(TinyDetector(), max_batch=3, info=ModelInfo(input_hw=HW))
    want = backend.infer(tiny_batch())
    got = backend.infer_device(torch.from_numpy(tiny_batch().copy()))
    assert_same_detections(got, want, box_atol=0, score_atol=0)
    with pytest.raises(TorchBackendError, match="uint8"):
        backend.infer_device(tiny_batch())  # type: ignore[arg-type]  # a numpy array
    with pytest.raises(TorchBackendError, match="uint8"):
        backend.infer_device(torch.zeros((1, 3, *HW)))
    with pytest.raises(TorchBackendError, match=r"\(B, 3, 320, 320\)"):
        backend.infer_device(torch.zeros((1, 3, 64, 64), dtype=torch.uint8))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_torch_backend_without_cuda_says_so() -> None:
    with pytest.raises(TorchBackendError, match="no CUDA device"):
        TorchBackend(TinyDetector(), device="cuda")
    with pytest.raises(TorchBackendError, match="half=True needs a CUDA"):
        TorchBackend(TinyDetector(), half=True)
    with pytest.raises(TorchBackendError, match="cuda_graphs=True needs a CUDA"):
        TorchBackend(TinyDetector(), cuda_graphs=True)


def test_graph_buckets() -> None:
    assert graph_buckets(1) == [1]
    assert graph_buckets(8) == [1, 2, 4, 8]
    assert graph_buckets(6) == [1, 2, 4, 6]


# --------------------------------------------------------------------------- onnxruntime


def test_ort_raw_uint8_dynamic_matches_torch_backend(torch_dets) -> None:
    """Same batch, same Detections: counts and classes equal, boxes within float rounding."""
    with OnnxRuntimeBackend(exported("none", "uint8", dynamic=True), max_batch=4) as backend:
        assert (backend.input_dtype, backend.fixed_batch, backend.layout) == ("uint8", None, "raw")
        dets = backend.infer(np.ascontiguousarray(sample_batch(3)))
    assert_same_detections(dets, torch_dets, box_atol=BOX_ATOL, score_atol=1e-5)


def test_ort_fixed_batch_is_split_and_padded(torch_dets) -> None:
    """A batch-1 float graph runs a batch of 3 as three runs (and a float input)."""
    with OnnxRuntimeBackend(exported("none", "float", dynamic=False), max_batch=3) as backend:
        assert (backend.input_dtype, backend.fixed_batch) == ("float", 1)
        dets = backend.infer(np.ascontiguousarray(sample_batch(3)))
    assert_same_detections(dets, torch_dets, box_atol=BOX_ATOL, score_atol=1e-5)


def test_ort_fixed_batch_pads_the_last_chunk(tmp_path: Path) -> None:
    model = TinyDetector()
    path = export_onnx(model, tmp_path / "b2.onnx", batch_size=2, input_hw=HW)
    with OnnxRuntimeBackend(path, max_batch=3) as backend:
        assert backend.fixed_batch == 2
        dets = backend.infer(tiny_batch())  # 3 images: runs of 2 + (1 + 1 padding)
        raw = backend.outputs(tiny_batch())
    assert set(raw) == {"boxes", "scores"} and len(raw["boxes"]) == len(raw["scores"]) == 3
    want = TorchBackend(model, info=ModelInfo(input_hw=HW), max_batch=3).infer(tiny_batch())
    assert_same_detections(dets, want, box_atol=1e-4, score_atol=1e-6)


def test_ort_in_graph_nms_matches_torch_backend(torch_dets) -> None:
    with OnnxRuntimeBackend(exported("onnx", "uint8", dynamic=True), max_batch=4) as backend:
        assert backend.layout == "nms"
        dets = backend.infer(np.ascontiguousarray(sample_batch(3)))
    assert_same_detections(dets, torch_dets, box_atol=1e-2, score_atol=1e-5)


def test_ort_in_graph_nms_can_only_raise_conf(caplog: pytest.LogCaptureFixture) -> None:
    path = exported("onnx", "uint8", dynamic=True)
    batch = np.ascontiguousarray(sample_batch(3)[:1])
    with OnnxRuntimeBackend(path) as backend:
        [base] = backend.infer(batch)
    conf = float(np.median(base.scores))
    with OnnxRuntimeBackend(path, nms_params=NMSParams(conf=conf)) as backend:
        [high] = backend.infer(batch)
    assert 0 < len(high) < len(base)
    np.testing.assert_array_equal(high.scores, base.scores[base.scores > conf])
    with OnnxRuntimeBackend(path, nms_params=NMSParams(conf=0.1, iou=0.5)):
        pass
    assert "only conf can be raised" in caplog.text
    assert "already gone" in caplog.text


def test_ort_backend_reads_model_info() -> None:
    with OnnxRuntimeBackend(exported("onnx", "uint8", dynamic=True)) as backend:
        info = backend.info
    assert (info.arch, info.num_classes, info.input_hw) == ("yolo_nas_s", 80, HW)
    assert info.class_names == [f"class{i}" for i in range(80)]


def test_ort_backend_rejects_bad_batches() -> None:
    with OnnxRuntimeBackend(exported("none", "uint8", dynamic=True), max_batch=2) as backend:
        with pytest.raises(ValueError, match="uint8"):
            backend.infer(np.zeros((1, 3, *HW), np.float32))
        with pytest.raises(ValueError, match=r"takes 1\.\.2"):
            backend.infer(np.zeros((3, 3, *HW), np.uint8))
        with pytest.raises(ValueError, match=r"\(B, 3, 320, 320\)"):
            backend.infer(np.zeros((1, 3, 640, 640), np.uint8))


# --------------------------------------------------------------------------- clear errors


def test_ort_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "nope.onnx")


def test_ort_error_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"PK\x03\x04 this is a zip, e.g. a torch checkpoint" * 10)
    with pytest.raises(OnnxModelError, match="is not an ONNX model"):
        OnnxRuntimeBackend(path)


def test_ort_error_tensorrt_export(tmp_path: Path) -> None:
    path = export_onnx(TinyDetector(), tmp_path / "trt.onnx", nms="tensorrt", input_hw=HW)
    with pytest.raises(OnnxModelError, match=r"EfficientNMS_TRT.*cannot run"):
        OnnxRuntimeBackend(path)


def _identity_onnx(path: Path, out_name: str = "y", shape=(1, 3, 8, 8)) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(shape))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], [out_name])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_ort_error_foreign_graph(tmp_path: Path) -> None:
    with pytest.raises(OnnxModelError, match=r"unrecognised outputs \['y'\].*nms='none'"):
        OnnxRuntimeBackend(_identity_onnx(tmp_path / "id.onnx"))
    with pytest.raises(OnnxModelError, match=r"shape \[1, 1, 8, 8\]; expected \(B, 3, H, W\)"):
        OnnxRuntimeBackend(_identity_onnx(tmp_path / "id1.onnx", shape=(1, 1, 8, 8)))


# --------------------------------------------------------------------------- open_backend


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("m.onnx", "onnxruntime"),
        ("m.ONNX", "onnxruntime"),
        ("m.engine", "tensorrt"),
        ("m.plan", "tensorrt"),
        ("m.pth", "torch"),
        ("m.safetensors", "torch"),
    ],
)
def test_backend_for_path(name: str, want: str) -> None:
    assert backend_for_path(name) == want


def test_open_backend_auto_onnx() -> None:
    backend: Backend = open_backend(
        "auto", exported("none", "uint8", dynamic=True), max_batch=2, threads=1
    )
    try:
        assert isinstance(backend, OnnxRuntimeBackend) and backend.max_batch == 2
    finally:
        backend.close()


def test_open_backend_refuses_contradictions() -> None:
    path = exported("none", "uint8", dynamic=True)
    with pytest.raises(BackendError, match="80 classes but num_classes=3"):
        open_backend("onnxruntime", path, num_classes=3)
    with pytest.raises(BackendError, match="yolo_nas_s but arch='yolo_nas_l'"):
        open_backend("onnxruntime", path, arch="yolo_nas_l")
    with pytest.raises(BackendError, match="unknown backend"):
        open_backend("openvino", path)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="half=True"):
        open_backend("onnxruntime", path, half=True)


def test_open_backend_torch(tmp_path: Path) -> None:
    weights = pytest.importorskip("stages.detect.weights", reason="weights.py not written yet")
    path = tmp_path / "s.pt"
    torch.save(detecting_model().state_dict(), path)
    try:
        backend = open_backend("auto", path, arch="yolo_nas_s", num_classes=80)
    except weights.WeightsError as err:  # the file format is weights.py's business
        pytest.skip(f"load_model does not take a bare state_dict: {err}")
    try:
        assert isinstance(backend, TorchBackend)
        assert backend.info.arch == "yolo_nas_s"
    finally:
        backend.close()


# --------------------------------------------------------------------------- CUDA


@pytest.fixture
def fp32_convs():
    """cuDNN runs FP32 convolutions as TF32 on Ampere and later by default (10-bit mantissa:
    scores move by ~1e-3). Comparing with the CPU at FP32 tolerances needs true FP32."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


@pytest.mark.gpu
@pytest.mark.usefixtures("fp32_convs")
def test_torch_cuda_matches_cpu(torch_dets) -> None:
    with torch_backend(device="cuda", max_batch=4) as backend:
        dets = backend.infer(np.ascontiguousarray(sample_batch(3)))
    # these random-weight scores tie to ~1e-6: CUDA may list (and keep) tied boxes differently
    assert_same_detections(dets, torch_dets, box_atol=1e-2, score_atol=1e-4, unmatched=0.02)


@pytest.mark.gpu
@pytest.mark.usefixtures("fp32_convs")
def test_torch_cuda_graphs_pad_to_bucket(torch_dets) -> None:
    with torch_backend(device="cuda", max_batch=4, cuda_graphs=True) as backend:
        first = backend.infer(np.ascontiguousarray(sample_batch(3)))  # captures bucket 4
        again = backend.infer(np.ascontiguousarray(sample_batch(3)))  # replays it
        one = backend.infer(np.ascontiguousarray(sample_batch(3)[:1]))  # bucket 1
        assert sorted(backend._graphs) == [1, 4]
    assert_same_detections(first, torch_dets, box_atol=1e-2, score_atol=1e-4, unmatched=0.02)
    assert_same_detections(again, first, box_atol=0, score_atol=0)  # replay is bit-exact
    assert_same_detections(one, first[:1], box_atol=1e-3, score_atol=1e-5, unmatched=0.02)


@pytest.mark.gpu
def test_torch_cuda_half_finds_what_fp32_finds() -> None:
    """FP16 on a trained model (the demo model on a synthetic street scene): every confident
    FP32 detection is found again, same class, IoU >= 0.9, score within 0.02. Random weights
    cannot show this: their near-tied scores let FP16 rounding change which box NMS keeps."""
    from stages.detect.preprocess import letterbox_batch, resize_to_for
    from stages.synth.scene import generate_scene

    weights = Path(__file__).resolve().parents[2] / "stages/detect/models/demo.pth"
    frames = generate_scene(seed=5, seconds=3, fps=5, size=(640, 384))
    rgb = [frame for frame, _ in list(frames)[::5][:3]]
    batch, _ = letterbox_batch(rgb, input_hw=(416, 416), resize_to=resize_to_for((416, 416)))
    results = {}
    for half in (False, True):
        with open_backend("torch", weights, device="cuda", half=half, max_batch=4) as backend:
            results[half] = backend.infer(np.ascontiguousarray(batch))
    confident = 0
    for full, fp16 in zip(results[False], results[True], strict=True):
        for box, cls, score in zip(full.boxes, full.class_ids, full.scores, strict=True):
            if score < 0.5:
                continue
            confident += 1
            same = fp16.class_ids == cls
            assert same.any(), f"class {cls} lost in FP16"
            ious = box_iou(box, fp16.boxes[same])
            k = int(np.argmax(ious))
            assert ious[k] >= 0.9, (box, fp16.boxes[same][k])
            assert abs(fp16.scores[same][k] - score) <= 0.02
    assert confident >= 5, "the scene should hold several confident objects"


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(box) + area(boxes) - inter)


@pytest.mark.gpu
def test_ort_cuda_provider_if_available(torch_dets) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime build without the CUDA provider")
    path = exported("none", "uint8", dynamic=True)
    with OnnxRuntimeBackend(path, providers=["CUDAExecutionProvider"], max_batch=4) as backend:
        dets = backend.infer(np.ascontiguousarray(sample_batch(3)))
    assert_same_detections(dets, torch_dets, box_atol=1e-2, score_atol=1e-4)


def test_detector_runs_on_either_backend(tmp_path: Path) -> None:
    """The `Detector` front end (letterbox -> backend -> source pixels) works with both."""
    from stages.detect.detector import Detector

    model = TinyDetector()  # at 640: the letterbox follows the reference (resize to 636)
    path = export_onnx(model, tmp_path / "t.onnx", dynamic_batch=True, input_hw=(640, 640))
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(240, 400), (500, 300)]]
    by_torch = Detector(TorchBackend(model, max_batch=2, info=ModelInfo(input_hw=(640, 640))))
    by_ort = Detector(OnnxRuntimeBackend(path, max_batch=2))
    got, want = by_ort.detect(images), by_torch.detect(images)
    assert sum(len(d) for d in want) > 0
    assert_same_detections(got, want, box_atol=1e-3, score_atol=1e-6)
    by_torch.close()
    by_ort.close()


@pytest.mark.parametrize("multi_label", [True, False])
def test_ort_in_graph_nms_raised_conf_at_a_score_matches_raw(
    tmp_path: Path, multi_label: bool
) -> None:
    """Raising conf to exactly a detection's score gives what the raw export and the
    reference postprocessing give at that conf: the boundary row is dropped for multi-label
    (> conf) and kept for single-label (>= conf)."""
    model = TinyDetector()
    graph = NMSParams(conf=0.1, multi_label=multi_label)
    nms = export_onnx(model, tmp_path / "n.onnx", nms="onnx", nms_params=graph, input_hw=HW)
    raw = export_onnx(model, tmp_path / "r.onnx", input_hw=HW)
    batch = tiny_batch()[:1]
    with OnnxRuntimeBackend(nms, nms_params=graph) as backend:
        [base] = backend.infer(batch)
    conf = float(base.scores[len(base) // 2])
    asked = NMSParams(conf=conf, multi_label=multi_label)
    with OnnxRuntimeBackend(nms, nms_params=asked) as backend:
        [got] = backend.infer(batch)
    with OnnxRuntimeBackend(raw, nms_params=asked) as backend:
        [want] = backend.infer(batch)
    assert (conf in want.scores.tolist()) is not multi_label  # the boundary row itself
    assert_same_detections([got], [want], box_atol=1e-4, score_atol=1e-6)
