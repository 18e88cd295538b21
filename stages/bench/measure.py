"""Figures of one run, from what it published and from its own counters.

- `read_jsonl` / `read_redis`: the detections documents the run published (schema v1), as a
  consumer reads them.
- `window_stats`: over the steady window, frames published per second (in total and per
  camera), capture→publish latency percentiles (each document's ``latency_ms.publish``) and
  the median time from capture to the end of each stage (the rest of ``latency_ms``).
- `accounting`: from the stages' counters at the end (`Pipeline.stats()["cameras"]`, or the
  loop's, same shape): frames offered (decode took them in, after ``detect_fps``) = published
  + every counted drop, by ``stage/reason``; ``unaccounted`` is what neither explains (0 in a
  correct run).
- `ProcSampler`: CPU (cores) and memory of a set of processes over the window (psutil).
- `GpuSampler`: GPU utilisation and memory over the window (pynvml, else nvidia-smi; nothing
  without a GPU).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# camera, publish_ts (unix s), capture→publish latency (ms), ms from capture to each stage's end
Doc = tuple[str, float, float, dict[str, float]]


def docs_from_lines(lines: Iterable[str | bytes]) -> list[Doc]:
    out = []
    for line in lines:
        doc = json.loads(line)
        if doc.get("type") == "detections":
            stages = doc["latency_ms"]
            out.append((doc["camera"], float(doc["publish_ts"]), float(stages["publish"]), stages))
    return out


def read_jsonl(folder: Path) -> list[Doc]:
    """Every detections document in ``folder/*.jsonl``."""
    return [
        d
        for p in sorted(Path(folder).glob("*.jsonl"))
        for d in docs_from_lines(p.read_text().splitlines())
    ]


def read_redis(client: Any, keys: Iterable[str], delete: bool = False) -> list[Doc]:
    """Every detections document in the streams ``keys`` (XRANGE, 1000 at a time); ``delete``:
    then remove those keys (the bench's own, named for this run)."""
    out: list[Doc] = []
    for key in keys:
        start = "-"
        while True:
            entries = client.xrange(key, min=start, max="+", count=1000)
            if not entries:
                break
            out += docs_from_lines(fields[b"data"] for _, fields in entries)
            last = entries[-1][0].decode()
            ms, _, seq = last.partition("-")
            start = f"{ms}-{int(seq) + 1}"
            if len(entries) < 1000:
                break
        if delete:
            client.delete(key)
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    a = np.asarray(values, np.float64)
    if not a.size:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "max": round(float(a.max()), 1),
    }


def window_stats(
    docs: Iterable[Doc], cameras: Sequence[str], t0: float, t1: float
) -> dict[str, Any]:
    """Published frames/s (total, per camera) and latency percentiles of the documents
    published in ``[t0, t1)`` (unix seconds)."""
    span = max(1e-9, t1 - t0)
    per_cam = dict.fromkeys(cameras, 0)
    latency = []
    stages: dict[str, list[float]] = {}
    for cam, ts, ms, since_capture in docs:
        if t0 <= ts < t1:
            per_cam[cam] = per_cam.get(cam, 0) + 1
            latency.append(ms)
            for stage, v in since_capture.items():
                stages.setdefault(stage, []).append(float(v))
    return {
        "window_s": round(span, 2),
        "frames": len(latency),
        "fps": round(len(latency) / span, 2),
        "fps_per_camera": {k: round(v / span, 2) for k, v in per_cam.items()},
        "latency_ms": percentiles(latency),
        # median ms from capture to the end of each stage, in pipeline order: where time goes
        "stages_p50_ms": {k: round(float(np.median(v)), 1) for k, v in stages.items()},
        # and the 95th percentile of the same: where the tail comes from
        "stages_p95_ms": {k: round(float(np.percentile(v, 95)), 1) for k, v in stages.items()},
    }


def accounting(cameras: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Totals over the run from per-camera counters (``sent``, ``published``, ``dropped``
    by ``stage/reason``): offered = sent + decode's own drops (frames it took in but could
    not hand on); ``unaccounted`` = offered - published - every drop."""
    offered = published = 0
    drops: dict[str, int] = {}
    per_camera = {}
    for cam, c in cameras.items():
        dropped = c.get("dropped") or {}
        cam_offered = int(c.get("sent", 0)) + sum(
            int(n) for reason, n in dropped.items() if reason.startswith("decode/")
        )
        per_camera[cam] = {"offered": cam_offered, "published": int(c.get("published", 0))}
        offered += cam_offered
        published += int(c.get("published", 0))
        for reason, n in dropped.items():
            drops[reason] = drops.get(reason, 0) + int(n)
    return {
        "offered": offered,
        "published": published,
        "drops": dict(sorted(drops.items())),
        "unaccounted": offered - published - sum(drops.values()),
        "per_camera": per_camera,
    }


class ProcSampler:
    """CPU time and memory of the processes ``pids()`` names (``{name: pid}``, e.g. the
    supervisor's children), between `start` and `stop`."""

    def __init__(self, pids: Callable[[], Mapping[str, int]]) -> None:
        import psutil

        self._psutil = psutil
        self._pids = pids
        self._t0 = 0.0
        self._cpu0: dict[int, float] = {}
        self._role: dict[int, str] = {}

    def _cpu(self) -> dict[int, float]:
        out = {}
        self._role = {}
        for name, pid in self._pids().items():
            try:
                t = self._psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
                self._role[pid] = name.rstrip("0123456789") or name  # preprocess3: preprocess
            except self._psutil.Error:
                continue
        return out

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = self._cpu()

    def stop(self) -> dict[str, Any]:
        """``{"cpu_cores", "cpu_by_role", "rss_mb", "pss_mb" (Linux), "processes"}``: CPU
        seconds per second over the window (1.0 = one core busy), in all and by role (the
        preprocess workers together), memory summed at the end (RSS counts shared memory in
        every process that maps it; PSS shares it out)."""
        cpu1 = self._cpu()
        span = max(1e-9, time.monotonic() - self._t0)
        by_role: dict[str, float] = {}
        for pid, t in cpu1.items():
            role = self._role.get(pid, str(pid))
            by_role[role] = by_role.get(role, 0.0) + t - self._cpu0.get(pid, 0.0)
        used = sum(by_role.values())
        rss = pss = 0.0
        has_pss = True
        for pid in cpu1:
            try:
                proc = self._psutil.Process(pid)
                rss += proc.memory_info().rss
                try:
                    pss += proc.memory_full_info().pss
                except (AttributeError, self._psutil.AccessDenied):
                    has_pss = False
            except self._psutil.Error:
                continue
        out: dict[str, Any] = {
            "cpu_cores": round(used / span, 2),
            "cpu_by_role": {k: round(v / span, 2) for k, v in sorted(by_role.items())},
            "rss_mb": round(rss / 2**20, 1),
        }
        if has_pss:
            out["pss_mb"] = round(pss / 2**20, 1)
        out["processes"] = len(cpu1)
        return out


class GpuSampler:
    """GPU utilisation (%) and memory (MiB) every ``interval_s`` while running; `stop` returns
    ``{"name", "util_pct_mean", "util_pct_max", "mem_used_mb_max"}`` or None without a GPU
    (neither pynvml nor nvidia-smi answers)."""

    def __init__(self, index: int = 0, interval_s: float = 0.5) -> None:
        self.index = index
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.name: str | None = None
        self._read = self._reader()

    def _reader(self) -> Callable[[], tuple[float, float]] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            name = pynvml.nvmlDeviceGetName(handle)
            self.name = name.decode() if isinstance(name, bytes) else str(name)

            def nvml() -> tuple[float, float]:
                util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
                return float(util), float(mem)

            return nvml
        except Exception:  # no pynvml, no driver, no GPU: try nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        query = [
            "nvidia-smi",
            f"--id={self.index}",
            "--format=csv,noheader,nounits",
            "--query-gpu=utilization.gpu,memory.used,name",
        ]

        def smi() -> tuple[float, float]:
            out = subprocess.run(query, capture_output=True, text=True, timeout=5, check=True)
            util, mem, name = (s.strip() for s in out.stdout.splitlines()[0].split(",", 2))
            self.name = name
            return float(util), float(mem)

        try:
            smi()
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None
        return smi

    @property
    def available(self) -> bool:
        return self._read is not None

    def start(self) -> None:
        if self._read is None:
            return
        self._samples = []
        self._halt.clear()
        self._thread = threading.Thread(target=self._loop, name="gpu-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        assert self._read is not None
        while not self._halt.wait(self.interval_s):
            try:
                self._samples.append(self._read())
            except Exception:
                return

    def stop(self) -> dict[str, Any] | None:
        if self._thread is None:
            return None
        self._halt.set()
        self._thread.join(5.0)
        self._thread = None
        if not self._samples:
            return None
        util = [u for u, _ in self._samples]
        return {
            "name": self.name,
            "util_pct_mean": round(float(np.mean(util)), 1),
            "util_pct_max": round(float(max(util)), 1),
            "mem_used_mb_max": round(max(m for _, m in self._samples), 1),
        }
