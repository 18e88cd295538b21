"""Export the reference's YOLO-NAS to ONNX (raw outputs, no pre/postprocessing) for benchmarks.

Runs ONLY in the super-gradients venv (README.md beside this file); writes outside the repo:

    HOME=/tmp/sghome /tmp/sg/bin/python tests/parity/export_reference_onnx.py [--out /tmp/ref_onnx]
        [--variants yolo_nas_s]

For each variant, with the same deterministic weights as the parity tests:

* ``<variant>_b1.onnx``   batch 1, static shapes
* ``<variant>_dyn.onnx``  dynamic batch axis (benchmark batch 1..N from one file)

Graph: float32 input ``input`` (B, 3, 640, 640) RGB in [0, 1]; outputs ``pred_boxes``
(B, 8400, 4) xyxy input pixels and ``pred_scores`` (B, 8400, 80); opset 17, the TorchScript
exporter (torch >= 2.9 defaults to dynamo, which super-gradients' export path does not expect),
QARepVGG blocks re-parameterised by ``model.export`` itself, onnx-simplifier applied.
Each file is checked with onnxruntime against the eager reference model on the parity image.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from super_gradients.conversion import ExportTargetBackend
from super_gradients.training import models

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from det_weights import deterministic_state_dict  # noqa: E402

OUTPUT_NAMES = ["pred_boxes", "pred_scores"]


def _force_torchscript_exporter() -> None:
    """super-gradients calls torch.onnx.export without ``dynamo``; pin it to False."""
    export = torch.onnx.export
    if getattr(export, "_edgestream_pinned", False):
        return
    pinned = functools.partial(export, dynamo=False)
    pinned._edgestream_pinned = True  # type: ignore[attr-defined]
    torch.onnx.export = pinned  # type: ignore[assignment]


def build(variant: str) -> torch.nn.Module:
    model = models.get(variant, num_classes=80)
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    dtypes = {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()}
    weights = deterministic_state_dict(shapes, dtypes, variant=variant)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    return model.eval()


def parity_input() -> np.ndarray:
    with np.load(HERE / "golden" / "letterbox.npz") as z:
        u8 = np.cumsum(z["predict_1920x1080"], axis=-1, dtype=np.uint8)
    return (u8 / 255.0).astype(np.float32)[None]


def export(variant: str, out_dir: Path) -> None:
    x = parity_input()
    with torch.no_grad():
        (ref_boxes, ref_scores), _ = build(variant)(torch.from_numpy(x))
    for tag, dynamic in (("b1", False), ("dyn", True)):
        path = out_dir / f"{variant}_{tag}.onnx"
        kwargs: dict[str, object] = {"opset_version": 17, "output_names": list(OUTPUT_NAMES)}
        if dynamic:
            kwargs["dynamic_axes"] = {name: {0: "batch"} for name in ["input", *OUTPUT_NAMES]}
        build(variant).export(
            str(path),
            engine=ExportTargetBackend.ONNXRUNTIME,
            preprocessing=False,
            postprocessing=False,
            batch_size=1,
            input_image_shape=(640, 640),
            onnx_export_kwargs=kwargs,
            onnx_simplify=True,
        )
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = {sess.get_inputs()[0].name: x}
        if dynamic:
            inputs = {sess.get_inputs()[0].name: np.concatenate([x, x])}
        boxes, scores = sess.run(OUTPUT_NAMES, inputs)
        db = float(np.abs(boxes[:1] - ref_boxes.numpy()).max())
        ds = float(np.abs(scores[:1] - ref_scores.numpy()).max())
        print(
            f"{path}: outputs {boxes.shape} {scores.shape}; vs eager: boxes {db:.3g} px, "
            f"scores {ds:.3g}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/ref_onnx"))
    ap.add_argument("--variants", nargs="+", default=["yolo_nas_s"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _force_torchscript_exporter()
    for variant in args.variants:
        export(variant, args.out)


if __name__ == "__main__":
    main()
