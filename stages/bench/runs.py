"""One camera count through edgestream (`run_edgestream`) or through the baseline loop
(`run_loop`), with the same cameras, model, tracker and sink.

Each run: start, wait for the first published frame (processes start, the model loads),
``warmup_s`` more, then measure for ``seconds`` (the window): frames published and their
latency from the published documents, CPU and memory of the run's processes, GPU when there
is one. Then stop, and account for every frame offered from the counters at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import PipelineConfig, validate_config
from stages.bench.measure import (
    Doc,
    GpuSampler,
    ProcSampler,
    accounting,
    read_jsonl,
    read_redis,
    window_stats,
)
from stages.bench.sources import Source

Tick = Callable[[str], None]
# config sections a user's YAML (--config) contributes; the bench sets the rest
CONFIG_SECTIONS = ("model", "batching", "preprocess", "decode", "tracker")


def live_config(
    name: str,
    cameras: list[dict[str, Any]],
    sinks: dict[str, Any],
    detect_fps: float | None = None,
    summary_interval_s: float = 0.0,
    log_level: str = "INFO",
    **sections: Any,
) -> dict[str, Any]:
    """The config data of a bench run of live cameras (what ``edgestream run -c`` would read):
    ``cameras`` played in real time, ``detect_fps`` per camera (None: every frame), results to
    ``sinks``, no metrics port; ``sections`` (model, batching, preprocess, tracker, ...) as
    they are. One definition for `BenchSetup` and the scripts in tests/bench."""
    return {
        **sections,
        "name": name,
        "realtime": True,
        "camera_defaults": {"detect_fps": detect_fps} if detect_fps else {},
        "cameras": cameras,
        "sinks": sinks,
        "metrics": {"port": 0},
        "logging": {"level": log_level, "summary_interval_s": summary_interval_s},
    }


MAX_WINDOW_S = 120.0
"""The longest window `BenchSetup.window_s` widens to."""


@dataclass
class BenchSetup:
    """Everything a run needs. ``base``: config sections (model, batching, ...) as data."""

    base: dict[str, Any]
    source: Source
    workdir: Path
    detect_fps: float | None = 5.0
    redis_url: str | None = None
    warmup_s: float = 5.0
    seconds: float = 20.0
    min_frames: int = 0
    startup_timeout_s: float = 180.0
    base_dir: Path = field(default_factory=Path.cwd)
    model_info: Any = None
    token: str = field(default_factory=lambda: secrets.token_hex(3))

    def window_s(self, cameras: int, detect_fps: float | None) -> float:
        """The measuring window of one run: ``seconds``, widened until the cameras offer
        ``min_frames`` frames at their detect rate (at most `MAX_WINDOW_S`). A p95 over 100
        frames (1 camera, 5 frames/s, 20 s) is the 5th-worst frame: one stall moves it."""
        rate = (detect_fps or self.source.fps or 0.0) * cameras
        if self.min_frames <= 0 or rate <= 0:
            return self.seconds
        return max(self.seconds, min(MAX_WINDOW_S, self.min_frames / rate))

    def config_data(self, system: str, cameras: int, detect_fps: float | None) -> dict[str, Any]:
        """The config of one run (what ``edgestream run -c`` would read)."""
        tag = f"b{self.token}-{system}{cameras}"
        rate = detect_fps or self.source.fps
        cams = [
            {
                "id": f"{tag}-{i + 1:02d}",
                "url": url,
                "loop": self.source.is_file,
                **({"frame_rate_hz": rate} if rate else {}),
            }
            for i, url in enumerate(self.source.camera_urls(cameras))
        ]
        if self.redis_url is not None:
            sinks: dict[str, Any] = {"redis": {"url": self.redis_url, "events_key_template": None}}
        else:
            path = self.workdir / "runs" / tag / "{camera}.jsonl"
            sinks = {"jsonl": {"path": str(path), "events": False}}
        name = tag.replace("-", "_")[:32]
        return live_config(name, cams, sinks, detect_fps, log_level="WARNING", **self.base)

    def validate(self, data: dict[str, Any]) -> PipelineConfig:
        return validate_config(data, base_dir=self.base_dir, source="edgestream bench")

    def read_docs(self, cfg: PipelineConfig) -> list[Doc]:
        if cfg.sinks.redis is not None:
            import redis

            client = redis.Redis.from_url(cfg.sinks.redis.url)
            try:
                keys = [cfg.sinks.redis.key_template.format(camera=c) for c in cfg.camera_ids]
                return read_redis(client, keys, delete=True)
            finally:
                client.close()
        assert cfg.sinks.jsonl is not None
        folder = Path(cfg.sinks.jsonl.path).parent
        docs = read_jsonl(folder)
        shutil.rmtree(folder, ignore_errors=True)  # read: the bench's own files, gone
        return docs


def _sleep_until(t: float, tick: Tick, label: str, fatal: Callable[[], str | None]) -> None:
    while (left := t - time.time()) > 0:
        problem = fatal()
        if problem:
            raise RuntimeError(problem)
        tick(f"{label}, {left:.0f} s left")
        time.sleep(min(1.0, left))


def _wait_first(
    published: Callable[[], bool],
    fatal: Callable[[], str | None],
    timeout_s: float,
    tick: Tick,
    label: str,
) -> float:
    t_start = time.monotonic()
    while not published():
        problem = fatal()
        if problem:
            raise RuntimeError(problem)
        waited = time.monotonic() - t_start
        if waited > timeout_s:
            raise RuntimeError(f"{label}: nothing published within {timeout_s:g} s of start-up")
        tick(f"{label}, starting ({waited:.0f} s)")
        time.sleep(0.2)
    return time.time()


def _row(
    system: str,
    cfg: PipelineConfig,
    docs: list[Doc],
    t0: float,
    t1: float,
    counters: dict[str, Any],
    procs: dict[str, Any],
    gpu: dict[str, Any] | None,
    detect_fps: float | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {"system": system, "cameras": len(cfg.cameras), "detect_fps": detect_fps}
    row.update(window_stats(docs, cfg.camera_ids, t0, t1))
    row.update(accounting(counters))
    row.update(procs)
    # the machine's 1-minute load average at the end of the window: other work on the box
    # (compare it with the core count) makes every figure of the row noisier
    row["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if gpu is not None:
        row["gpu"] = gpu
    return row


def run_edgestream(
    setup: BenchSetup, cameras: int, detect_fps: float | None, tick: Tick
) -> dict[str, Any]:
    """One count through the real pipeline (`pipeline.run.Pipeline`)."""
    from pipeline.run import Pipeline

    cfg = setup.validate(setup.config_data("es", cameras, detect_fps))
    label = f"edgestream, {cameras} camera(s)"
    pipe = Pipeline(cfg, log_level="WARNING", model=setup.model_info)
    procs = ProcSampler(lambda: pipe.stats()["pids"])
    gpu = GpuSampler()

    def fatal() -> str | None:
        f = pipe.supervisor.fatal
        return None if f is None else f"{label}: the pipeline failed: {f}"

    def published() -> bool:
        return any(c["published"] for c in pipe.stats()["cameras"].values())

    pipe.start()
    try:
        first = _wait_first(published, fatal, setup.startup_timeout_s, tick, label)
        t0 = first + setup.warmup_s
        _sleep_until(t0, tick, f"{label}, warm-up", fatal)
        before = pipe.stats()
        procs.start()
        gpu.start()
        t1 = t0 + setup.window_s(cameras, detect_fps)
        _sleep_until(t1, tick, f"{label}, measuring", fatal)
        usage = procs.stop()
        gpu_usage = gpu.stop()
        after = pipe.stats()
    finally:
        tick(f"{label}, stopping")
        code = pipe.stop()
    stats = pipe.stats()
    row = _row(
        "edgestream",
        cfg,
        setup.read_docs(cfg),
        t0,
        t1,
        stats["cameras"],
        usage,
        gpu_usage,
        detect_fps,
    )
    n_batches = after["batches"]["batches"] - before["batches"]["batches"]
    n_frames = after["batches"]["frames"] - before["batches"]["frames"]
    row["mean_batch"] = round(n_frames / n_batches, 2) if n_batches else None
    offered_window = (
        accounting(after["cameras"])["offered"] - accounting(before["cameras"])["offered"]
    )
    row["offered_fps"] = round(offered_window / (t1 - t0), 2)
    row["restarts"] = sum(stats["restarts"].values())
    row["exit"] = code
    return row


def run_loop(
    setup: BenchSetup, cameras: int, detect_fps: float | None, tick: Tick
) -> dict[str, Any]:
    """One count through the baseline loop (`stages.bench.loop`, its own process)."""
    data = setup.config_data("loop", cameras, detect_fps)
    cfg = setup.validate(data)
    label = f"loop, {cameras} camera(s)"
    folder = setup.workdir / "runs" / f"b{setup.token}-loop{cameras}-ctl"
    folder.mkdir(parents=True, exist_ok=True)
    conf, counters_path, errors = folder / "loop.yaml", folder / "counters.json", folder / "stderr"
    data = {**data, "model": {**data["model"], "weights": str(cfg.model.weights)}}
    conf.write_text(yaml.safe_dump(data, sort_keys=False))
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # where `stages` and `pipeline` live
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    first_ts: list[float] = []
    with errors.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stages.bench.loop", str(conf), str(counters_path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("FIRST "):
                first_ts.append(float(line.split()[1]))

    reader = threading.Thread(target=read_stdout, name="loop-stdout", daemon=True)
    reader.start()
    procs = ProcSampler(lambda: {"loop": proc.pid})
    gpu = GpuSampler()

    def fatal() -> str | None:
        if proc.poll() is None:
            return None
        tail = errors.read_text()[-2000:]
        return f"{label}: the loop exited with {proc.returncode}: {tail}"

    try:
        _wait_first(lambda: bool(first_ts), fatal, setup.startup_timeout_s, tick, label)
        t0 = time.time() + setup.warmup_s
        _sleep_until(t0, tick, f"{label}, warm-up", fatal)
        procs.start()
        gpu.start()
        t1 = t0 + setup.window_s(cameras, detect_fps)
        _sleep_until(t1, tick, f"{label}, measuring", fatal)
        usage = procs.stop()
        gpu_usage = gpu.stop()
    finally:
        tick(f"{label}, stopping")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(2.0)
    if not counters_path.is_file():
        raise RuntimeError(
            f"{label}: no counters written (exit {proc.returncode}): {errors.read_text()[-2000:]}"
        )
    import json

    counters = json.loads(counters_path.read_text())
    row = _row("loop", cfg, setup.read_docs(cfg), t0, t1, counters, usage, gpu_usage, detect_fps)
    row["exit"] = proc.returncode
    shutil.rmtree(folder, ignore_errors=True)  # kept only when the loop failed (its stderr)
    return row
