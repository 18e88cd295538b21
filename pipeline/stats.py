"""Stage processes report counters to the supervisor; the supervisor keeps the totals.

Each process has a `Reporter`: the stage code feeds it (frames published and their latency,
batch sizes, camera states) and every ``interval_s`` it puts one plain-dict snapshot of its
cumulative counters on a multiprocessing queue. The supervisor's `StatsBoard` keeps the latest
snapshot per process and carries the totals of earlier incarnations of a restarted process, so
every counter it exposes is monotonic. The board serves the periodic summary line,
`Pipeline.stats()` (per camera) and the Prometheus metrics (deltas applied by the supervisor),
so /metrics is served by one process and no multiprocess metric files are needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger("edgestream.stats")

LATENCY_SAMPLES = 512  # per camera, per snapshot


def _plain(value: Any) -> Any:
    """Counters/dataclasses → plain dicts with string keys (tuple keys joined by '|')."""
    if isinstance(value, Mapping):
        return {("|".join(map(str, k)) if isinstance(k, tuple) else str(k)): _plain(v)
                for k, v in value.items()}  # fmt: skip
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


STAGE_ORDER = ("decode", "preprocess", "detect", "track")


class Reporter:
    """The child side: collects and periodically sends a snapshot (never blocks the stage).

    It also feeds this process's Prometheus metrics (`pipeline.metrics`, multiprocess files):
    published frames and their capture-to-publish and per-stage latencies, batch sizes, camera
    states as they happen; the stage's cumulative counters (frames sent and dropped per camera)
    as increments on every snapshot.
    """

    def __init__(self, key: str, q: Any, interval_s: float = 1.0, metrics: Any = None) -> None:
        self.key = key
        self.stage = key.rstrip("0123456789")
        self.q = q
        self.metrics = metrics
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._sources: list[Callable[[], dict[str, Any]]] = []
        self._last = 0.0
        self.published: Counter[str] = Counter()
        self._new_latency: dict[str, list[float]] = {}
        self.batch_sizes: Counter[int] = Counter()
        self.batch_seconds = 0.0
        self.camera_up: dict[str, bool] = {}

    def source(self, fn: Callable[[], dict[str, Any]]) -> None:
        self._sources.append(fn)

    # --------------------------------------------------------------- fed by the stage
    def published_frame(self, camera: str, latency_s: float, stage_ts: dict[str, float]) -> None:
        with self._lock:
            self.published[camera] += 1
            self._new_latency.setdefault(camera, []).append(latency_s)
        m = self.metrics
        if m is not None:
            m.frames(camera, "sink")
            m.e2e_latency(camera, max(0.0, latency_s))
            now = time.time()
            seen = [s for s in STAGE_ORDER if s in stage_ts]
            stamps = [*(stage_ts[s] for s in seen), now]
            names = [*seen[1:], "sink"]
            for name, t0, t1 in zip(names, stamps, stamps[1:], strict=False):
                m.stage_latency(name, max(0.0, t1 - t0))

    def batch(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batch_sizes[size] += 1
            self.batch_seconds += seconds
        if self.metrics is not None:
            self.metrics.batch(size)

    def camera_state(self, camera: str, state: Any, reason: str) -> None:
        with self._lock:
            self.camera_up[camera] = getattr(state, "value", state) == "streaming"
        if self.metrics is not None:
            self.metrics.camera_state(camera, state)
        self.maybe_send(force=True)

    # --------------------------------------------------------------- sending
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            new_latency, self._new_latency = self._new_latency, {}
            snap: dict[str, Any] = {
                "key": self.key,
                "pid": os.getpid(),
                "ts": time.time(),
                "published": dict(self.published),
                "latency_new": new_latency,
                "batch_sizes": dict(self.batch_sizes),
                "batch_seconds": self.batch_seconds,
                "camera_up": dict(self.camera_up),
            }
        for fn in self._sources:
            try:
                snap.update(_plain(fn()))
            except Exception:
                log.debug("stats source failed", exc_info=True)
        return snap

    def maybe_send(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        snap = self.snapshot()
        if self.metrics is not None:
            try:
                self._sync_metrics(snap)
            except Exception:
                log.debug("metrics sync failed", exc_info=True)
        # best effort: the supervisor may be gone or slow
        with contextlib.suppress(queue.Full, ValueError, OSError, AssertionError):
            self.q.put_nowait(snap)

    def close(self) -> None:
        self.maybe_send(force=True)

    def _sync_metrics(self, snap: dict[str, Any]) -> None:
        """Cumulative counters of the snapshot → Prometheus increments."""
        m = self.metrics
        stage = snap.get("stage") or {}
        if self.stage != "sink":  # the sink counts published frames itself
            for cam, n in (stage.get("sent") or {}).items():
                m.sync_counter(m.frames_total, (cam, self.stage), n)
        for key, n in (stage.get("dropped") or {}).items():
            cam, _, reason = key.partition("|")
            m.sync_counter(m.frames_dropped_total, (cam, self.stage, reason), n)
        decode = snap.get("decode") or {}
        for cam, n in (decode.get("sent") or {}).items():
            m.sync_counter(m.frames_total, (cam, "decode"), n)
        for key, n in (decode.get("dropped") or {}).items():
            cam, _, reason = key.partition("|")
            m.sync_counter(m.frames_dropped_total, (cam, "decode", reason), n)
        for edge, n in ((snap.get("transport") or {}).get("auth_refused") or {}).items():
            m.sync_counter(m.edge_auth_refused_total, (edge,), n)
        sinks = snap.get("sinks") or {}
        if isinstance(sinks.get("RedisSink"), dict):
            m.sync_redis(sinks["RedisSink"])


# ------------------------------------------------------------------------------ supervisor


def _sum(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


@dataclass
class _Proc:
    pid: int
    snap: dict[str, Any]
    base: dict[str, dict[str, Any]] = field(default_factory=dict)  # earlier incarnations


_COUNTERS = ("published", "batch_sizes")
_STAGE_COUNTERS = ("received", "sent", "dropped", "errors")


class StatsBoard:
    """The supervisor side: latest snapshot per process, monotonic totals, per-camera view."""

    def __init__(self) -> None:
        self.procs: dict[str, _Proc] = {}
        self._latency: dict[str, deque[float]] = {}
        self._published_hist: deque[tuple[float, dict[str, int]]] = deque(maxlen=32)
        self.on_latency: Callable[[str, list[float]], None] | None = None

    def drain(self, q: Any) -> int:
        n = 0
        while True:
            try:
                snap = q.get_nowait()
            except (queue.Empty, OSError, ValueError, EOFError):
                return n
            self.update(snap)
            n += 1

    def update(self, snap: dict[str, Any]) -> None:
        key = snap["key"]
        proc = self.procs.get(key)
        if proc is None:
            proc = self.procs[key] = _Proc(snap["pid"], snap)
        elif proc.pid != snap["pid"]:  # restarted: keep what the old one counted
            for name, values in _counter_sections(proc.snap).items():
                proc.base[name] = _sum(proc.base.get(name, {}), values)
            proc.pid = snap["pid"]
        proc.snap = snap
        for cam, samples in (snap.get("latency_new") or {}).items():
            self._latency.setdefault(cam, deque(maxlen=LATENCY_SAMPLES * 4)).extend(samples)
            if self.on_latency is not None:
                self.on_latency(cam, samples)
        now = time.monotonic()
        if not self._published_hist or now - self._published_hist[-1][0] >= 0.5:
            self._published_hist.append((now, dict(self.total("published"))))

    def total(self, section: str) -> dict[str, Any]:
        """A counter section summed over processes and their earlier incarnations."""
        out: dict[str, Any] = {}
        for proc in self.procs.values():
            current = _counter_sections(proc.snap).get(section, {})
            out = _sum(out, _sum(proc.base.get(section, {}), current))
        return out

    def cameras(self) -> dict[str, dict[str, Any]]:
        """Per camera: up, frames sent by decode, published, fps (last ~10 s), drops by
        ``stage/reason``, and capture-to-publish latency p50/p99 (ms) over recent frames."""
        sent = self.total("decode.sent")
        published = self.total("published")
        dropped: dict[str, dict[str, int]] = {}
        for key, n in self.total("dropped").items():
            stage, _, rest = key.partition(":")
            cam, _, reason = rest.partition("|")
            dropped.setdefault(cam, {})[f"{stage}/{reason}"] = (
                dropped.get(cam, {}).get(f"{stage}/{reason}", 0) + n
            )
        up: dict[str, bool] = {}
        for proc in self.procs.values():
            up.update(proc.snap.get("camera_up") or {})
        fps = self._fps()
        cams = set(sent) | set(published) | set(up) | set(dropped)
        out: dict[str, dict[str, Any]] = {}
        for cam in sorted(cams):
            lat = np.asarray(self._latency.get(cam, ()), dtype=np.float64) * 1e3
            out[cam] = {
                "up": up.get(cam, False),
                "sent": int(sent.get(cam, 0)),
                "published": int(published.get(cam, 0)),
                "fps": round(fps.get(cam, 0.0), 2),
                "dropped": dropped.get(cam, {}),
                "dropped_total": sum(dropped.get(cam, {}).values()),
                "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
                "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            }
        return out

    def unwritten(self) -> dict[str, dict[str, int]]:
        """Per sink with any: results it did not write, ``{"results": n, "offline": m}``
        (``offline``: of ``realtime: false`` cameras). While the sink runs this includes what
        it still buffers; once it ended (the run is over, or a crashed incarnation), all of
        it is lost."""
        total = self.total("sinks.unwritten")
        offline = self.total("sinks.unwritten_offline")
        return {
            name: {"results": int(n), "offline": int(offline.get(name, 0))}
            for name, n in sorted(total.items())
            if n
        }

    def batches(self) -> dict[str, float]:
        sizes = self.total("batch_sizes")
        n = sum(sizes.values())
        frames = sum(int(k) * v for k, v in sizes.items())
        seconds = sum(float(p.snap.get("batch_seconds") or 0.0) for p in self.procs.values())
        return {
            "batches": n,
            "frames": frames,
            "mean_size": round(frames / n, 2) if n else 0.0,
            "mean_ms": round(1e3 * seconds / n, 1) if n else 0.0,  # gather + model + mapping
        }

    def _fps(self) -> dict[str, float]:
        if len(self._published_hist) < 2:
            return {}
        t1, last = self._published_hist[-1]
        t0, first = next(
            ((t, c) for t, c in self._published_hist if t1 - t <= 10.0), self._published_hist[0]
        )
        if t1 - t0 < 1.0:
            return {}
        return {cam: (n - first.get(cam, 0)) / (t1 - t0) for cam, n in last.items()}


def _counter_sections(snap: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The cumulative counters of one snapshot, flattened: ``published``, ``batch_sizes``,
    ``decode.sent``, ``dropped`` keyed ``stage:camera|reason``, and the sink stage's
    ``sinks.unwritten`` / ``sinks.unwritten_offline`` per sink."""
    out: dict[str, dict[str, Any]] = {}
    for name in _COUNTERS:
        out[name] = dict(snap.get(name) or {})
    stage_name = str(snap.get("key", "")).rstrip("0123456789")
    stage = snap.get("stage") or {}
    for name in _STAGE_COUNTERS:
        values = dict(stage.get(name) or {})
        if name == "dropped":
            values = {f"{stage_name}:{k}": v for k, v in values.items()}
        out[f"stage.{name}" if name != "dropped" else "dropped"] = values
    decode = snap.get("decode") or {}
    out["decode.sent"] = dict(decode.get("sent") or {})
    if decode.get("dropped"):
        out["dropped"] = _sum(
            out.get("dropped", {}), {f"decode:{k}": v for k, v in decode["dropped"].items()}
        )
    sinks = snap.get("sinks") or {}  # a dead incarnation's buffered results are lost: carried
    out["sinks.unwritten"] = dict(sinks.get("unwritten") or {})
    out["sinks.unwritten_offline"] = dict(sinks.get("unwritten_offline") or {})
    return out
