"""`edgestream detect | export | quantize | build-engine`: the detection commands.

Heavy imports (torch, onnxruntime, TensorRT, ModelOpt) happen inside each command, so
`edgestream --help` and the other commands start quickly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.models_registry import weights_arg

log = logging.getLogger("edgestream.detect")

ARCH_CHOICES = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l", "yolo_nas_n")


def _add_nms_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("postprocessing (defaults: the reference predict())")
    g.add_argument("--conf", type=float, default=0.25, help="score threshold (0..1)")
    g.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (0..1)")
    g.add_argument("--top-k", type=int, default=1024, help="candidates kept before NMS")
    g.add_argument("--max-det", type=int, default=300, help="detections kept per image")
    g.add_argument(
        "--single-label",
        action="store_true",
        help="one class per box (the best one) instead of every class above --conf (the "
        "reference default, kept here for parity; `edgestream run` defaults to one class per "
        "box: model.multi_label: false)",
    )


def _nms_params(args: argparse.Namespace) -> Any:
    from stages.detect.types import NMSParams

    for name in ("conf", "iou"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise SystemExit(f"error: --{name} must be within 0..1, got {value}")
    if args.top_k < 1 or args.max_det < 1:
        raise SystemExit("error: --top-k and --max-det must be at least 1")
    return NMSParams(
        conf=args.conf,
        iou=args.iou,
        multi_label=not args.single_label,
        top_k=args.top_k,
        max_det=args.max_det,
    )


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "detect",
        help="detect objects in an image, a folder of images or a video",
        description="Run YOLO-NAS on SOURCE and print a per-frame summary; optionally write "
        "all detections as JSON (source-image pixels) and an annotated image or video.",
    )
    p.add_argument("source", type=Path, help="image file, folder of images, or video file")
    p.add_argument("--arch", choices=ARCH_CHOICES, help="network (inferred from weights if absent)")
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument(
        "--weights",
        type=weights_arg,
        help="super-gradients checkpoint, state_dict (.pt/.pth), .safetensors, ONNX or engine, "
        "or a model name from `edgestream models`",
    )
    w.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights: exercises the whole path, boxes are meaningless",
    )
    p.add_argument("--num-classes", type=int, help="class count (inferred from weights)")
    p.add_argument(
        "--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"), default="auto"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (torch backend)")
    p.add_argument("--half", action="store_true", help="FP16 on CUDA (torch backend)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    p.add_argument("--batch", type=int, default=4, help="images per inference call")
    p.add_argument("--json", type=Path, help="write all detections here as a JSON array")
    p.add_argument("--save", type=Path, help="annotated output: .jpg/.png image or .mp4 video")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    _add_nms_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "export",
        help="export YOLO-NAS weights to ONNX",
        description="Write an ONNX model: raw outputs (--nms none), NMS with standard ONNX ops "
        "(--nms onnx, runs in ONNX Runtime) or the EfficientNMS_TRT plugin (--nms tensorrt).",
    )
    p.add_argument("--arch", choices=ARCH_CHOICES, help="network (inferred from weights if absent)")
    p.add_argument("--weights", type=weights_arg, required=True)
    p.add_argument("--num-classes", type=int)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--nms", choices=("none", "onnx", "tensorrt"), default="none")
    p.add_argument("--input", dest="input_dtype", choices=("float", "uint8"), default="float")
    p.add_argument("--dynamic-batch", action="store_true", help="batch dimension left free")
    p.add_argument("--batch", type=int, default=1, help="fixed batch size (no --dynamic-batch)")
    p.add_argument("--opset", type=int, default=17)
    _add_nms_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "quantize",
        help="make an FP16 or INT8 ONNX with NVIDIA ModelOpt (for TensorRT)",
        description="FP16: ModelOpt AutoCast mixed precision. INT8: Q/DQ nodes from ModelOpt "
        "post-training quantization calibrated on real frames. Needs edgestream[quant].",
    )
    p.add_argument("onnx", type=Path, help="FP32 ONNX from `edgestream export`")
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--precision", choices=("fp16", "int8"), required=True)
    p.add_argument("--calib", type=Path, help="video file or folder of images (int8)")
    p.add_argument(
        "--num-calib", type=int, help="calibration frames (default: 32 for int8, 4 for fp16)"
    )
    p.add_argument("--method", choices=("entropy", "max"), default="entropy", help="int8 calib")
    p.add_argument(
        "--high-precision",
        choices=("fp16", "fp32"),
        default="fp16",
        help="int8: precision of the layers left unquantized",
    )
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser(
        "quantize-check",
        help="detection agreement of an FP16/INT8 ONNX with its FP32 original (ONNX Runtime)",
    )
    p.add_argument("fp32_onnx", type=Path)
    p.add_argument("other_onnx", type=Path)
    p.add_argument("--images", type=Path, help="video or image folder (default: synthetic)")
    p.add_argument("--num-images", type=int, default=16)
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (0..1)")
    p.set_defaults(func=cmd_quantize_check)

    p = sub.add_parser(
        "build-engine",
        help="build (or reuse from cache) a TensorRT engine from ONNX",
        description="Engines are cached keyed by GPU, TensorRT version, ONNX hash, precision "
        "and batch range, and rebuilt when any differs.",
    )
    p.add_argument("onnx", type=Path)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--opt-batch", type=int, help="batch the profile optimises for (default max)")
    p.add_argument("--workspace-mb", type=int, default=2048)
    p.add_argument("--cache-dir", type=Path, default=Path("~/.cache/edgestream/engines"))
    p.set_defaults(func=cmd_build_engine)


def _open_backend(args: argparse.Namespace) -> Any:
    from stages.detect.backends import open_backend

    nms = _nms_params(args)
    if args.random_weights:
        import torch

        from stages.detect.backends.torch_backend import TorchBackend
        from stages.detect.nn.yolo_nas import ARCHS

        log.warning("--random-weights: seeded random network, detections are meaningless")
        torch.manual_seed(0)
        model = ARCHS[args.arch or "yolo_nas_s"](num_classes=args.num_classes or 80)
        return TorchBackend(
            model, device=args.device, half=args.half, max_batch=args.batch, nms_params=nms
        )
    return open_backend(
        args.backend,
        args.weights,
        arch=args.arch,
        num_classes=args.num_classes,
        device=args.device,
        max_batch=args.batch,
        nms_params=nms,
        threads=args.threads,
        half=args.half,
    )


def cmd_detect(args: argparse.Namespace) -> int:
    from stages.detect.annotate import AnnotatedWriter, draw
    from stages.detect.detector import Detector
    from stages.detect.sources import iter_frames

    if args.batch < 1:
        raise SystemExit("error: --batch must be at least 1")
    frames_iter = iter_frames(args.source)  # validates the source before loading a model
    first = next(frames_iter)
    for out_path in (args.json, args.save):
        if out_path is not None:
            out_path.parent.mkdir(parents=True, exist_ok=True)
    detector = Detector(_open_backend(args))
    names = detector.class_names
    records: list[dict[str, Any]] = []
    writer = AnnotatedWriter(args.save, fps=first.fps) if args.save else None
    n_frames = n_dets = 0
    t0 = time.perf_counter()

    def flush(pending: list[Any]) -> None:
        nonlocal n_frames, n_dets
        for frame, det in zip(pending, detector.detect([f.rgb for f in pending]), strict=True):
            n_frames += 1
            n_dets += len(det)
            for box, score, cls in zip(det.boxes, det.scores, det.class_ids, strict=True):
                x1, y1, x2, y2 = (float(v) for v in box)
                records.append(
                    {
                        "frame": frame.index,
                        "source": frame.name,
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                        "score": float(score),
                        "class_id": int(cls),
                        "class_name": names[int(cls)],
                    }
                )
            if writer is not None:
                writer.write(draw(frame.rgb, det, names))
            if not args.json:
                counts: dict[str, int] = {}
                for c in det.class_ids:
                    counts[names[int(c)]] = counts.get(names[int(c)], 0) + 1
                summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing"
                print(f"{frame.name} #{frame.index}: {summary}")

    frames: Iterator[Any] = itertools.chain([first], frames_iter)
    if args.max_frames:
        frames = itertools.islice(frames, args.max_frames)
    pending: list[Any] = []
    try:
        for frame in frames:
            pending.append(frame)
            if len(pending) == args.batch:
                flush(pending)
                pending = []
        if pending:
            flush(pending)
    finally:
        if writer is not None:
            writer.close()
        detector.close()
    dt = time.perf_counter() - t0
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    print(
        f"{n_frames} frames, {n_dets} detections, {dt:.1f} s ({n_frames / max(dt, 1e-9):.1f} fps)"
        + (f"; detections → {args.json}" if args.json else "")
        + (f"; annotated → {args.save}" if args.save else ""),
        file=sys.stderr,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stages.detect.export import export_onnx
    from stages.detect.weights import load_model

    model, info = load_model(args.weights, arch=args.arch, num_classes=args.num_classes)
    path = export_onnx(
        model,
        args.output,
        nms=args.nms,
        input_dtype=args.input_dtype,
        dynamic_batch=args.dynamic_batch,
        batch_size=args.batch,
        opset=args.opset,
        nms_params=_nms_params(args),
        class_names=info.class_names or None,
        input_hw=info.input_hw,
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from stages.detect.quantize import quantize_onnx

    if args.precision == "int8" and args.calib is None:
        raise SystemExit("error: --precision int8 needs --calib VIDEO_OR_IMAGE_FOLDER")
    path = quantize_onnx(
        args.onnx,
        args.output,
        args.precision,
        calib=args.calib,
        num_calib=args.num_calib,
        calibration_method=args.method,
        high_precision_dtype=args.high_precision,
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_quantize_check(args: argparse.Namespace) -> int:
    from stages.detect.quantize import agreement
    from stages.detect.types import NMSParams

    result = agreement(
        args.fp32_onnx,
        args.other_onnx,
        args.images,
        num_images=args.num_images,
        nms_params=NMSParams(conf=args.conf),
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from stages.detect.engine_cache import build_engine

    path = build_engine(
        args.onnx,
        precision=args.precision,
        max_batch=args.max_batch,
        opt_batch=args.opt_batch or args.max_batch,
        workspace_mb=args.workspace_mb,
        cache_dir=args.cache_dir.expanduser(),
    )
    print(f"engine: {path}", file=sys.stderr)
    return 0
