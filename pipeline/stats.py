"""Stage processes report counters to the supervisor; the supervisor keeps the totals.

Each process has a `Reporter`: the stage code feeds it (frames published and their latency,
batch sizes, camera states) and every ``interval_s`` it puts one plain-dict snapshot of its
cumulative counters on a multiprocessing queue. The supervisor's `StatsBoard` keeps the latest
snapshot per process and carries the totals of earlier incarnations of a restarted process, so
every counter it exposes is monotonic. The board is what the supervisor itself reads: the
periodic summary line, `Pipeline.stats()` and ``GET /cameras`` (per camera), readiness, and what
a run could not write (its exit code). Prometheus is the other path, by design: each process
writes its own metric values (`pipeline.metrics`, prometheus_client's multiprocess files; the
Reporter turns the snapshot's cumulative counters into increments there), and /metrics
aggregates the files. The two read the same counters, so they agree.
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


# ------------------------------------------------------------------------------ snapshots


def _ints(value: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (value or {}).items()}


@dataclass(frozen=True)
class StageCounts:
    """A stage runner's cumulative counters (`pipeline.runner.StageCounters`), per camera;
    ``dropped`` is keyed ``camera|reason``."""

    received: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Mapping[str, Any] | None) -> StageCounts:
        v = value or {}
        return cls(*(_ints(v.get(n)) for n in ("received", "sent", "dropped", "errors")))


@dataclass(frozen=True)
class SinkCounts:
    """The sink stage's report: results not written per sink (``unwritten``: lost or still
    buffered; ``unwritten_offline``: of those, of ``realtime: false`` cameras), and each sink's
    own stats under its class name (``per_sink``; e.g. ``RedisSink``'s ``connected``)."""

    unwritten: dict[str, int] = field(default_factory=dict)
    unwritten_offline: dict[str, int] = field(default_factory=dict)
    per_sink: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def redis(self) -> dict[str, Any] | None:
        return self.per_sink.get("RedisSink")

    @classmethod
    def parse(cls, value: Mapping[str, Any] | None) -> SinkCounts:
        v = dict(value or {})
        unwritten, offline = (
            _ints(v.pop("unwritten", None)),
            _ints(v.pop("unwritten_offline", None)),
        )
        return cls(unwritten, offline, {k: s for k, s in v.items() if isinstance(s, dict)})


@dataclass(frozen=True)
class ProcSnapshot:
    """One process's report, as the supervisor reads it: every field the runtime uses, typed,
    parsed once where it arrives (`parse`); what only a stage's own readers know (analytics,
    preview...) stays in ``extra``, by the key its source gave it."""

    key: str
    pid: int
    ts: float = 0.0
    published: dict[str, int] = field(default_factory=dict)
    latency_new: dict[str, list[float]] = field(default_factory=dict)
    batch_sizes: dict[str, int] = field(default_factory=dict)
    batch_seconds: float = 0.0
    camera_up: dict[str, bool] = field(default_factory=dict)
    stage: StageCounts = field(default_factory=StageCounts)
    decode: StageCounts = field(default_factory=StageCounts)  # decode's feeder: sent, dropped
    sinks: SinkCounts = field(default_factory=SinkCounts)
    auth_refused: dict[str, int] = field(default_factory=dict)  # per edge (CURVE)
    ready: bool | None = None  # detect: the model is loaded
    control_generation: int = -1  # the last live camera change this process applied
    decode_cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stage_name(self) -> str:
        return self.key.rstrip("0123456789")

    @classmethod
    def parse(cls, snap: Mapping[str, Any]) -> ProcSnapshot:
        s = dict(snap)
        ready = s.pop("ready", None)
        return cls(
            key=str(s.pop("key", "")),
            pid=int(s.pop("pid", 0)),
            ts=float(s.pop("ts", 0.0)),
            published=_ints(s.pop("published", None)),
            latency_new={str(k): list(v) for k, v in (s.pop("latency_new", None) or {}).items()},
            batch_sizes=_ints(s.pop("batch_sizes", None)),
            batch_seconds=float(s.pop("batch_seconds", 0.0) or 0.0),
            camera_up={str(k): bool(v) for k, v in (s.pop("camera_up", None) or {}).items()},
            stage=StageCounts.parse(s.pop("stage", None)),
            decode=StageCounts.parse(s.pop("decode", None)),
            sinks=SinkCounts.parse(s.pop("sinks", None)),
            auth_refused=_ints((s.pop("transport", None) or {}).get("auth_refused")),
            ready=None if ready is None else bool(ready),
            control_generation=int(s.pop("control_generation", -1)),
            decode_cameras=dict(s.pop("decode_cameras", None) or {}),
            extra=s,
        )


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
        m, s = self.metrics, ProcSnapshot.parse(snap)
        if self.stage != "sink":  # the sink counts published frames itself
            for cam, n in s.stage.sent.items():
                m.sync_counter(m.frames_total, (cam, self.stage), n)
        for stage, counts in ((self.stage, s.stage), ("decode", s.decode)):
            if stage == "decode":
                for cam, n in counts.sent.items():
                    m.sync_counter(m.frames_total, (cam, "decode"), n)
            for key, n in counts.dropped.items():
                cam, _, reason = key.partition("|")
                m.sync_counter(m.frames_dropped_total, (cam, stage, reason), n)
        for edge, n in s.auth_refused.items():
            m.sync_counter(m.edge_auth_refused_total, (edge,), n)
        if s.sinks.redis is not None:
            m.sync_redis(s.sinks.redis)


# ------------------------------------------------------------------------------ supervisor


def _sum(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


@dataclass
class _Proc:
    pid: int
    snap: ProcSnapshot
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

    def update(self, raw: Mapping[str, Any] | ProcSnapshot) -> None:
        snap = raw if isinstance(raw, ProcSnapshot) else ProcSnapshot.parse(raw)
        proc = self.procs.get(snap.key)
        if proc is None:
            proc = self.procs[snap.key] = _Proc(snap.pid, snap)
        elif proc.pid != snap.pid:  # restarted: keep what the old one counted
            for name, values in _counter_sections(proc.snap).items():
                proc.base[name] = _sum(proc.base.get(name, {}), values)
            proc.pid = snap.pid
        proc.snap = snap
        for cam, samples in snap.latency_new.items():
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
            up.update(proc.snap.camera_up)
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
        seconds = sum(p.snap.batch_seconds for p in self.procs.values())
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


def _counter_sections(snap: ProcSnapshot) -> dict[str, dict[str, Any]]:
    """The cumulative counters of one snapshot, flattened: ``published``, ``batch_sizes``,
    ``decode.sent``, ``dropped`` keyed ``stage:camera|reason``, and the sink stage's
    ``sinks.unwritten`` / ``sinks.unwritten_offline`` per sink."""
    stage = snap.stage
    dropped = {f"{snap.stage_name}:{k}": v for k, v in stage.dropped.items()}
    dropped = _sum(dropped, {f"decode:{k}": v for k, v in snap.decode.dropped.items()})
    return {
        "published": dict(snap.published),
        "batch_sizes": dict(snap.batch_sizes),
        "stage.received": dict(stage.received),
        "stage.sent": dict(stage.sent),
        "stage.errors": dict(stage.errors),
        "dropped": dropped,
        "decode.sent": dict(snap.decode.sent),
        # a dead incarnation's buffered results are lost: carried over like the counters
        "sinks.unwritten": dict(snap.sinks.unwritten),
        "sinks.unwritten_offline": dict(snap.sinks.unwritten_offline),
    }
