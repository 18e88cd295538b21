"""ONNX export: ONNX Runtime agrees with torch for every form `export_onnx` writes.

The real YOLO-NAS-S is used where numerics matter, at 320x320 input (2100 anchors, a quarter
of the 640 cost; the graph is the same). Its random init is rescaled so that a few thousand
(anchor, class) pairs pass conf=0.25 on the synthetic images — enough to exercise top-k (1024)
and a busy class-aware NMS. A tiny stand-in detector covers the structural and option tests,
where exporting S would only cost time.

Exports are cached per process (`exported`) and shared with test_backends.py.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from synthetic_images import synthetic_rgb
from torch import nn

from stages.detect.export import (
    METADATA_KEYS,
    NMS_OUTPUTS,
    ExportError,
    export_onnx,
)
from stages.detect.nn.yolo_nas import yolo_nas_s
from stages.detect.onnx_facts import inspect_onnx
from stages.detect.postprocess import postprocess
from stages.detect.preprocess import to_float
from stages.detect.types import Detections, NMSParams

HW = (320, 320)
# Measured on CPU (ORT 1.32 vs torch 2.13, fused S at 320, 3 images): boxes <= 1.3e-4 px,
# scores <= 2.6e-6. The bounds leave ~5-10x headroom for other CPUs' kernel choices.
BOX_ATOL = 1e-3
SCORE_ATOL = 1e-5

# --------------------------------------------------------------------------- shared helpers

_TMP = Path(tempfile.mkdtemp(prefix="edgestream-test-export-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def detecting_model() -> nn.Module:
    """YOLO-NAS-S (unfused, eval) whose class logits are rescaled so that scores pass 0.25.

    The default init gives logits of std ~1e-3 around the -4.6 prior bias (no score reaches
    0.02). Each head's ``cls_pred`` weight is scaled so its logits (before bias) have std 1.5
    on a synthetic image, and its bias set to -4: ~0.3 % of the pairs then exceed 0.25.
    """
    torch.manual_seed(0)
    model = yolo_nas_s().eval()
    heads = {n: m for n, m in model.named_modules() if n.endswith("cls_pred")}
    stds: dict[str, float] = {}

    def hook(name: str):
        def fn(mod: nn.Module, _inp: object, out: torch.Tensor) -> None:
            stds[name] = float((out - mod.bias.view(1, -1, 1, 1)).std())

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in heads.items()]
    with torch.inference_mode():
        model(torch.from_numpy(to_float(sample_batch(1))))
    for h in handles:
        h.remove()
    with torch.no_grad():
        for n, m in heads.items():
            m.weight.mul_(1.5 / stds[n])
            m.bias.fill_(-4.0)
    return model


@functools.lru_cache(maxsize=4)
def sample_batch(n: int) -> np.ndarray:
    """``n`` different synthetic RGB images as a uint8 (n, 3, 320, 320) batch."""
    imgs = [synthetic_rgb(*HW, tag=f"export-{i}").transpose(2, 0, 1) for i in range(n)]
    batch = np.ascontiguousarray(np.stack(imgs))
    batch.flags.writeable = False
    return batch


@functools.lru_cache(maxsize=4)
def reference_outputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused torch model's (boxes, scores) on ``sample_batch(n)``."""
    fused = copy.deepcopy(detecting_model()).fuse()
    with torch.inference_mode():
        boxes, scores = fused(torch.from_numpy(to_float(sample_batch(n))))
    return boxes.clone(), scores.clone()


@functools.cache
def exported(
    nms: str = "none", input_dtype: str = "float", dynamic: bool = True, batch_size: int = 1
) -> Path:
    """One export of `detecting_model` per option set, kept for the whole test session."""
    name = f"s_{nms}_{input_dtype}_{'dyn' if dynamic else batch_size}.onnx"
    return export_onnx(
        detecting_model(),
        _TMP / name,
        nms=nms,  # type: ignore[arg-type]
        input_dtype=input_dtype,  # type: ignore[arg-type]
        dynamic_batch=dynamic,
        batch_size=batch_size,
        input_hw=HW,
        class_names=[f"class{i}" for i in range(80)],
    )


def ort_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})


class TinyDetector(nn.Module):
    """A stand-in with YOLO-NAS's interface: one anchor per 32x32 cell, C classes.

    Boxes are the cell's centre +- a learned half size (so neighbours overlap and NMS has work
    to do), scores a sigmoid of a 1x1 conv; ``fuse()`` only flips a flag.
    """

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_classes = num_classes
        self.head = nn.Conv2d(3, 4 + num_classes, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 3)
            self.head.bias.copy_(torch.randn(self.head.bias.shape, generator=g))
        self.fused = False

    def fuse(self) -> TinyDetector:
        self.fused = True
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.head(nn.functional.avg_pool2d(x, 32))  # (B, 4 + C, H/32, W/32)
        _, _, gh, gw = f.shape
        f = f.flatten(2).transpose(1, 2)  # (B, A, 4 + C)
        ys, xs = torch.meshgrid(
            torch.arange(gh, dtype=x.dtype), torch.arange(gw, dtype=x.dtype), indexing="ij"
        )
        centres = torch.stack([xs, ys], -1).reshape(1, -1, 2) * 32 + 16
        half = 20 + 30 * torch.sigmoid(f[..., :2])
        shift = 10 * torch.tanh(f[..., 2:4])
        boxes = torch.cat([centres + shift - half, centres + shift + half], -1)
        return boxes, torch.sigmoid(f[..., 4:])


@functools.lru_cache(maxsize=1)
def tiny_batch() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (3, 3, *HW), dtype=np.uint8)


def assert_same_detections(
    got, want, box_atol: float, score_atol: float = 1e-6, unmatched: float = 0.0
) -> None:
    """Per image, the two lists hold the same detections in any order: paired one-to-one
    (a maximum bipartite matching, so a greedy first pick cannot steal a partner) with the
    same class and box and score within tolerance.

    Order is not compared: boxes whose scores tie to within rounding (0.53797626 vs 0.5379763
    in the random-weight model) come out of another kernel, runtime version or device in
    either order; the set of detections is what must not change.

    unmatched: the fraction of detections (of the larger side, per image) allowed to have no
    partner. The random-weight test model scores hundreds of boxes within 1e-6 of each other,
    so top-k and NMS may keep a different one of a tie on another device; 0 elsewhere."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_bipartite_matching

    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        ng, nw = len(g.scores), len(w.scores)
        allowed = int(unmatched * max(ng, nw))
        assert abs(ng - nw) <= allowed, f"image {i}: {ng} detections vs {nw}"
        if ng == 0 or nw == 0:
            continue
        close = (
            (w.class_ids[:, None] == g.class_ids[None, :])
            & (np.abs(w.boxes[:, None, :] - g.boxes[None, :, :]).max(axis=2) <= box_atol)
            & (np.abs(w.scores[:, None] - g.scores[None, :]) <= score_atol)
        )
        partner = maximum_bipartite_matching(csr_matrix(close.astype(np.int8)), perm_type="column")
        missing = [
            f"class {w.class_ids[j]} box {w.boxes[j]} score {w.scores[j]:.8f}"
            for j in np.flatnonzero(partner < 0)
        ]
        assert len(missing) <= allowed and (ng - (nw - len(missing))) <= allowed, (
            f"image {i}: {len(missing)} of {nw} unmatched (allowed {allowed}): {missing[:5]}"
        )


def test_assert_same_detections_pairs_any_order_and_fails_on_a_change() -> None:
    """The comparator every parity test relies on: order-free, but not lenient."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    a = Detections(boxes, np.array([0.53797626, 0.5379763, 0.4], np.float32), np.array([1, 1, 2]))
    swapped = Detections(boxes[[1, 0, 2]], a.scores[[1, 0, 2]], a.class_ids[[1, 0, 2]])
    assert_same_detections([swapped], [a], box_atol=1e-3, score_atol=1e-6)
    # want[0] fits got[0] and got[1], want[1] only got[0]: a greedy first pick strands want[1]
    near = Detections(boxes[[1, 0, 2]] - [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]],
                      a.scores[[1, 0, 2]], a.class_ids[[1, 0, 2]])  # fmt: skip
    assert_same_detections([near], [a], box_atol=1.5, score_atol=1e-6)
    for bad in (
        Detections(boxes + np.array([0, 0, 5, 0]) * [[0], [0], [1]], a.scores, a.class_ids),
        Detections(boxes, a.scores, np.array([1, 1, 3])),
        Detections(boxes, a.scores - [0, 0, 0.01], a.class_ids),
        Detections(boxes[:2], a.scores[:2], a.class_ids[:2]),
    ):
        with pytest.raises(AssertionError):
            assert_same_detections([bad], [a], box_atol=1e-3, score_atol=1e-6)


# --------------------------------------------------------------------------- nms="none"


def test_model_yields_detections() -> None:
    """Guard for every parity test below: they mean nothing on an empty frame."""
    _, scores = reference_outputs(3)
    passing = (scores > 0.25).sum(dim=(1, 2))
    assert (passing > NMSParams().top_k).all(), passing  # top-k truncation is exercised


def test_raw_float_fixed_batch_matches_torch() -> None:
    path = exported("none", "float", dynamic=False, batch_size=1)
    x = sample_batch(1)
    boxes, scores = ort_run(path, to_float(x))
    ref_boxes, ref_scores = reference_outputs(1)
    assert boxes.shape == (1, 2100, 4) and scores.shape == (1, 2100, 80)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), rtol=0, atol=BOX_ATOL)
    np.testing.assert_allclose(scores, ref_scores.numpy(), rtol=0, atol=SCORE_ATOL)
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in shape] == [1, 3, *HW]


@pytest.mark.parametrize("n", [1, 3])
def test_raw_uint8_dynamic_batch_matches_torch(n: int) -> None:
    path = exported("none", "uint8", dynamic=True)
    boxes, scores = ort_run(path, np.ascontiguousarray(sample_batch(3)[:n]))
    ref_boxes, ref_scores = reference_outputs(3)
    np.testing.assert_allclose(boxes, ref_boxes[:n].numpy(), rtol=0, atol=BOX_ATOL)
    np.testing.assert_allclose(scores, ref_scores[:n].numpy(), rtol=0, atol=SCORE_ATOL)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_float_and_uint8_graphs_compute_the_same() -> None:
    """The in-graph Cast + /255 equals `to_float` exactly."""
    x = np.ascontiguousarray(sample_batch(3)[:1])
    f_boxes, f_scores = ort_run(exported("none", "float", dynamic=False), to_float(x))
    u_boxes, u_scores = ort_run(exported("none", "uint8", dynamic=True), x)
    np.testing.assert_allclose(u_boxes, f_boxes, rtol=0, atol=1e-4)
    np.testing.assert_allclose(u_scores, f_scores, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- nms="onnx"


def test_onnx_nms_matches_torch_postprocess() -> None:
    path = exported("onnx", "uint8", dynamic=True)
    num, boxes, scores, classes = ort_run(path, np.ascontiguousarray(sample_batch(3)))
    assert num.shape == (3, 1) and num.dtype == np.int64
    assert boxes.shape == (3, 300, 4) and scores.shape == (3, 300)
    assert classes.dtype == np.int64
    want = postprocess(*reference_outputs(3), NMSParams())
    assert all(len(w) > 20 for w in want)
    got = [
        Detections(boxes[i, :n], scores[i, :n], classes[i, :n])
        for i, n in enumerate(int(k) for k in num[:, 0])
    ]
    assert_same_detections(got, want, box_atol=1e-2, score_atol=SCORE_ATOL)
    for i in range(len(want)):
        n = int(num[i, 0])
        # padding past num_dets
        assert (boxes[i, n:] == 0).all() and (scores[i, n:] == 0).all()
        assert (classes[i, n:] == -1).all()


@pytest.mark.parametrize(
    "params",
    [
        NMSParams(),
        NMSParams(multi_label=False),
        NMSParams(conf=0.3, iou=0.5, top_k=40, max_det=7),
        NMSParams(conf=0.1, iou=0.45, multi_label=False, top_k=30, max_det=300),
        NMSParams(conf=0.5, iou=0.9, top_k=5000, max_det=1000),  # k clipped to N*C
    ],
    ids=["default", "single-label", "small-topk-maxdet", "single-small-topk", "huge-k"],
)
def test_onnx_nms_options_match_postprocess(tmp_path: Path, params: NMSParams) -> None:
    model = TinyDetector()
    path = export_onnx(
        model, tmp_path / "t.onnx", nms="onnx", nms_params=params, input_hw=HW, dynamic_batch=True
    )
    x = to_float(tiny_batch())
    num, boxes, scores, classes = ort_run(path, x)
    with torch.inference_mode():
        want = postprocess(*model(torch.from_numpy(x)), params)
    assert sum(len(w) for w in want) > 0
    for i, w in enumerate(want):
        n = int(num[i, 0])
        assert n == len(w), (i, n, len(w))
        np.testing.assert_array_equal(classes[i, :n], w.class_ids)
        np.testing.assert_allclose(boxes[i, :n], w.boxes, rtol=0, atol=1e-4)
        np.testing.assert_allclose(scores[i, :n], w.scores, rtol=0, atol=1e-6)


def test_onnx_nms_without_detections(tmp_path: Path) -> None:
    params = NMSParams(conf=0.9999)
    path = export_onnx(
        TinyDetector(), tmp_path / "t.onnx", nms="onnx", nms_params=params,
        dynamic_batch=True, input_hw=HW,
    )  # fmt: skip
    num, boxes, scores, classes = ort_run(path, to_float(tiny_batch()))
    assert (num == 0).all()
    assert (boxes == 0).all() and (scores == 0).all() and (classes == -1).all()


def test_onnx_nms_fixed_batch(tmp_path: Path) -> None:
    model = TinyDetector()
    path = export_onnx(model, tmp_path / "t.onnx", nms="onnx", batch_size=2, input_hw=HW)
    x = to_float(tiny_batch()[:2])
    num, *_ = ort_run(path, x)
    with torch.inference_mode():
        want = postprocess(*model(torch.from_numpy(x)), NMSParams())
    assert num.ravel().tolist() == [len(w) for w in want]


# --------------------------------------------------------------------------- nms="tensorrt"


def test_efficient_nms_trt_structure(tmp_path: Path) -> None:
    params = NMSParams(conf=0.3, iou=0.6, max_det=100)
    path = export_onnx(
        TinyDetector(), tmp_path / "trt.onnx", nms="tensorrt", nms_params=params,
        dynamic_batch=True, input_hw=HW,
    )  # fmt: skip
    model = onnx.load(str(path))
    onnx.checker.check_model(model)  # the TRT domain is custom: its node is not schema-checked
    assert {(o.domain, o.version) for o in model.opset_import} >= {("TRT", 1), ("", 17)}
    [node] = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert node.domain == "TRT"
    assert list(node.input) == ["boxes", "scores"]
    assert list(node.output) == list(NMS_OUTPUTS)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "plugin_version": b"1",
        "background_class": -1,
        "box_coding": 0,
        "iou_threshold": pytest.approx(0.6),
        "max_output_boxes": 100,
        "score_activation": 0,
        "score_threshold": pytest.approx(0.3),
        "class_agnostic": 0,
    }
    outputs = {
        o.name: (
            o.type.tensor_type.elem_type,
            [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim],
        )
        for o in model.graph.output
    }
    i32, f32 = onnx.TensorProto.INT32, onnx.TensorProto.FLOAT
    assert outputs == {
        "num_dets": (i32, ["batch", 1]),
        "det_boxes": (f32, ["batch", 100, 4]),
        "det_scores": (f32, ["batch", 100]),
        "det_classes": (i32, ["batch", 100]),
    }
    # The raw outputs became internal tensors feeding the plugin.
    produced = {o for n in model.graph.node for o in n.output}
    assert {"boxes", "scores"} <= produced
    assert {"boxes", "scores"}.isdisjoint(o.name for o in model.graph.output)


# --------------------------------------------------------------------------- metadata, options


def test_metadata_round_trips() -> None:
    meta = inspect_onnx(exported("onnx", "uint8", dynamic=True)).metadata
    assert set(METADATA_KEYS) <= set(meta)
    assert meta["arch"] == "yolo_nas_s"
    assert meta["num_classes"] == "80"
    assert json.loads(meta["class_names"]) == [f"class{i}" for i in range(80)]
    assert meta["input_dtype"] == "uint8"
    assert meta["nms"] == "onnx"
    assert json.loads(meta["input_hw"]) == list(HW)
    assert NMSParams(**json.loads(meta["nms_params"])) == NMSParams()
    assert meta["batch"] == "dynamic"
    assert meta["edgestream_version"]
    fixed = inspect_onnx(exported("none", "float", dynamic=False)).metadata
    assert (fixed["batch"], fixed["nms"], fixed["input_dtype"]) == ("1", "none", "float")


def test_export_leaves_the_model_alone(tmp_path: Path) -> None:
    model = TinyDetector()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "t.onnx", input_hw=HW)
    assert model.fused is False
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert detecting_model().fused is False  # the S exports above fused copies only


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nms": "fast"}, "nms must be"),
        ({"input_dtype": "float16"}, "input_dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"opset": 11}, "opset"),
        ({"class_names": ["a", "b"]}, "2 class names for a 5-class model"),
    ],
)
def test_export_rejects_bad_options(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        export_onnx(TinyDetector(), tmp_path / "t.onnx", input_hw=HW, **kwargs)


def test_opset_18_graph_runs(tmp_path: Path) -> None:
    """ReduceMax/ReduceSum changed signature in opset 18; the NMS graph handles both."""
    model = TinyDetector()
    params = NMSParams(multi_label=False)
    path = export_onnx(
        model, tmp_path / "t.onnx", nms="onnx", opset=18, nms_params=params,
        dynamic_batch=True, input_hw=HW,
    )  # fmt: skip
    x = to_float(tiny_batch())
    num, *_ = ort_run(path, x)
    with torch.inference_mode():
        want = postprocess(*model(torch.from_numpy(x)), params)
    assert num.ravel().tolist() == [len(w) for w in want]
