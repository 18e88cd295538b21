"""TensorRT engine build + backend against ONNX Runtime, on a real GPU.

Everything marked ``tensorrt`` needs ``pip install edgestream[tensorrt]`` and an NVIDIA GPU;
it skips elsewhere (conftest). The models are tiny exports (input 64x64) so that a build
takes seconds. What runs without TensorRT is at the bottom: the install hint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from tiny_detector import TinyDetector

from stages.detect.backends.tensorrt_backend import TensorRTBackend, TensorRTError
from stages.detect.engine_cache import build_engine, detect_trt_api
from stages.detect.engine_sidecar import read_sidecar, sidecar_path
from stages.detect.export import export_onnx
from stages.detect.onnx_facts import EngineCacheError
from stages.detect.quantize import (
    agreement_of,
    cpu_backend,
    model_input,
    modelopt_available,
    quantize_onnx,
    synthetic_frames,
)
from stages.detect.types import NMSParams

HW = (64, 64)
NAMES = ["a", "b", "c"]
PARAMS = NMSParams(conf=0.25, iou=0.7)


@pytest.fixture(scope="module")
def trt() -> object:
    return pytest.importorskip("tensorrt", reason="pip install edgestream[tensorrt] (GPU only)")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("onnx")
    kw = {"input_hw": HW, "class_names": NAMES, "dynamic_batch": True, "arch": "tiny"}
    export_onnx(TinyDetector(), d / "float.onnx", **kw)
    export_onnx(TinyDetector(), d / "uint8.onnx", input_dtype="uint8", **kw)
    export_onnx(TinyDetector(), d / "nms.onnx", nms="tensorrt", nms_params=PARAMS, **kw)
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


def batch(n: int = 4) -> np.ndarray:
    return model_input(synthetic_frames(n, hw=(96, 128), seed=5), "uint8", HW)


def ort_dets(onnx_path: Path, x: np.ndarray) -> list:
    with cpu_backend(onnx_path, PARAMS, len(x)) as backend:
        return backend.infer(x)


@pytest.mark.parametrize("kind", ["float", "uint8"])
@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp32_engine_matches_onnxruntime(onnx_dir: Path, cache: Path, kind: str) -> None:
    onnx_path = onnx_dir / f"{kind}.onnx"
    engine = build_engine(onnx_path, precision="fp32", max_batch=4, cache_dir=cache, progress=False)
    sc = read_sidecar(engine)
    assert sc.class_names == NAMES and sc.arch == "tiny" and sc.input_dtype in ("float32", "uint8")
    x = batch(4)
    with TensorRTBackend(engine, nms_params=PARAMS) as be:
        assert be.max_batch == 4 and be.info.class_names == NAMES and be.layout == "raw"
        got = be.infer(x)
    m = agreement_of(ort_dets(onnx_path, x), got)
    assert m["ref_detections"] > 0
    # TF32 is allowed for fp32 engines: tiny score differences, same boxes.
    assert m["recall"] == 1.0 and m["precision"] == 1.0, m
    assert m["mean_iou"] > 0.99 and m["max_score_diff"] < 1e-2, m


@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_cache_hit_does_not_rebuild(onnx_dir: Path, cache: Path) -> None:
    a = build_engine(onnx_dir / "float.onnx", precision="fp32", max_batch=4, cache_dir=cache)
    mtime = a.stat().st_mtime_ns
    b = build_engine(onnx_dir / "float.onnx", precision="fp32", max_batch=4, cache_dir=cache)
    assert a == b and b.stat().st_mtime_ns == mtime
    c = build_engine(onnx_dir / "float.onnx", precision="fp32", max_batch=2, cache_dir=cache)
    assert c != a  # another profile is another engine


@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_batch_sizes_change_without_changing_results(onnx_dir: Path, cache: Path) -> None:
    engine = build_engine(onnx_dir / "float.onnx", precision="fp32", max_batch=4, cache_dir=cache)
    x = batch(4)
    with TensorRTBackend(engine, nms_params=PARAMS) as be:
        full = be.infer(x)
        singles = [be.infer(x[i : i + 1])[0] for i in range(4)]
        pair = be.infer(x[1:3])
        with pytest.raises(ValueError, match=r"1\.\.4"):
            be.infer(batch(5))
    for a, b in zip(full, singles, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(pair[0].scores, full[1].scores, atol=1e-4)


@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_efficient_nms_engine(onnx_dir: Path, cache: Path) -> None:
    engine = build_engine(onnx_dir / "nms.onnx", precision="fp32", max_batch=4, cache_dir=cache)
    x = batch(4)
    with TensorRTBackend(engine, nms_params=PARAMS) as be:
        assert be.layout == "nms"
        got = be.infer(x)
    m = agreement_of(ort_dets(onnx_dir / "float.onnx", x), got)
    # The plugin considers every class of a box and sorts differently: near, not identical.
    assert m["recall"] >= 0.9 and m["mean_iou"] > 0.98, m


@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp16_engine(trt: object, onnx_dir: Path, cache: Path) -> None:
    api = detect_trt_api(trt)
    if not api.has_precision_flags and not modelopt_available():
        pytest.skip('TensorRT 11 needs an AutoCast ONNX for fp16: pip install "edgestream[quant]"')
    engine = build_engine(onnx_dir / "float.onnx", precision="fp16", max_batch=4, cache_dir=cache)
    assert read_sidecar(engine).key.precision == "fp16"
    x = batch(4)
    with TensorRTBackend(engine, nms_params=PARAMS) as be:
        got = be.infer(x)
    m = agreement_of(ort_dets(onnx_dir / "float.onnx", x), got)
    assert m["recall"] >= 0.9 and m["mean_iou"] > 0.95 and m["max_score_diff"] < 0.02, m


@pytest.mark.skipif(not modelopt_available(), reason='needs pip install "edgestream[quant]"')
@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_int8_qdq_engine(onnx_dir: Path, cache: Path, tmp_path: Path) -> None:
    q = quantize_onnx(
        onnx_dir / "float.onnx",
        tmp_path / "int8.onnx",
        "int8",
        calib=synthetic_frames(16, (96, 128)),
        progress=False,
    )
    engine = build_engine(q, precision="int8", max_batch=4, cache_dir=cache, progress=False)
    x = batch(4)
    with TensorRTBackend(engine, nms_params=PARAMS) as be:
        got = be.infer(x)
    m = agreement_of(ort_dets(q, x), got)  # TensorRT INT8 vs ORT running the same Q/DQ graph
    assert m["recall"] >= 0.8 and m["mean_iou"] > 0.9, m


@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_fp16_on_tensorrt_11_without_autocast_is_refused(
    trt: object, onnx_dir: Path, cache: Path
) -> None:
    if detect_trt_api(trt).has_precision_flags:
        pytest.skip("TensorRT 10 still builds fp16 from an FP32 ONNX (BuilderFlag.FP16)")
    with pytest.raises(EngineCacheError, match=r"AutoCast|quantize_onnx"):
        build_engine(onnx_dir / "float.onnx", precision="fp16", cache_dir=cache, auto_convert=False)


@pytest.mark.usefixtures("trt")
@pytest.mark.tensorrt
@pytest.mark.gpu
def test_load_errors_are_clear(onnx_dir: Path, cache: Path, tmp_path: Path) -> None:
    with pytest.raises(TensorRTError, match="not a TensorRT engine"):
        TensorRTBackend(onnx_dir / "float.onnx")
    junk = tmp_path / "junk.engine"
    junk.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(TensorRTError, match="could not load"):
        TensorRTBackend(junk)

    engine = build_engine(onnx_dir / "float.onnx", precision="fp32", max_batch=4, cache_dir=cache)
    with pytest.raises(TensorRTError, match="rebuild the engine with max_batch=8"):
        TensorRTBackend(engine, max_batch=8)
    # An engine whose sidecar says it was built by another TensorRT version.
    moved = tmp_path / "moved.engine"
    moved.write_bytes(engine.read_bytes())
    doc = json.loads(sidecar_path(engine).read_text())
    doc["key"]["trt_version"] = "9.0.0"
    sidecar_path(moved).write_text(json.dumps(doc))
    with pytest.raises(TensorRTError, match="does not match this machine"):
        TensorRTBackend(moved)
    truncated = tmp_path / "truncated.engine"
    truncated.write_bytes(engine.read_bytes()[: engine.stat().st_size // 2])
    with pytest.raises(TensorRTError, match="could not load"):
        TensorRTBackend(truncated)


# -- runs everywhere ------------------------------------------------------------------------


def test_missing_tensorrt_names_the_extra(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(TensorRTError, match=r"pip install edgestream\[tensorrt\]"):
        TensorRTBackend(tmp_path / "x.engine")
    with pytest.raises(EngineCacheError, match=r"pip install edgestream\[tensorrt\]"):
        build_engine(tmp_path / "x.onnx")
