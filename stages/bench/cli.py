"""``edgestream bench model`` and ``edgestream bench pipeline``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from stages.bench.sources import SYNTHETIC, default_workdir, parse_size

DEFAULT_CAMERAS = (1, 2, 4, 8)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="how many cameras does this box hold? (bare model, pipeline, baseline loop)",
        description="Measure on this machine: `bench model` the bare model's frames/s (the "
        "ceiling), `bench pipeline` the whole pipeline with 1, 2, 4, ... live cameras: "
        "throughput, drops, latency, CPU and memory per count, and the largest count that "
        "holds a p95 latency bound.",
    )
    bench = p.add_subparsers(dest="bench_command", required=True, metavar="WHAT")

    m = bench.add_parser(
        "model",
        help="the bare model's frames/s and ms per batch",
        description="frames/s and ms per batch of the model alone (forward "
        "pass + NMS on letterboxed frames), opened as the pipeline opens it.",
    )
    _common(m)
    m.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="batch sizes (default: 1 and batching.max_batch)",
    )
    m.add_argument("--seconds", type=float, default=3.0, help="per batch size (3)")
    m.add_argument("--json", type=Path, metavar="OUT", help="also write the rows as JSON")
    m.set_defaults(func=cmd_model)

    q = bench.add_parser(
        "pipeline",
        help="cameras held at a p95 bound, throughput, latency, CPU, memory",
        description="For each camera count, play that many live cameras through the real "
        "pipeline (real processes and sinks) and measure published frames/s, drops by reason, "
        "capture→publish p50/p95/p99, CPU and memory (GPU when there is one). Then the largest "
        "count that holds --p95-ms with every camera at >= 90 % of its detect rate, and the "
        "efficiency: the most frames/s published by a run at capacity ÷ the bare "
        "model's frames/s, measured in the same run.",
    )
    _common(q)
    q.add_argument(
        "--cameras",
        type=int,
        nargs="+",
        default=list(DEFAULT_CAMERAS),
        metavar="N",
        help="camera counts, ascending (1 2 4 8)",
    )
    q.add_argument(
        "--detect-fps",
        type=float,
        default=5.0,
        metavar="F",
        help="frames/s per camera sent to detection (5; 0: every frame)",
    )
    q.add_argument("--p95-ms", type=float, default=150.0, help="capture→publish p95 bound (150)")
    q.add_argument("--seconds", type=float, default=20.0, help="measuring window per run (20)")
    q.add_argument(
        "--min-frames",
        type=int,
        default=300,
        metavar="N",
        help="widen a run's window until its cameras offer N frames at their detect rate, "
        "so each p95 rests on enough frames (300; at most 120 s; 0: --seconds only)",
    )
    q.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds after the first published frame before measuring (5)",
    )
    q.add_argument(
        "--baseline",
        choices=("loop",),
        default=None,
        help="also run the single-process loop on the same cameras, side by side",
    )
    q.add_argument(
        "--efficiency-cameras",
        type=int,
        default=None,
        metavar="N",
        help="cameras of the efficiency run, every frame (default: the largest "
        "count; 0: no efficiency run)",
    )
    q.add_argument(
        "--bare-seconds",
        type=float,
        default=3.0,
        metavar="S",
        help="the bare model is measured for S seconds per batch size, before and "
        "after the pipeline runs (3)",
    )
    q.add_argument(
        "--startup-timeout",
        type=float,
        default=180.0,
        metavar="S",
        help="a run that published nothing after S seconds fails (180)",
    )
    q.add_argument(
        "--redis",
        metavar="URL",
        help="publish to this Redis (default: JSON lines "
        "under the work folder); the bench's streams are deleted afterwards",
    )
    q.add_argument("--json", type=Path, metavar="OUT", help="write the summary as JSON")
    q.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    q.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="write latency and throughput against cameras (needs matplotlib: "
        "pip install 'edgestream[bench]')",
    )
    q.set_defaults(func=cmd_pipeline)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="weights file or known model name (default: the demo model)")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        help="take model, batching, preprocess, decode and "
        "tracker from this YAML config (cameras and sinks are the bench's)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime", "tensorrt"),
        default=None,
        help="(auto: as `edgestream run`)",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (auto)")
    p.add_argument("--threads", type=int, default=None, help="backend CPU threads (0: default)")
    p.add_argument(
        "--instances",
        type=lambda v: v if v == "auto" else int(v),
        default=None,
        help="model.instances: copies of the model that run at once (auto)",
    )
    p.add_argument("--max-batch", type=int, default=None, help="batching.max_batch")
    p.add_argument("--max-wait-ms", type=float, default=None, help="batching.max_wait_ms")
    p.add_argument(
        "--source",
        default=SYNTHETIC,
        help="synthetic (default), a video FILE played live and looped, rtsp or rtsp:FILE "
        "(served by a local GStreamer RTSP server, a mount per camera; needs a checkout), or "
        "a URL every camera opens ({index}: the camera's number)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default="1280x720",
        help="synthetic scenes' WIDTHxHEIGHT (1280x720)",
    )
    p.add_argument(
        "--scene-seconds",
        type=float,
        default=20.0,
        help="length of each synthetic scene before it loops (20)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help=f"scenes and run outputs (default {default_workdir()})",
    )


# ----------------------------------------------------------------------------- set-up


def base_config(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """Config sections (model, batching, ...) from -c and the flags, and their base folder."""
    from pipeline.config import parse_yaml
    from stages.bench.runs import CONFIG_SECTIONS

    base: dict[str, Any] = {}
    base_dir = Path.cwd()
    if args.config is not None:
        try:
            text = args.config.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"-c {args.config}: {exc.strerror or exc}") from None
        data = parse_yaml(text, str(args.config))
        base = {k: dict(data[k]) for k in CONFIG_SECTIONS if isinstance(data.get(k), dict)}
        base_dir = args.config.resolve().parent
    model = base.setdefault("model", {})
    if args.weights is not None:
        model.pop("random_weights", None)
        model["weights"] = args.weights
    elif "weights" not in model and not model.get("random_weights"):
        from stages.demo.app import DEMO_MODEL_DIR, DEMO_TRACKER, find_demo_weights

        demo = find_demo_weights()
        if demo is None:
            raise ValueError(f"no demo model in {DEMO_MODEL_DIR}: give --weights")
        model["weights"] = str(demo)
        if demo.parent == DEMO_MODEL_DIR:
            base.setdefault("tracker", dict(DEMO_TRACKER))
    for key in ("backend", "device", "threads", "instances"):
        if getattr(args, key) is not None:
            model[key] = getattr(args, key)
    model.setdefault("device", "auto")
    batching = base.setdefault("batching", {})
    if args.max_batch is not None:
        batching["max_batch"] = args.max_batch
    if args.max_wait_ms is not None:
        batching["max_wait_ms"] = args.max_wait_ms
    return base, base_dir


def prepare(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(BenchSetup, PipelineConfig)``: the source ready, the model checked (a file that
    cannot run is refused here, nothing started), a checkpoint on the CPU swapped for its
    ONNX export as ``edgestream run`` does."""
    from pipeline.procs import cpu_onnx_config, model_info_of
    from stages.bench.runs import BenchSetup
    from stages.bench.sources import Source, resolve_source

    base, base_dir = base_config(args)
    workdir = (args.workdir or default_workdir()).expanduser()
    if args.scene_seconds <= 0:
        raise ValueError(f"--scene-seconds {args.scene_seconds:g}: must be > 0")
    # the model first (a placeholder camera, never opened): a bad file is refused before
    # any scene is written
    probe = Source("url", ("rtsp://127.0.0.1:9/probe",), None, "probe")
    setup = BenchSetup(base=base, source=probe, workdir=workdir, base_dir=base_dir)
    cfg = setup.validate(setup.config_data("probe", 1, None))
    cfg, _ = cpu_onnx_config(cfg)
    setup.model_info = model_info_of(cfg)
    m = cfg.model
    if m.weights is not None:
        setup.base["model"] = {
            **setup.base["model"],
            "weights": str(m.weights),
            "backend": m.backend,
        }
    cameras = max([*getattr(args, "cameras", [1]), getattr(args, "efficiency_cameras", 0) or 0])
    setup.source = resolve_source(
        args.source, workdir, args.size, args.scene_seconds, cameras=cameras
    )
    return setup, cfg


# ----------------------------------------------------------------------------- model


def cmd_model(args: argparse.Namespace) -> int:
    from stages.bench.model import bench_model, model_label
    from stages.bench.sources import sample_frames

    if args.seconds <= 0:
        raise ValueError(f"--seconds {args.seconds:g}: must be > 0")
    batches = sorted(set(args.batch or []))
    if batches and batches[0] < 1:
        raise ValueError(f"--batch {batches}: batch sizes must be >= 1")
    setup, cfg = prepare(args)
    try:
        frames = sample_frames(setup.source)
    finally:
        setup.source.close()
    batches = batches or sorted({1, cfg.batching.max_batch})
    rows = bench_model(cfg, frames, batches, args.seconds)
    label = model_label(cfg)
    print(
        f"bare model: {label['weights']} on {label['backend']}/{label['device']}, "
        f"frames of {setup.source.label}"
    )
    if rows and rows[0]["instances"] > 1:
        print(f"{rows[0]['instances']} instances at once, {rows[0]['threads']} thread(s) each "
              "(model.instances); ms per batch of one instance, frames/s of them all")  # fmt: skip
    print(f"{'batch':>5}  {'ms/batch':>9}  {'ms/image':>9}  {'frames/s':>9}")
    for r in rows:
        ms, per_image = r["ms_per_batch"], r["ms_per_image"]
        print(f"{r['batch']:>5}  {ms:>9.1f}  {per_image:>9.2f}  {r['fps']:>9.1f}")
    if args.json is not None:
        _write_json(args.json, {"model": label, "rows": rows})
    return 0


# ----------------------------------------------------------------------------- pipeline


def check_pipeline_args(args: argparse.Namespace) -> list[int]:
    """Refuse bad flags before anything starts; the camera counts, ascending."""
    counts = list(args.cameras)
    if any(n < 1 for n in counts) or len(set(counts)) != len(counts):
        raise ValueError(f"--cameras {' '.join(map(str, counts))}: give distinct counts >= 1")
    if max(counts) > 256:
        raise ValueError(f"--cameras {max(counts)}: at most 256")
    for flag, value, low in (
        ("--seconds", args.seconds, 0.0),
        ("--p95-ms", args.p95_ms, 0.0),
        ("--bare-seconds", args.bare_seconds, 0.0),
    ):
        if not value > low:
            raise ValueError(f"{flag} {value:g}: must be > {low:g}")
    if args.warmup < 0 or args.detect_fps < 0 or args.startup_timeout <= 0:
        raise ValueError("--warmup and --detect-fps must be >= 0, --startup-timeout > 0")
    if args.min_frames < 0:
        raise ValueError(f"--min-frames {args.min_frames}: must be >= 0")
    if args.efficiency_cameras is not None and args.efficiency_cameras < 0:
        raise ValueError(f"--efficiency-cameras {args.efficiency_cameras}: must be >= 0")
    try:
        import psutil  # noqa: F401
    except ImportError:
        from pipeline.extras import MissingExtraError

        raise MissingExtraError(
            "psutil", "edgestream bench pipeline (CPU and memory)", extra="bench"
        ) from None
    if args.plot is not None:
        if args.plot.suffix.lower() != ".png":
            raise ValueError(f"--plot {args.plot}: give a .png file name")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from pipeline.extras import MissingExtraError

            raise MissingExtraError("matplotlib", "--plot", extra="bench") from None
    if args.redis is not None:
        import redis

        try:
            redis.Redis.from_url(args.redis).ping()
        except (redis.RedisError, ValueError) as exc:
            raise ValueError(f"--redis: cannot reach it: {exc}") from None
    return sorted(counts)


def cmd_pipeline(args: argparse.Namespace) -> int:
    counts = check_pipeline_args(args)
    setup, cfg = prepare(args)
    try:
        return _bench_pipeline(args, setup, cfg, counts)
    finally:
        setup.source.close()  # the local RTSP server, if any


def _bench_pipeline(args: argparse.Namespace, setup: Any, cfg: Any, counts: list[int]) -> int:
    from tqdm import tqdm

    from stages.bench import report
    from stages.bench.model import bench_model, model_label
    from stages.bench.runs import run_edgestream, run_loop
    from stages.bench.sources import sample_frames

    detect_fps = args.detect_fps or None
    setup.detect_fps, setup.redis_url = detect_fps, args.redis
    setup.seconds, setup.warmup_s = args.seconds, args.warmup
    setup.min_frames = args.min_frames
    setup.startup_timeout_s = args.startup_timeout
    eff_cams = max(counts) if args.efficiency_cameras is None else args.efficiency_cameras
    frames = sample_frames(setup.source)
    batches = sorted({1, cfg.batching.max_batch})
    runs: list[tuple[str, int, float | None]] = []
    for n in counts:
        runs.append(("edgestream", n, detect_fps))
        if args.baseline == "loop":
            runs.append(("loop", n, detect_fps))
    bar = tqdm(
        total=len(runs) + 2 + bool(eff_cams),
        unit="run",
        dynamic_ncols=True,
        desc="edgestream bench",
    )

    def tick(text: str) -> None:
        bar.set_postfix_str(text, refresh=True)

    rows: dict[str, list[dict[str, Any]]] = {"edgestream": [], "loop": []}
    eff_row = None
    try:
        # the efficiency run between two measurements of the bare model, so that the ratio
        # compares figures taken minutes apart at most on a machine whose load may change
        bare_before = bench_model(cfg, frames, batches, args.bare_seconds, tick)
        bar.update()
        if eff_cams:
            eff_row = _safe_run(run_edgestream, setup, "edgestream", eff_cams, None, tick)
            bar.update()
        bare_after = bench_model(cfg, frames, batches, args.bare_seconds, tick)
        bar.update()
        for system, n, fps in runs:
            run = run_edgestream if system == "edgestream" else run_loop
            rows[system].append(_safe_run(run, setup, system, n, fps, tick))
            bar.update()
    finally:
        bar.close()
    rate = detect_fps or setup.source.fps
    for row in rows["edgestream"] + rows["loop"]:
        report.judge(row, args.p95_ms, rate)
    if eff_row is not None:
        report.judge(eff_row, args.p95_ms, setup.source.fps)
    bare = report.average_bare(bare_before, bare_after)
    top = report.ceiling(bare, cfg.batching.max_batch)
    held = report.cameras_held(rows["edgestream"])
    eff, eff_from, at_capacity = report.efficiency(rows["edgestream"], eff_row, top)
    summary: dict[str, Any] = {
        "cameras_held": held,
        "efficiency": eff,
        # the run it comes from, and whether its cameras offered more than it published
        "efficiency_from": None
        if eff_from is None
        else {k: eff_from.get(k) for k in ("cameras", "detect_fps", "fps", "offered_fps")},
        "efficiency_saturated": at_capacity,
        "p95_ms": args.p95_ms,
        "rate_fps": rate,
        "rate_share": report.RATE_SHARE,
        "detect_fps": detect_fps,
        "source": setup.source.label,
        "sink": "redis" if args.redis else "jsonl",
        "model": model_label(cfg),
        "machine": report.machine(),
        "date": report.now_utc(),
        "command": "edgestream " + shlex.join(sys.argv[1:]),
        "window_s": args.seconds,
        "min_frames": args.min_frames,
        "bare_model": {"before": bare_before, "after": bare_after, "mean": bare, "ceiling": top},
        "rows": rows["edgestream"],
        "efficiency_run": eff_row,
        "baseline": None,
        "held_ratio": None,
    }
    if args.baseline == "loop":
        loop_held = report.cameras_held(rows["loop"])
        summary["baseline"] = {"name": "loop", "cameras_held": loop_held, "rows": rows["loop"]}
        summary["held_ratio"] = round(held / loop_held, 2) if loop_held else None
    print(report.format_table(summary, markdown=args.markdown))
    for line in report.verdict_lines(summary):
        print(line)
    if args.json is not None:
        _write_json(args.json, summary)
        print(f"JSON: {args.json}")
    if args.plot is not None:
        report.plot(summary, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _safe_run(
    fn: Any, setup: Any, system: str, n: int, fps: float | None, tick: Any
) -> dict[str, Any]:
    """One run; a run that fails becomes a row that says why (the others still count)."""
    try:
        return dict(fn(setup, n, fps, tick))
    except RuntimeError as exc:
        from stages.bench.measure import accounting, window_stats

        row: dict[str, Any] = {"system": system, "cameras": n, "detect_fps": fps, "error": str(exc)}
        row.update(window_stats([], [], 0.0, 1.0))
        row.update(accounting({}))
        row.update({"cpu_cores": 0.0, "exit": 1})
        print(f"edgestream bench: {system} with {n} camera(s) failed: {exc}", file=sys.stderr)
        return row


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
