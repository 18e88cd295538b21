"""FP16 and INT8 ONNX with NVIDIA ModelOpt, and the agreement check that validates them.

TensorRT 11 builds strongly typed networks only: the precision of an engine is the precision
written in its ONNX. This module produces those ONNX files from our FP32 export:

* ``precision="fp16"``: ModelOpt AutoCast (``convert_to_mixed_precision``) turns most of the
  graph into float16 and keeps in FP32 the nodes whose values would overflow or lose too much
  (it runs the model once on ONNX Runtime to decide). Graph inputs/outputs keep their types
  (``keep_io_types=True``), so backends feed the same uint8/float32 tensors as before.
* ``precision="int8"``: ModelOpt post-training quantization inserts QuantizeLinear /
  DequantizeLinear pairs whose scales come from *calibration*: real frames run through ONNX
  Runtime and the activation ranges are recorded. Calibration frames should look like
  production (same cameras, lighting, scenes); a few dozen evenly spaced frames are usually
  enough. Layers that are not quantized run in ``high_precision_dtype`` (fp16 by default,
  TensorRT's fastest mix).

ModelOpt is an optional extra (``pip install "edgestream[quant]"``): it pins its own onnx and
onnxruntime-gpu versions, so it is imported lazily and never by the runtime path.

`agreement` runs the FP32 ONNX and a converted one on the same images with ONNX Runtime on
the CPU and reports how well the detections agree: the check each precision must pass
before its engine is deployed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stages.detect.backends.onnxruntime_backend import OnnxRuntimeBackend
from stages.detect.onnx_facts import inspect_onnx
from stages.detect.progress import spinner
from stages.detect.sources import IMAGE_SUFFIXES, SourceError, image_files, iter_frames
from stages.detect.types import Detections, NMSParams

log = logging.getLogger(__name__)

QuantPrecision = Literal["fp16", "int8"]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts", ".m4v")
INT8_CALIB_FRAMES = 32
FP16_REFERENCE_FRAMES = 4
MODELOPT_HINT = 'pip install "edgestream[quant]"  (NVIDIA ModelOpt: nvidia-modelopt[onnx])'


class QuantizeError(RuntimeError):
    """The model cannot be converted as asked; the message says why."""


def modelopt_available() -> bool:
    try:
        import modelopt.onnx  # noqa: F401
    except ImportError:
        return False
    return True


def _require_modelopt() -> None:
    try:
        import modelopt.onnx  # noqa: F401
    except ImportError as e:
        raise QuantizeError(f"NVIDIA ModelOpt is not installed: {MODELOPT_HINT}") from e


# --------------------------------------------------------------------------------------------
# Frames: video, image folder, or synthetic
# --------------------------------------------------------------------------------------------


def evenly_spaced(total: int, num: int) -> list[int]:
    """``num`` indices spread over ``range(total)`` (all of them when ``num >= total``)."""
    if total <= 0 or num <= 0:
        return []
    if num >= total:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, num).round()})


def _video_frame_count(path: Path) -> int:
    """Count video packets by demuxing only (no decoding): exact for constant-frame streams."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for p in container.demux(stream) if p.size)


def _sampled(source: Path, total: int, num: int, progress: bool) -> list[np.ndarray]:
    """``num`` evenly spaced frames of ``total`` from `iter_frames`."""
    from tqdm.auto import tqdm

    wanted = evenly_spaced(total, num)
    frames = iter_frames(source, wanted)
    bar = tqdm(frames, total=len(wanted), desc=f"frames of {source.name}", disable=not progress)
    try:
        return [f.rgb for f in bar]
    except SourceError as e:
        raise QuantizeError(str(e)) from e


def read_video_frames(path: str | Path, num: int, progress: bool = False) -> list[np.ndarray]:
    """``num`` evenly spaced RGB (H, W, 3) uint8 frames of a video, decoded with PyAV."""
    path = Path(path)
    frames = _sampled(path, _video_frame_count(path), num, progress)
    if not frames:
        raise QuantizeError(f"no frames could be decoded from {path}")
    return frames


def read_image_folder(path: str | Path, num: int, progress: bool = False) -> list[np.ndarray]:
    """``num`` evenly spaced images (sorted by name) of a folder, as RGB (H, W, 3) uint8."""
    path = Path(path)
    try:
        total = len(image_files(path))
    except SourceError as e:
        raise QuantizeError(str(e)) from e
    return _sampled(path, total, num, progress)


def synthetic_frames(num: int, hw: tuple[int, int] = (480, 640), seed: int = 0) -> list[np.ndarray]:
    """Deterministic RGB test images: smooth gradients with a few solid rectangles and noise.

    Good for smoke tests and numerical-fidelity checks; poor for INT8 calibration (real
    frames have other statistics), which is why `quantize_onnx` warns when it falls back here.
    """
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for _ in range(num):
        base = np.stack(
            [
                (xx / w * 255 * rng.uniform(0.3, 1)),
                (yy / h * 255 * rng.uniform(0.3, 1)),
                ((xx + yy) / (h + w) * 255 * rng.uniform(0.3, 1)),
            ],
            axis=-1,
        )
        img = base + rng.normal(0, 8, size=base.shape)
        for _ in range(rng.integers(3, 8)):
            y0, x0 = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
            y1 = y0 + int(rng.integers(30, max(31, h // 2)))
            x1 = x0 + int(rng.integers(30, max(31, w // 2)))
            img[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def load_frames(
    source: str | Path | Sequence[np.ndarray] | None, num: int, progress: bool = False
) -> list[np.ndarray]:
    """RGB frames from a video file, an image folder, a list of RGB arrays, or None
    (deterministic synthetic frames)."""
    if source is None:
        return synthetic_frames(num)
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            return read_image_folder(p, num, progress)
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            return read_video_frames(p, num, progress)
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            return _sampled(p, 1, 1, progress)
        raise QuantizeError(f"{p}: not a video ({', '.join(VIDEO_SUFFIXES)}) or image folder")
    frames = list(source)
    for f in frames:
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise QuantizeError(f"frames must be (H, W, 3) uint8 RGB, got {f.shape} {f.dtype}")
    return frames


def model_input(
    frames: Sequence[np.ndarray], input_dtype: str, input_hw: tuple[int, int]
) -> np.ndarray:
    """Letterbox RGB frames into the batch an ONNX with ``input_dtype`` expects."""
    from stages.detect.preprocess import letterbox_batch, resize_to_for, to_float

    # as `Detector`: 636 of 640, 316 of 320 (2 px of padding per side, as in training)
    resize_to = resize_to_for(input_hw)
    batch_u8, _ = letterbox_batch(list(frames), input_hw=input_hw, resize_to=resize_to)
    if input_dtype == "uint8":
        return batch_u8
    x = to_float(batch_u8)
    return x.astype(np.float16) if input_dtype == "float16" else x


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def quantize_onnx(
    onnx_path: str | Path,
    output_path: str | Path,
    precision: QuantPrecision,
    calib: str | Path | Sequence[np.ndarray] | None = None,
    num_calib: int | None = None,
    progress: bool = True,
    *,
    calibration_method: str = "entropy",
    high_precision_dtype: str = "fp16",
) -> Path:
    """Write an FP16 (AutoCast) or INT8 (Q/DQ) version of ``onnx_path`` to ``output_path``.

    calib: frames that look like production — a video file, a folder of images, or a list
        of RGB arrays. INT8 derives its scales from them; FP16 (AutoCast) runs them once to
        find the nodes whose values overflow float16 and keeps those in FP32. None falls
        back to synthetic frames (with a warning for INT8: poor scales for production).
    num_calib: frames to use, evenly spaced over the source; default 32 for int8 (more give
        more robust ranges, at ~8 s per frame of calibration for YOLO-NAS S on a 2-core CPU,
        and 4.9 MB per float frame at 640x640), 4 for fp16 (AutoCast keeps every
        intermediate tensor of every frame in memory, and only needs the value ranges).
    calibration_method: "entropy" (default; ignores rare outliers, usually better for
        detection) or "max" (keeps the full range; safer when outliers matter).
    high_precision_dtype: type of the layers INT8 leaves unquantized: "fp16" (fastest on
        TensorRT) or "fp32" (closest to the FP32 model).

    The source must be a raw export (``nms="none"``) or one with ONNX NMS; a graph ending in
    ``EfficientNMS_TRT`` cannot run on ONNX Runtime, hence cannot be converted or calibrated.
    """
    if precision not in ("fp16", "int8"):
        raise ValueError(f"precision must be 'fp16' or 'int8', got {precision!r}")
    src, dst = Path(onnx_path), Path(output_path)
    facts = inspect_onnx(src)
    if facts.nms == "tensorrt":
        raise QuantizeError(
            f"{src} ends in EfficientNMS_TRT, which ONNX Runtime cannot run: convert the raw "
            "export (nms='none') instead; the TensorRT backend does NMS on the GPU"
        )
    if facts.precision != "fp32":
        raise QuantizeError(f"{src} is already {facts.precision}: convert the FP32 export")
    _require_modelopt()
    dst.parent.mkdir(parents=True, exist_ok=True)
    # ModelOpt writes intermediate files beside its input: work in a private folder, then
    # move the result into place atomically.
    with tempfile.TemporaryDirectory(prefix="edgestream-quant-", dir=dst.parent) as tmp:
        work = Path(tmp) / src.name
        shutil.copyfile(src, work)
        out = Path(tmp) / f"out{dst.suffix or '.onnx'}"
        if num_calib is None:
            num_calib = FP16_REFERENCE_FRAMES if precision == "fp16" else INT8_CALIB_FRAMES
        frames = load_frames(calib, num_calib, progress)
        if calib is None and precision == "int8":
            log.warning(
                "INT8 calibration on %d synthetic frames: pass calib=<video or image folder> "
                "from your cameras for production scales",
                len(frames),
            )
        data = model_input(frames, facts.input_dtype, facts.input_hw)
        if precision == "fp16":
            npz = Path(tmp) / "reference_inputs.npz"
            arrays: dict[str, Any] = {facts.input_name: data}
            np.savez(npz, **arrays)
            _autocast_fp16(work, out, npz, progress)
        else:
            _quantize_int8(
                work,
                out,
                facts.input_name,
                data,
                calibration_method,
                high_precision_dtype,
                progress,
            )
        _copy_metadata(src, out, precision)
        os.replace(out, dst)
    log.info("wrote %s ONNX %s", precision, dst)
    return dst


def _autocast_fp16(src: Path, out: Path, reference_npz: Path, progress: bool) -> None:
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    with spinner("AutoCast fp16", progress):
        model = convert_to_mixed_precision(
            onnx_path=str(src),
            low_precision_type="fp16",
            keep_io_types=True,  # same input/output dtypes as the FP32 export
            # Real frames for the range check that keeps overflowing nodes in FP32 (its
            # default random inputs also break on uint8 inputs in ModelOpt 0.47).
            calibration_data=str(reference_npz),
            providers=["cpu"],
        )
    onnx.save(model, str(out))


def _quantize_int8(
    src: Path,
    out: Path,
    input_name: str,
    data: np.ndarray,
    method: str,
    high_precision_dtype: str,
    progress: bool,
) -> None:
    from modelopt.onnx.quantization import quantize

    with spinner(f"INT8 calibration on {len(data)} frames", progress):
        quantize(
            str(src),
            quantize_mode="int8",
            calibration_data={input_name: data},
            calibration_method=method,
            calibration_eps=["cpu"],
            output_path=str(out),
            high_precision_dtype=high_precision_dtype,
            log_level="WARNING",
        )
    if not out.is_file():
        raise QuantizeError(f"ModelOpt produced no output for {src}")


def _copy_metadata(src: Path, out: Path, precision: str) -> None:
    """Carry the export's metadata_props (arch, class names, ...) over, plus the precision."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    model = onnx.load(str(out))
    have = {p.key for p in model.metadata_props}
    for k, v in meta.items():
        if k not in have:
            model.metadata_props.add(key=k, value=v)
    entry = next((p for p in model.metadata_props if p.key == "precision"), None)
    if entry is None:
        model.metadata_props.add(key="precision", value=precision)
    else:
        entry.value = precision
    onnx.save(model, str(out))


# --------------------------------------------------------------------------------------------
# Agreement on ONNX Runtime (CPU)
# --------------------------------------------------------------------------------------------


def cpu_backend(onnx_path: str | Path, nms_params: NMSParams, max_batch: int) -> OnnxRuntimeBackend:
    """The `OnnxRuntimeBackend` that agreement checks run on: CPU only, so the reference
    and the converted model meet the same kernels; its ``outputs`` gives the raw tensors and
    ``detections`` turns them into `Detections`."""
    return OnnxRuntimeBackend(
        onnx_path,
        providers=["CPUExecutionProvider"],
        max_batch=max(1, max_batch),
        nms_params=nms_params,
    )


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4) -> (N, M)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(np.float32)


def match_detections(
    ref: Detections, other: Detections, iou_threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, best reference score first, same class only:
    ``(ref_index, other_index, iou)`` for each reference detection that found a partner."""
    iou = box_iou(ref.boxes, other.boxes)
    same = ref.class_ids[:, None] == other.class_ids[None, :]
    iou = np.where(same, iou, 0.0)
    taken = np.zeros(len(other), bool)
    pairs = []
    for i in np.argsort(-ref.scores, kind="stable"):
        if iou.shape[1] == 0:
            break
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou_threshold:
            taken[j] = True
            pairs.append((int(i), j, float(cand[j])))
    return pairs


def agreement_of(
    ref: Sequence[Detections], other: Sequence[Detections], iou_threshold: float = 0.5
) -> dict[str, float]:
    """Detection-level agreement of ``other`` with ``ref`` over a set of images.

    recall: fraction of reference detections matched (same class, IoU >= threshold).
    precision: fraction of ``other``'s detections that matched one.
    mean_iou / min_iou: over matched pairs. max/mean_score_diff: |score_ref - score_other|
    over matched pairs. count_diff_mean/max: per-image |#ref - #other|.
    """
    n_ref = n_other = 0
    ious: list[float] = []
    sdiff: list[float] = []
    cdiff: list[int] = []
    for r, o in zip(ref, other, strict=True):
        pairs = match_detections(r, o, iou_threshold)
        n_ref += len(r)
        n_other += len(o)
        cdiff.append(abs(len(r) - len(o)))
        for i, j, v in pairs:
            ious.append(v)
            sdiff.append(abs(float(r.scores[i]) - float(o.scores[j])))
    matched = len(ious)
    return {
        "images": len(cdiff),
        "ref_detections": n_ref,
        "other_detections": n_other,
        "matched": matched,
        "recall": matched / n_ref if n_ref else 1.0,
        "precision": matched / n_other if n_other else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
        "min_iou": float(np.min(ious)) if ious else float("nan"),
        "max_score_diff": float(np.max(sdiff)) if sdiff else 0.0,
        "mean_score_diff": float(np.mean(sdiff)) if sdiff else 0.0,
        "count_diff_mean": float(np.mean(cdiff)) if cdiff else 0.0,
        "count_diff_max": int(np.max(cdiff)) if cdiff else 0,
    }


def agreement(
    fp32_onnx: str | Path,
    other_onnx: str | Path,
    images: str | Path | Sequence[np.ndarray] | None,
    *,
    num_images: int = 16,
    nms_params: NMSParams | None = None,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Run both models on ONNX Runtime (CPU) over the same images and compare.

    images: RGB arrays, a video, an image folder, or None (synthetic frames); ``num_images``
        evenly spaced frames are taken from a video or folder.
    Returns `agreement_of`'s metrics, plus, for raw exports, tensor-level figures over the
    anchors the FP32 model scores above ``nms_params.conf``: ``max_abs_score_diff`` (all
    anchors) and ``max_abs_box_diff_px`` / ``mean_abs_box_diff_px``; and
    ``nonfinite_outputs``, the count of inf/NaN values the converted model produced (an
    fp16 overflow shows up here first).
    """
    params = nms_params or NMSParams()
    frames = load_frames(images, num_images)
    with (
        cpu_backend(fp32_onnx, params, len(frames)) as a,
        cpu_backend(other_onnx, params, len(frames)) as b,
    ):
        batch = model_input(frames, "uint8", a.input_hw)
        raw_a, raw_b = a.outputs(batch), b.outputs(batch)
        dets_a, dets_b = a.detections(raw_a), b.detections(raw_b)
    result: dict[str, Any] = agreement_of(dets_a, dets_b, iou_threshold)
    # inf/NaN in the converted model's outputs: the tell-tale of an fp16 overflow.
    result["nonfinite_outputs"] = int(
        sum((~np.isfinite(v)).sum() for v in raw_b.values() if v.dtype.kind == "f")
    )
    if "scores" in raw_a and "scores" in raw_b:
        sa, sb = raw_a["scores"].astype(np.float32), raw_b["scores"].astype(np.float32)
        result["max_abs_score_diff"] = float(np.abs(sa - sb).max())
        live = sa.max(-1) >= params.conf  # (B, N) anchors that matter
        if live.any():
            d = np.abs(raw_a["boxes"].astype(np.float32) - raw_b["boxes"].astype(np.float32))[live]
            result["max_abs_box_diff_px"] = float(d.max())
            result["mean_abs_box_diff_px"] = float(d.mean())
    return result


__all__ = [
    "QuantizeError",
    "agreement",
    "agreement_of",
    "box_iou",
    "cpu_backend",
    "evenly_spaced",
    "load_frames",
    "match_detections",
    "model_input",
    "modelopt_available",
    "quantize_onnx",
    "read_image_folder",
    "read_video_frames",
    "synthetic_frames",
]
