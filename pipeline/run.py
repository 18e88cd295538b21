"""``edgestream run``: the whole pipeline from a YAML file or from flags, and `Pipeline` for code.

Command line::

    edgestream run -c configs/default.yaml
    edgestream run --camera cam1=rtsp://... --camera cam2=video.mp4 --arch yolo_nas_s \\
        --weights yolo_nas_s.pth [--backend auto] [--redis redis://localhost:6379/0] \\
        [--jsonl runs/out] [--realtime | --no-realtime] [--metrics-port 9752]

With ``--no-realtime`` and only file sources, ``run`` exits 0 once the last frame of every
file has been published. SIGTERM / Ctrl-C stop it (exit 0) within 10 s. A weights file that
cannot run as configured is refused before any process starts: one error line, exit 2.
Offline results are written before the run ends: a Redis outage holds the pipeline until
Redis is back. Exit 3: results of ``realtime: false`` cameras were not written (the run was
stopped during a sink outage, or the Redis sink's ``give_up_after_s`` expired); the last
summary line says how many, per sink (``not written: redis 120 (120 offline)``).

From code (a demo, a test)::

    from pipeline.run import Pipeline
    with Pipeline(cfg) as p:          # starts the process tree, supervised in a thread
        while p.running:
            print(p.stats()["cameras"])   # per camera: up, fps, published, drops, latency
            time.sleep(1)
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.config import (
    ARCH_NAMES,
    DEFAULT_METRICS_PORT,
    PipelineConfig,
    default_jsonl_path,
    load_config,
    parse_camera_arg,
    quick_config,
)
from pipeline.logs import setup_from_config, setup_logging, summary_line
from pipeline.procs import EXIT_RESULTS_LOST, cpu_onnx_config, model_info_of
from pipeline.redact import redact_url
from pipeline.sdnotify import SystemdNotifier
from pipeline.supervisor import Supervisor

log = logging.getLogger("edgestream.run")


def pipeline_stats(s: Supervisor) -> dict[str, Any]:
    """``{"cameras": {id: {...}}, "batches": {...}, "restarts": {...}, "pids": {...},
    "alive": bool, "done": bool, "unwritten": {sink: {"results", "offline"}}}``; per camera
    see `pipeline.stats.StatsBoard.cameras`, for ``unwritten`` `StatsBoard.unwritten`."""
    return {
        "unwritten": s.board.unwritten(),
        "cameras": s.board.cameras(),
        "batches": s.board.batches(),
        "restarts": {k: c.restarts for k, c in s.children.items()},
        "pids": s.pids(),
        "alive": s.alive(),
        "done": s.done.is_set(),
    }


class SummaryLogger:
    """Called on every supervisor poll: logs `summary_line` every ``interval_s`` (0: never)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = time.monotonic()

    def __call__(self, sup: Supervisor) -> None:
        if self.interval_s > 0 and time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            log.info("%s", summary_line(pipeline_stats(sup)))


class Pipeline:
    """A running pipeline for programmatic use: the supervisor, polled by a thread.

    ``stats()`` returns ``{"cameras": {id: {...}}, "batches": {...}, "restarts": {...},
    "pids": {...}, "alive": bool, "done": bool}``; see `pipeline.stats.StatsBoard.cameras`.
    """

    def __init__(self, cfg: PipelineConfig, log_level: str | None = None, **kwargs: Any) -> None:
        self.cfg = cfg
        self.supervisor = Supervisor(cfg, log_level=log_level or cfg.logging.level, **kwargs)
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self.supervisor.on_poll.append(SummaryLogger(cfg.logging.summary_interval_s))

    @property
    def running(self) -> bool:
        s = self.supervisor
        return s.started and not s.stopping and s.fatal is None and not s.done.is_set()

    @property
    def done(self) -> bool:
        """An offline run published everything."""
        return self.supervisor.done.is_set()

    def start(self) -> Pipeline:
        self.supervisor.start()
        self._thread = threading.Thread(target=self._loop, name="supervise", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._halt.wait(0.1):
            self.supervisor.poll()

    def stats(self) -> dict[str, Any]:
        return pipeline_stats(self.supervisor)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Until an offline run is done or a fatal error (True), or the timeout (False)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            if self.supervisor.done.is_set() or self.supervisor.fatal is not None:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> int:
        # stop first: children restarted by the polling thread die with it (PDEATHSIG
        # follows the thread that spawned them), so it must outlive the drain
        self.supervisor.stop()
        self._halt.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self.supervisor.fatal is not None:
            return 2
        lost = self.supervisor.board.unwritten().values()
        return EXIT_RESULTS_LOST if any(v["offline"] for v in lost) else 0

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sinks_line(cfg: PipelineConfig) -> str:
    """Where results go, for the start-up log (passwords masked)."""
    s = cfg.sinks
    parts = []
    if s.redis is not None:
        parts.append(f"Redis {redact_url(s.redis.url)}")
    if s.jsonl is not None:
        parts.append(f"JSON lines {s.jsonl.path}")
    if s.video is not None:
        parts.append(f"annotated videos in {s.video.dir}")
    return ", ".join(parts) or "none here (the sink stage runs on another host)"


def run_pipeline(
    cfg: PipelineConfig,
    default_sink: bool = False,
    config_path: Path | None = None,
    shard: Any = None,
) -> int:
    """Run until SIGTERM/SIGINT (0), the end of an offline run (0), or a fatal error (2);
    3 when results of offline cameras were not written. ``default_sink``: the results go to
    the default JSONL files because no sink was asked for (said so in the log).
    ``config_path``/``shard``: what SIGHUP and POST /reload re-read and re-apply
    (`pipeline.cameras_api`)."""
    setup_from_config(cfg, "supervisor")
    cfg, note = cpu_onnx_config(cfg)  # a checkpoint on the CPU: its cached ONNX export
    if note:
        log.info("model: %s", note)
    model = model_info_of(cfg)  # fail fast: a bad weights file stops here, nothing started
    if cfg.runs("sink"):
        where = " (the default: no --redis or --jsonl given)" if default_sink else ""
        log.info("results: %s%s", sinks_line(cfg), where)
    sup = Supervisor(cfg, log_level=cfg.logging.level, model=model)
    sup.config_path, sup.shard = config_path, shard
    sup.on_poll.append(SummaryLogger(cfg.logging.summary_interval_s))
    notifier = SystemdNotifier.from_env()  # under systemd Type=notify: READY=1, WATCHDOG=1
    if notifier is not None:
        sup.on_poll.append(notifier)
    code = sup.run()
    log.log(logging.ERROR if code else logging.INFO, "%s", final_summary(pipeline_stats(sup)))
    return code


def final_summary(stats: dict[str, Any]) -> str:
    """The summary line, plus the results each sink did not write (lost: the run is over)."""
    line = summary_line(stats)
    lost = stats.get("unwritten") or {}
    if lost:
        line += " | not written: " + ", ".join(
            f"{name} {v['results']}" + (f" ({v['offline']} offline)" if v["offline"] else "")
            for name, v in lost.items()
        )
    return line


# ------------------------------------------------------------------------------------ CLI


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the streaming pipeline (cameras → detect → track → sinks)",
        description="Run the multi-process pipeline from a YAML config (-c) or from flags. "
        f"With neither --redis nor --jsonl, results go to {default_jsonl_path('NAME')} "
        "(NAME: --name; the start-up log says where results go). Flags set per run what the "
        "config sets for every camera; a config file (-c) takes no such flags.",
    )
    p.add_argument("-c", "--config", type=Path, help="YAML config (see `edgestream config`)")
    p.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="ID=URL",
        help="a camera (repeatable): rtsp://, http(s)://, a video file, /dev/videoN",
    )
    p.add_argument(
        "--arch",
        choices=ARCH_NAMES,
        help="network (default: from the weights file); needed with --random-weights",
    )
    p.add_argument(
        "--weights", type=Path, help="weights file (.pth/.pt/.safetensors/.onnx/.engine)"
    )
    p.add_argument("--random-weights", action="store_true", help="seeded random model (a demo)")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"),
                   default="auto", help="auto: by the weights' suffix; a .pth on the CPU runs "
                   "as its cached ONNX export on ONNX Runtime (said in the log)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--conf",
        type=float,
        metavar="SCORE",
        help="score threshold 0..1 (model.conf_threshold; default 0.25)",
    )
    p.add_argument(
        "--detect-fps",
        type=float,
        metavar="FPS",
        help="detect on at most FPS frames/s per camera (camera_defaults.detect_fps; "
        "default: every frame)",
    )
    p.add_argument(
        "--classes",
        type=_class_list,
        metavar="NAMES",
        help="publish only these classes, comma-separated names or ids, e.g. "
        "person,car (camera_defaults.classes; default: all)",
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        help="publish to Redis Streams at this URL (redis://, rediss:// or unix://)",
    )
    p.add_argument("--jsonl", type=Path, metavar="DIR", help="write DIR/<camera>.jsonl")
    p.add_argument(
        "--video-out",
        type=Path,
        metavar="DIR",
        help="also write an annotated video per camera to DIR (sinks.video.dir)",
    )
    p.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=True,
                   help="live policy: drop oldest when behind (default); --no-realtime: "
                   "block and lose nothing, exit when every file was processed")  # fmt: skip
    p.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help=f"/metrics /healthz /readyz port (default {DEFAULT_METRICS_PORT}; 0: off); "
        "the config key is metrics.port",
    )
    p.add_argument("--name", default="edgestream", help="pipeline name (shm, sockets, metrics)")
    p.add_argument("--shard", metavar="K/N", help="run only the cameras replica K of N owns "
                   "(rendezvous hashing; default: $EDGESTREAM_SHARD_INDEX/_COUNT or the pod "
                   "name's ordinal, else every camera); `edgestream shard` lists them")  # fmt: skip
    p.set_defaults(func=cmd_run)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    if args.config is not None:
        given = [f"--{k.replace('_', '-')}" for k in _PER_RUN if getattr(args, k) is not None]
        if args.camera or args.weights or args.random_weights or given:
            raise ValueError(
                "give either -c CONFIG or --camera/--weights flags, not both"
                + (f" ({', '.join(given)} belong in the config file)" if given else "")
            )
        return load_config(args.config)
    if not args.camera:
        raise ValueError("give -c CONFIG, or at least one --camera ID=URL")
    cameras = dict(parse_camera_arg(c) for c in args.camera)
    return quick_config(
        cameras,
        weights=args.weights,
        arch=args.arch,
        backend=args.backend,
        redis_url=args.redis,
        realtime=args.realtime,
        metrics_port=args.metrics_port,
        random_weights=args.random_weights,
        jsonl_path=None if args.jsonl is None else args.jsonl / "{camera}.jsonl",
        device=args.device,
        name=args.name,
        detect_fps=args.detect_fps,
        conf=args.conf,
        classes=args.classes,
        video_dir=args.video_out,
    )


_PER_RUN = ("arch", "conf", "detect_fps", "classes", "redis", "jsonl", "video_out")


def _class_list(text: str) -> list[int | str]:
    """``--classes person,car,2`` -> ``["person", "car", 2]``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give class names or ids, comma-separated")
    return [int(t) if t.isdigit() else t for t in items]


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.shard import apply_shard, run_idle, shard_from

    cfg = config_from_args(args)
    log_format = getattr(args, "log_format", None)  # edgestream --log-format (flags, no YAML)
    if args.config is None and log_format is not None and log_format != cfg.logging.format:
        cfg = cfg.model_copy(
            update={"logging": cfg.logging.model_copy(update={"format": log_format})}
        )
    shard = shard_from(getattr(args, "shard", None))
    if shard is not None:
        mine = apply_shard(cfg, shard)
        if not mine.cameras:
            return run_idle(mine, shard, len(cfg.cameras))
        log.info("shard %s: %d of %d camera(s): %s", shard, len(mine.cameras),
                 len(cfg.cameras), ", ".join(mine.camera_ids))  # fmt: skip
        cfg = mine
    default_sink = args.config is None and args.redis is None and args.jsonl is None
    return run_pipeline(cfg, default_sink=default_sink, config_path=args.config, shard=shard)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.run run ...`` (the same as ``edgestream run ...``)."""
    import sys

    from pipeline.config import ConfigError

    parser = argparse.ArgumentParser(prog="edgestream")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    setup_logging("INFO", "text", process_name=args.command)
    try:
        return int(args.func(args))
    except (ConfigError, ValueError, OSError) as e:
        print(f"edgestream run: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
