"""`describe(path)`: one look at a weights file, for every format, and every way a file can be
wrong, with real files (the shipped demo model, small exports, fake engines with sidecars)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_detector import TinyDetector

from stages.detect.backends import backend_for_path
from stages.detect.backends.onnxruntime_backend import OnnxRuntimeBackend
from stages.detect.describe import ModelFileError, config_mismatch, describe
from stages.detect.engine_cache import store_engine
from stages.detect.engine_sidecar import EngineKey, EngineSidecar
from stages.detect.export import export_onnx
from stages.detect.types import ModelInfo
from stages.detect.weights import WeightsError, load_model, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's ONNX exporter

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "stages" / "detect" / "models" / "demo.pth"
NAMES = ["cat", "dog", "bird"]


def error_of(path: Path) -> str:
    with pytest.raises(ModelFileError) as e:
        describe(path)
    message = str(e.value)
    assert message.startswith(f"{path}: "), message  # every message names the file first
    return message


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(TinyDetector(), path, input_hw=(96, 128), class_names=NAMES, arch="tiny")


# --- each format ----------------------------------------------------------------------------


def test_shipped_demo_checkpoint() -> None:
    info = describe(DEMO)
    assert info == ModelInfo(
        arch="yolo_nas_n",
        num_classes=3,
        class_names=["person", "car", "bicycle"],
        input_hw=(416, 416),
        format="torch",
        backend="torch",
    )


def test_safetensors_and_plain_state_dict(tmp_path: Path) -> None:
    model, _ = load_model(DEMO)
    st = save_checkpoint(model, tmp_path / "demo.safetensors", ["a", "b", "c"], input_hw=(320, 256))
    info = describe(st)
    assert (info.format, info.backend, info.arch, info.num_classes) == (
        "safetensors",
        "torch",
        "yolo_nas_n",
        3,
    )
    assert (info.class_names, info.input_hw) == (["a", "b", "c"], (320, 256))
    plain = tmp_path / "plain.pt"  # no metadata at all: the arch comes from keys and shapes
    torch.save(model.state_dict(), plain)
    info = describe(plain)
    assert (info.format, info.arch, info.num_classes, info.class_names, info.input_hw) == (
        "torch",
        "yolo_nas_n",
        3,
        [],
        (640, 640),
    )


def test_onnx_exports(tiny_onnx: Path, tmp_path: Path) -> None:
    info = describe(tiny_onnx)
    assert info == ModelInfo("tiny", 3, NAMES, (96, 128), "onnx", "onnxruntime", "none")
    # the backend reads the same description (one definition of the metadata rules)
    with OnnxRuntimeBackend(tiny_onnx) as backend:
        assert backend.info == info
    nms = export_onnx(TinyDetector(), tmp_path / "nms.onnx", nms="onnx", input_hw=(64, 64))
    info = describe(nms)
    assert (info.nms, info.backend, info.num_classes, info.class_names) == (
        "onnx",
        "onnxruntime",
        3,
        [],
    )


def test_tensorrt_nms_export_is_not_for_onnxruntime(tmp_path: Path) -> None:
    path = export_onnx(TinyDetector(), tmp_path / "trt.onnx", nms="tensorrt", input_hw=(64, 64))
    info = describe(path)
    assert (info.format, info.nms, info.backend) == ("onnx", "tensorrt", None)
    problem = config_mismatch(info, backend="auto", weights=path)
    assert problem is not None and "EfficientNMS_TRT" in problem


def fake_engine(path: Path, size: int = 4096, **sidecar: object) -> Path:
    """Bytes that only look like an engine by name, with a real sidecar beside them."""
    key = EngineKey("NVIDIA H200", "9.0", "10.3.0", "0" * 64, "fp16", 1, 4, 4, (480, 640))
    data = np.random.default_rng(0).bytes(size)
    store_engine(path, data, EngineSidecar(key, 0, "", **sidecar))  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("suffix", [".engine", ".plan", ".trt"])
def test_tensorrt_engines_by_suffix_with_their_sidecar(tmp_path: Path, suffix: str) -> None:
    path = fake_engine(tmp_path / f"m{suffix}", arch="yolo_nas_s", class_names=NAMES, nms="none")
    assert backend_for_path(path) == "tensorrt"  # .trt too: one rule, in one place
    info = describe(path)
    assert info == ModelInfo("yolo_nas_s", 3, NAMES, (480, 640), "tensorrt", "tensorrt", "none")
    bare = tmp_path / f"bare{suffix}"  # no sidecar: only the format is known
    bare.write_bytes(path.read_bytes())
    assert describe(bare) == ModelInfo(format="tensorrt", backend="tensorrt")


def test_backend_for_path() -> None:
    assert [backend_for_path(p) for p in ("a.onnx", "b.ENGINE", "c.pth", "d.safetensors")] == [
        "onnxruntime",
        "tensorrt",
        "torch",
        "torch",
    ]


# --- bad files ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["text file", "checkpoint of another network"])
def test_refused_without_importing_torch(case: str, tmp_path: Path) -> None:
    """A text file, and a checkpoint whose keys are not YOLO-NAS keys (read from its pickle
    without torch: `stages.detect.checkpoint_keys`), are refused in well under a second."""
    path = REPO / "README.md"
    says = "README.md: this is a text file, not model weights (a PyTorch checkpoint .pt/.pth, "
    says += ".safetensors, an ONNX export or a TensorRT engine .engine/.plan/.trt)"
    if case != "text file":
        path = tmp_path / "classifier.pth"
        torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), path)
        says = "the weights match no YOLO-NAS architecture: none of their keys is a YOLO-NAS "
        says += "backbone/neck/heads key (e.g. weight, bias); is this another network?"
    code = (
        "import sys\nfrom stages.detect.describe import describe\n"
        f"try:\n    describe({str(path)!r})\nexcept ValueError as e:\n"
        "    print(e)\nprint('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    message, torch_loaded = out.stdout.strip().splitlines()
    assert message.startswith(f"{path}: ") and message.endswith(says), message
    assert torch_loaded == "False"


def test_text_json_empty_missing(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"  # the suffix does not make it a model
    text.write_text("# a model card, not a model\n")
    assert "this is a text file, not an ONNX model" in error_of(text)
    js = tmp_path / "config.pth"
    js.write_text(json.dumps({"arch": "yolo_nas_s"}))
    assert "this is a JSON file, not model weights" in error_of(js)
    toml = tmp_path / "pyproject.pt"  # starts with "[" like JSON, but is not
    toml.write_text('[project]\nname = "x"\n')
    assert "this is a text file" in error_of(toml)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "the file is empty" in error_of(empty)
    assert "no such file" in error_of(tmp_path / "absent.pth")
    assert "not a file" in error_of(tmp_path)


@pytest.mark.parametrize("fraction", [0.5, 0.02])
def test_truncated_onnx(tiny_onnx: Path, tmp_path: Path, fraction: float) -> None:
    cut = tmp_path / "cut.onnx"
    data = tiny_onnx.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    message = error_of(cut)
    assert "truncated" in message


def test_onnx_cut_anywhere_is_refused(tiny_onnx: Path, tmp_path: Path) -> None:
    data = tiny_onnx.read_bytes()
    cut = tmp_path / "cut.onnx"
    for n in [*range(1, 64, 7), *range(64, len(data) - 1, max(1, len(data) // 97))]:
        cut.write_bytes(data[:n])
        with pytest.raises(ModelFileError):
            describe(cut)


def test_protobuf_reader_agrees_with_onnx(tiny_onnx: Path, tmp_path: Path) -> None:
    """The small wire-format reader (no `import onnx`: 0.7 s) reads what onnx.load reads."""
    import onnx

    from stages.detect.describe import _read_onnx

    nms = export_onnx(TinyDetector(), tmp_path / "nms.onnx", nms="onnx", dynamic_batch=True)
    for path in (tiny_onnx, nms):
        proto = onnx.load(str(path))
        mine = _read_onnx(path)
        dims = [
            [
                d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in v.type.tensor_type.shape.dim
            ]
            for v in proto.graph.output
        ]
        assert mine.outputs == list(zip([o.name for o in proto.graph.output], dims, strict=True))
        assert [n for n, _ in mine.inputs] == [i.name for i in proto.graph.input]
        assert mine.ops == {n.op_type for n in proto.graph.node}
        assert mine.initializers == {i.name for i in proto.graph.initializer}
        assert mine.metadata == {p.key: p.value for p in proto.metadata_props}
        assert mine.opsets == len(proto.opset_import) and mine.external == []


def test_external_weights_must_be_beside_the_model(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "ext.onnx"
    onnx.save_model(
        onnx.load(str(tiny_onnx)),
        str(path),
        save_as_external_data=True,
        location="ext.data",
        size_threshold=0,
    )
    assert describe(path).class_names == NAMES
    (tmp_path / "ext.data").unlink()
    assert "stored in 'ext.data' beside it, which is missing" in error_of(path)


def test_onnx_of_another_network(tmp_path: Path) -> None:
    path = tmp_path / "classifier.onnx"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    torch.onnx.export(model, (torch.rand(1, 3, 8, 8),), str(path), dynamo=False)
    assert "not a YOLO-NAS export's" in error_of(path)


def test_checkpoints_of_the_wrong_kind(tmp_path: Path) -> None:
    conv = tmp_path / "resnet.pth"
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), conv)
    assert "match no YOLO-NAS architecture" in error_of(conv)
    weightless = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "acc": 0.5}, weightless)
    assert "without model weights" in error_of(weightless)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(DEMO.read_bytes()[: DEMO.stat().st_size // 2])
    assert "truncated or corrupt" in error_of(cut)
    with pytest.raises(WeightsError):  # the weights module's errors are ModelFileErrors
        describe(cut)


def test_engines_that_are_not(tiny_onnx: Path, tmp_path: Path) -> None:
    onnx_named_engine = tmp_path / "model.engine"
    onnx_named_engine.write_bytes(tiny_onnx.read_bytes())
    assert "named like a TensorRT engine but it is an ONNX model" in error_of(onnx_named_engine)
    tiny = tmp_path / "tiny.plan"
    tiny.write_bytes(b"\x01" * 100)
    assert "too small for a TensorRT engine" in error_of(tiny)
    engine = fake_engine(tmp_path / "m.engine", class_names=NAMES)
    engine.write_bytes(engine.read_bytes()[:2000])
    assert "sidecar records 4096" in error_of(engine)


# --- a configuration against the description -------------------------------------------------


def test_config_mismatch(tiny_onnx: Path, tmp_path: Path) -> None:
    info = describe(tiny_onnx)
    assert config_mismatch(info, backend="auto", weights=tiny_onnx) is None
    assert config_mismatch(info, backend="onnxruntime", num_classes=3, class_names=NAMES) is None
    torch_msg = config_mismatch(info, backend="torch", weights=tiny_onnx)
    assert torch_msg == (
        "this is an ONNX model, which the torch backend cannot run: set backend: onnxruntime"
    )
    misnamed = tmp_path / "tiny.pth"  # auto goes by the suffix, the content says ONNX
    misnamed.write_bytes(tiny_onnx.read_bytes())
    msg = config_mismatch(describe(misnamed), backend="auto", weights=misnamed)
    assert msg is not None and "auto picks by the file suffix" in msg
    assert "3 classes but num_classes=80" in str(config_mismatch(info, num_classes=80))
    assert "tiny but arch='yolo_nas_s'" in str(config_mismatch(info, arch="yolo_nas_s"))
    assert "2 class_names were given for a 3-class model" in str(
        config_mismatch(info, class_names=["a", "b"])
    )
    assert config_mismatch(ModelInfo(), backend="tensorrt", num_classes=5) is None  # unknowns


def test_describe_only_reads(tiny_onnx: Path) -> None:
    before = tiny_onnx.read_bytes()
    describe(tiny_onnx)
    assert tiny_onnx.read_bytes() == before


def test_describe_and_weights_do_not_import_each_other_both_ways() -> None:
    """weights builds on the leaf model_files, not on describe (the old describe <-> weights
    cycle); describe needs weights (torch) only to describe a checkpoint."""
    code = (
        "import sys\nimport stages.detect.weights\nprint('stages.detect.describe' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "False", out.stderr
