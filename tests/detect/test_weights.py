"""Weights files: every accepted format, and every way a file can be wrong, with real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.detect.nn import YoloNAS, yolo_nas_m, yolo_nas_s
from stages.detect.weights import WeightsError, infer_arch, load_model, save_checkpoint

NAMES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def model_s3() -> YoloNAS:
    torch.manual_seed(0)
    model = yolo_nas_s(num_classes=3).eval()
    with torch.no_grad():  # make every tensor distinguishable from a fresh model's
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.add_(torch.rand_like(v) * 0.01)
    return model


@pytest.fixture(scope="module")
def sd_s3(model_s3: YoloNAS) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model_s3.state_dict().items()}


def assert_same_weights(model: YoloNAS, sd: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == sd.keys()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def sg_processing_params(names: list[str], hw: tuple[int, int]) -> dict:
    """What super-gradients' detection datasets put in a checkpoint (strings, not enums)."""
    h, w = hw
    return {
        "class_names": names,
        "image_processor": {
            "ComposeProcessing": {
                "processings": [
                    "ReverseImageChannels",
                    {"DetectionLongestMaxSizeRescale": {"output_shape": [h - 4, w - 4]}},
                    {"DetectionCenterPadding": {"output_shape": [h, w], "pad_value": 114}},
                    {"StandardizeImage": {"max_value": 255.0}},
                    "ImagePermute",
                ]
            }
        },
        "iou": 0.65,
        "conf": 0.5,
    }


# --- accepted formats ------------------------------------------------------------------------


def test_sg_checkpoint_prefers_ema_and_strips_module_prefix(
    sd_s3: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    net = {f"module.{k}": torch.zeros_like(v) for k, v in sd_s3.items()}
    ema = {f"module.{k}": v for k, v in sd_s3.items()}
    path = tmp_path / "ckpt_best.pth"
    torch.save(
        {
            "net": net,
            "ema_net": ema,
            "epoch": 42,
            "acc": torch.tensor(0.5),
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.01}]},
            "processing_params": sg_processing_params(NAMES, (512, 512)),
        },
        path,
    )
    model, info = load_model(path)
    assert_same_weights(model, sd_s3)
    assert not model.training
    assert info.arch == "yolo_nas_s" and info.num_classes == 3
    assert info.class_names == NAMES
    assert info.input_hw == (512, 512)


class _ListConfigLike:
    """Pickles like omegaconf's ListConfig (items in ``_content``, each node's in ``_val``).
    Importing or running it while loading would be a security hole: it records if it is."""

    constructed = False

    def __init__(self, items: list[str]) -> None:
        self.items = items

    def __getstate__(self) -> dict:
        return {"_content": [_NodeLike(x) for x in self.items], "_metadata": None}

    def __setstate__(self, state: dict) -> None:
        type(self).constructed = True


class _NodeLike:
    def __init__(self, value: str) -> None:
        self.value = value

    def __getstate__(self) -> dict:
        return {"_val": self.value, "_metadata": None}

    def __setstate__(self, state: dict) -> None:
        _ListConfigLike.constructed = True


def test_pickled_python_objects_are_read_without_running_them(
    sd_s3: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "trainer.pth"
    params = sg_processing_params(NAMES, (640, 640))
    params["class_names"] = _ListConfigLike(NAMES)
    torch.save({"net": sd_s3, "acc": np.float64(0.4), "processing_params": params}, path)
    model, info = load_model(path)
    assert info.class_names == NAMES
    assert not _ListConfigLike.constructed
    assert_same_weights(model, sd_s3)


def test_plain_state_dict_infers_arch_and_classes(
    model_s3: YoloNAS, sd_s3: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "weights.pt"
    torch.save(sd_s3, path)
    model, info = load_model(path, num_classes=3)
    assert (info.arch, info.num_classes, info.class_names) == ("yolo_nas_s", 3, [])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), model_s3(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_legacy_torch_format(sd_s3: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    torch.save({"net": sd_s3}, path, _use_new_zipfile_serialization=False)
    model, _ = load_model(path)
    assert_same_weights(model, sd_s3)


def test_safetensors_round_trip(model_s3: YoloNAS, tmp_path: Path) -> None:
    path = save_checkpoint(
        model_s3, tmp_path / "s3.safetensors", class_names=NAMES, input_hw=(384, 640)
    )
    model, info = load_model(path)
    assert_same_weights(model, model_s3.state_dict())
    assert (info.arch, info.num_classes, info.class_names) == ("yolo_nas_s", 3, NAMES)
    assert info.input_hw == (384, 640)


def test_saved_checkpoint_is_sg_format_and_plain_data(model_s3: YoloNAS, tmp_path: Path) -> None:
    path = save_checkpoint(model_s3, tmp_path / "s3.pth", class_names=NAMES)
    raw = torch.load(path, weights_only=True)  # what super-gradients' loader does
    assert set(raw) >= {"net", "processing_params"}
    assert raw["processing_params"]["class_names"] == NAMES
    assert raw["processing_params"]["image_processor"]["ComposeProcessing"]["processings"]
    assert raw["edgestream"]["arch"] == "yolo_nas_s"
    model, info = load_model(path)
    assert_same_weights(model, model_s3.state_dict())
    assert info.class_names == NAMES and info.input_hw == (640, 640)


def test_save_refuses_fused_models_and_wrong_names(tmp_path: Path) -> None:
    model = yolo_nas_s(3).eval()
    with pytest.raises(WeightsError, match="3-class model"):
        save_checkpoint(model, tmp_path / "x.pth", class_names=["a"])
    with pytest.raises(WeightsError, match="fused"):
        save_checkpoint(model.fuse(), tmp_path / "x.pth")


def test_infer_arch_tells_s_from_m() -> None:
    assert infer_arch(yolo_nas_s(7).state_dict()) == "yolo_nas_s"
    assert infer_arch(yolo_nas_m(80).state_dict()) == "yolo_nas_m"
    assert infer_arch({"a": torch.zeros(1)}) is None


# --- errors ----------------------------------------------------------------------------------


def load_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(WeightsError) as e:
        load_model(path, **kwargs)  # type: ignore[arg-type]
    return str(e.value)


def test_class_count_disagreement(sd_s3: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "s3.pt"
    torch.save(sd_s3, path)
    assert "weights have 3 classes, the config asks for 80" in load_error(path, num_classes=80)


def test_wrong_architecture_names_keys_and_the_lookalike(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save(yolo_nas_m(80).state_dict(), path)
    msg = load_error(path, arch="yolo_nas_s")
    assert "do not fit yolo_nas_s" in msg
    assert "unexpected keys (e.g. neck." in msg and "other shapes" in msg
    assert "look like yolo_nas_m" in msg


def test_foreign_state_dict(sd_s3: dict[str, torch.Tensor], tmp_path: Path) -> None:
    sd = dict(sd_s3)
    del sd["backbone.stem.conv.post_bn.weight"]
    sd["backbone.extra.weight"] = torch.zeros(3)
    path = tmp_path / "foreign.pt"
    torch.save(sd, path)
    msg = load_error(path)
    assert "match no YOLO-NAS architecture" in msg
    assert "missing keys (e.g. backbone.stem.conv.post_bn.weight)" in msg
    assert "unexpected keys (e.g. backbone.extra.weight)" in msg
    # A network that is not YOLO-NAS at all (no class head).
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), path)
    assert "match no YOLO-NAS architecture" in load_error(path)


def test_fused_weights_get_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "fused.pt"
    torch.save(yolo_nas_s(80).eval().fuse(fold_batchnorm=True).state_dict(), path)
    assert "fused (re-parameterised) weights" in load_error(path)


@pytest.mark.parametrize("fraction", [0.5, 0.01])
def test_truncated_checkpoint(
    sd_s3: dict[str, torch.Tensor], tmp_path: Path, fraction: float
) -> None:
    full = tmp_path / "full.pth"
    torch.save({"net": sd_s3}, full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * fraction)])
    assert "truncated or corrupt" in load_error(cut)


def test_truncated_legacy_checkpoint(sd_s3: dict[str, torch.Tensor], tmp_path: Path) -> None:
    full = tmp_path / "full.pth"
    torch.save({"net": sd_s3}, full, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    assert "truncated or corrupt" in load_error(cut)


def test_truncated_safetensors(model_s3: YoloNAS, tmp_path: Path) -> None:
    full = save_checkpoint(model_s3, tmp_path / "full.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    assert "truncated or corrupt" in load_error(cut)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.pth"
    rng = np.random.default_rng(7)
    data = rng.bytes(65536)
    path.write_bytes(b"\x17" + data)  # a first byte no known format starts with
    assert "not a PyTorch checkpoint or a safetensors file" in load_error(path)


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "config.pth"
    path.write_text(json.dumps({"arch": "yolo_nas_s"}))
    assert "JSON file" in load_error(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter
def test_onnx_file_points_at_the_onnx_backend(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"  # the name does not matter: the content does
    conv = torch.nn.Conv2d(3, 4, 3)
    torch.onnx.export(conv, (torch.rand(1, 3, 8, 8),), str(path), dynamo=False)
    assert "this is an ONNX model, use --backend onnxruntime" in load_error(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script
def test_torchscript_archive(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Conv2d(3, 4, 3)).save(str(path))
    assert "TorchScript archive" in load_error(path)


def test_empty_missing_and_weightless_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert "empty" in load_error(empty)
    assert "no such file" in load_error(tmp_path / "absent.pth")
    weightless = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "acc": 0.5}, weightless)
    assert "without model weights" in load_error(weightless)


def test_unknown_arch_name(sd_s3: dict[str, torch.Tensor], tmp_path: Path) -> None:
    path = tmp_path / "s3.pt"
    torch.save(sd_s3, path)
    assert "unknown arch 'yolo_nas_xl'" in load_error(path, arch="yolo_nas_xl")
