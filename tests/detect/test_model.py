"""YOLO-NAS network: state_dict layout of super-gradients 3.7.1, shapes, fusion, tracing.

Exact-value parity against the reference lives in tests/parity; here the layout is pinned by a
hash of every ``key:shape`` taken from super-gradients 3.7.1 itself, so a renamed module or a
wrong channel count fails without the reference installed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stages.detect.nn import ARCHS, RawOutputs, YoloNAS, yolo_nas_s
from stages.detect.nn.blocks import QARepVGGBlock

GOLDEN = Path(__file__).resolve().parents[1] / "parity" / "golden"

# From super_gradients.training.models.get(arch, num_classes=80).state_dict() in 3.7.1:
# (number of keys, sha256[:16] of the sorted "key:(shape)" lines).
REFERENCE_LAYOUT = {
    "yolo_nas_s": (921, "56db6fc631021063"),
    "yolo_nas_m": (965, "2d49724e17c3dcd2"),
    "yolo_nas_l": (1097, "026d5ba335b90e0f"),
}


def layout_hash(sd: dict[str, torch.Tensor]) -> str:
    lines = "\n".join(f"{k}:{tuple(int(s) for s in v.shape)}" for k, v in sorted(sd.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def calibrated(model: YoloNAS, seed: int = 0, hw: int = 64) -> YoloNAS:
    """Random BN affines and alphas, then BN statistics measured on random images, so that
    activations stay ~unit scale through the network like a trained model's (default init
    plus identity BN statistics makes every branch nearly trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batches
        model.train()
        for _ in range(2):
            model(torch.rand(2, 3, hw, hw, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def model_s() -> YoloNAS:
    torch.manual_seed(0)
    return calibrated(yolo_nas_s(80))


@pytest.mark.parametrize("arch", list(REFERENCE_LAYOUT))
def test_state_dict_layout_is_the_references(arch: str) -> None:
    sd = ARCHS[arch](80).state_dict()
    n_keys, digest = REFERENCE_LAYOUT[arch]
    assert len(sd) == n_keys
    assert layout_hash(sd) == digest
    golden = GOLDEN / f"{arch}_state_dict.json"
    if golden.exists():  # written by the parity generator from the reference
        data = json.loads(golden.read_text())
        shapes = data.get("shapes", data) if isinstance(data, dict) else {}
        if shapes and all(isinstance(v, list) for v in shapes.values()):
            assert {k: list(v.shape) for k, v in sd.items()} == shapes


def test_any_class_count() -> None:
    model = yolo_nas_s(num_classes=3).eval()
    for i, width in zip((1, 2, 3), (64, 128, 256), strict=True):
        head = getattr(model.heads, f"head{i}")
        assert tuple(head.cls_pred.weight.shape) == (3, width, 1, 1)
    with torch.no_grad():
        _, scores = model(torch.rand(1, 3, 64, 64))
    assert scores.shape == (1, 84, 3)
    assert yolo_nas_s(1).state_dict()["heads.head3.cls_pred.bias"].shape == (1,)
    with pytest.raises(ValueError, match="num_classes"):
        yolo_nas_s(0)


@pytest.mark.parametrize(("batch", "h", "w"), [(1, 640, 640), (2, 320, 416)])
def test_forward_shapes_and_box_sanity(model_s: YoloNAS, batch: int, h: int, w: int) -> None:
    anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
    with torch.no_grad():
        boxes, scores = model_s(torch.rand(batch, 3, h, w))
    assert anchors == (8400 if h == 640 else 2730)
    assert boxes.shape == (batch, anchors, 4) and scores.shape == (batch, anchors, 80)
    assert boxes.dtype == scores.dtype == torch.float32
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert bool((boxes[..., 2] >= boxes[..., 0]).all() and (boxes[..., 3] >= boxes[..., 1]).all())
    # Each box contains its anchor (distances are expectations of non-negative bins).
    first = boxes[0, 0]  # level 0, cell (0, 0): centre (4, 4) px
    assert first[0] <= 4.0 <= first[2] and first[1] <= 4.0 <= first[3]


def test_anchors_are_cached_per_size() -> None:
    model = yolo_nas_s(2).eval()
    heads = model.heads
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
        model(torch.rand(3, 3, 64, 64))
        assert len(heads._anchor_cache) == 1
        model(torch.rand(1, 3, 64, 96))
    assert len(heads._anchor_cache) == 2
    points, strides = next(iter(heads._anchor_cache.values()))
    assert points[0].tolist() == [0.5, 0.5] and strides[0].item() == 8.0
    assert strides[-1].item() == 32.0 and points.shape == (64 + 16 + 4, 2)


def test_training_mode_returns_what_a_loss_needs() -> None:
    model = yolo_nas_s(5).train()
    out = model(torch.rand(2, 3, 64, 96))
    assert isinstance(out, RawOutputs)
    a = 8 * 12 + 4 * 6 + 2 * 3
    assert out.cls_logits.shape == (2, a, 5)
    assert out.reg_distri.shape == (2, a, 4 * 17)
    assert out.anchors.shape == (a, 4) and out.anchor_points.shape == (a, 2)
    assert out.num_anchors_list == [96, 24, 6] and out.stride_tensor.shape == (a, 1)
    assert out.anchor_points[0].tolist() == [4.0, 4.0]  # pixels, unlike the eval-mode cache
    assert out.anchors[0].tolist() == [-16.0, -16.0, 24.0, 24.0]  # 5 strides wide
    (out.cls_logits.sum() + out.reg_distri.sum()).backward()
    assert model.heads.head1.cls_pred.weight.grad is not None


@pytest.mark.parametrize("fold_batchnorm", [False, True])
def test_fuse_changes_outputs_by_rounding_only(model_s: YoloNAS, fold_batchnorm: bool) -> None:
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    ref64 = copy.deepcopy(model_s).double()
    fused64 = copy.deepcopy(ref64).fuse(fold_batchnorm)
    with torch.no_grad():
        b0, s0 = ref64(x.double())
        b1, s1 = fused64(x.double())
    # The maths is exact: in float64 only rounding of ~1e-10 px remains.
    assert (b1 - b0).abs().max().item() < 1e-4
    assert (s1 - s0).abs().max().item() < 1e-7
    # In float32, rounding is amplified through ~100 layers (the reference's own fusion shows
    # the same, ~0.1 px at most on random weights); bound it loosely.
    fused32 = copy.deepcopy(model_s).fuse(fold_batchnorm)
    with torch.no_grad():
        b2, s2 = fused32(x)
    assert (b2.double() - b0).abs().max().item() < 0.5
    assert (b2.double() - b0).abs().mean().item() < 1e-2
    assert (s2.double() - s0).abs().max().item() < 1e-3
    assert not any(
        m.branch_3x3 is not None for m in fused32.modules() if isinstance(m, QARepVGGBlock)
    )
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in fused32.modules())
    assert has_bn is not fold_batchnorm
    assert fused32.fuse(fold_batchnorm) is fused32  # idempotent


def test_fused_state_dict_follows_the_reference_partial_fusion(model_s: YoloNAS) -> None:
    # prep_model_for_conversion drops branch_3x3/branch_1x1 and keeps post_bn + rbr_reparam.
    sd = copy.deepcopy(model_s).fuse().state_dict()
    assert not any("branch_" in k for k in sd)
    assert "backbone.stem.conv.rbr_reparam.weight" in sd
    assert "backbone.stem.conv.post_bn.running_var" in sd


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter
def test_onnx_export_with_dynamic_batch(model_s: YoloNAS, tmp_path: Path) -> None:
    """Traceable (no data-dependent Python control flow), one file for every batch size."""
    ort = pytest.importorskip("onnxruntime")
    fused = copy.deepcopy(model_s).fuse()
    path = tmp_path / "s.onnx"
    torch.onnx.export(
        fused,
        (torch.rand(1, 3, 96, 128),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["images"],
        output_names=["boxes", "scores"],
        dynamic_axes={"images": {0: "batch"}, "boxes": {0: "batch"}, "scores": {0: "batch"}},
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    boxes, scores = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = fused(x)
    assert boxes.shape == (3, 192 + 48 + 12, 4) and scores.shape == (3, 252, 80)
    # ORT's float32 kernels round differently: same loose bounds as fused-vs-unfused.
    assert np.abs(boxes - ref_boxes.numpy()).max() < 0.5
    assert np.abs(boxes - ref_boxes.numpy()).mean() < 1e-2
    assert np.abs(scores - ref_scores.numpy()).max() < 1e-3
