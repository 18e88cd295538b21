"""Prometheus metrics of a pipeline, usable from every process of the process tree.

Choice: prometheus_client's **multiprocess mode**. The supervisor calls
`setup_multiprocess` before it starts any child: it creates an empty folder (on ``/dev/shm``
when there is one), exports ``PROMETHEUS_MULTIPROC_DIR`` so every spawned child inherits it,
and switches its own process to file-backed values. Each process then writes its metric
values into small mmap'ed files named by its pid, with no IPC and no lock across processes;
the HTTP server (`pipeline.health`) aggregates every file at scrape time with
`MultiProcessCollector` (`multiprocess_registry`). When a child exits, the supervisor calls
`mark_process_dead(pid)`, which removes that pid's live gauges.

Why this and not children reporting to the supervisor: a stage increments a counter with a
memory write, whatever its ZeroMQ edges are doing; counters of a process that crashed survive
(its files stay), so every ``*_total`` stays monotonic across restarts without bookkeeping;
and the same metric objects work unchanged in one process (tests, ``Metrics(registry)``).
The costs: one set of files per process incarnation (a restart adds files; they are small
and the folder is removed at exit), and gauges need a ``multiprocess_mode``:
``camera_up`` and ``redis_connected`` use ``livemostrecent`` (the value last set by a live
process: a restarted decode process takes over its cameras' gauges, a dead one's disappear).

`Metrics` holds the metric families; stages call its small methods (``frames``, ``dropped``,
``camera_up``, ``batch``, ``stage_latency``, ``e2e_latency``...). `process_metrics()` is the
one instance of a stage process; tests build their own ``Metrics(CollectorRegistry())``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import multiprocess as _mp

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"

BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
"""Batch sizes: every power of two up to `BatchingConfig.max_batch`'s bound, and between."""
STAGE_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Time spent in one stage per frame (s): 0.5 ms (a descriptor hop) to 2.5 s (CPU inference)."""
E2E_LATENCY_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
)
"""Capture to publish (s): a live pipeline aims at 50-300 ms; offline runs go far above."""


class Metrics:
    """The edgestream metric families, registered on ``registry``.

    registry: where the families are registered for exposition in *this* process
        (``CollectorRegistry()`` in tests or a single-process tool). None registers nothing:
        the multiprocess mode of a stage process, whose values are exposed through the files.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        r = registry
        self.frames_total = Counter(
            "edgestream_frames_total",
            "Frames that left a stage (decode: forwarded; sink: published), per camera and stage.",
            ["camera", "stage"],
            registry=r,
        )
        self.frames_dropped_total = Counter(
            "edgestream_frames_dropped_total",
            "Frames dropped, per camera, stage and reason (detect/superseded: a newer frame of "
            "the camera replaced it before the model ran; queue_full, overwritten, shutdown, "
            "error, ...). Nothing is dropped without being counted here.",
            ["camera", "stage", "reason"],
            registry=r,
        )
        self.camera_up = Gauge(
            "edgestream_camera_up",
            "1 while the camera is streaming, 0 while connecting, stalled or backing off.",
            ["camera"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.camera_state_changes_total = Counter(
            "edgestream_camera_state_changes_total",
            "Camera state transitions, per camera and new state (connecting, streaming, "
            "stalled, backoff, stopped).",
            ["camera", "state"],
            registry=r,
        )
        self.batch_size = Histogram(
            "edgestream_batch_size",
            "Frames per inference batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.stage_latency_seconds = Histogram(
            "edgestream_stage_latency_seconds",
            "Time a frame spends in one stage (receive to send), seconds.",
            ["stage"],
            buckets=STAGE_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_latency_seconds = Histogram(
            "edgestream_e2e_latency_seconds",
            "Capture to publish latency per camera, seconds (capture_ts to the sink's write).",
            ["camera"],
            buckets=E2E_LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_published_total = Counter(
            "edgestream_redis_published_total",
            "Detection messages written to Redis streams.",
            registry=r,
        )
        self.redis_events_published_total = Counter(
            "edgestream_redis_events_published_total",
            "Track event messages written to Redis streams.",
            registry=r,
        )
        self.redis_dropped_total = Counter(
            "edgestream_redis_dropped_total",
            "Messages the Redis sink had to drop, per reason (buffer_full, rejected, shutdown).",
            ["reason"],
            registry=r,
        )
        self.redis_reconnects_total = Counter(
            "edgestream_redis_reconnects_total",
            "Reconnections of the Redis sink after an outage.",
            registry=r,
        )
        self.redis_connected = Gauge(
            "edgestream_redis_connected",
            "1 while the Redis sink is connected.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.process_restarts_total = Counter(
            "edgestream_process_restarts_total",
            "Stage processes restarted by the supervisor after they died, per stage.",
            ["stage"],
            registry=r,
        )
        self.edge_auth_refused_total = Counter(
            "edgestream_edge_auth_refused_total",
            "CURVE handshakes refused on a tcp edge (client key not authorized), per edge.",
            ["edge"],
            registry=r,
        )
        self.line_crossings_total = Counter(
            "edgestream_line_crossings_total",
            "Tracks that crossed a configured line, per camera, line, direction (in: from the "
            "line's left to its right as seen on the image; out) and class name.",
            ["camera", "line", "direction", "class"],
            registry=r,
        )
        self.zone_occupancy_gauge = Gauge(
            "edgestream_zone_occupancy",
            "Tracks inside a configured zone now, per camera, zone and class name.",
            ["camera", "zone", "class"],
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self._lock = threading.Lock()
        self._last: dict[tuple[str, ...], float] = {}

    # -- what stages call ------------------------------------------------------------------

    def frames(self, camera: str, stage: str, n: int = 1) -> None:
        """``n`` frames of ``camera`` left ``stage``."""
        if n:
            self.frames_total.labels(camera, stage).inc(n)

    def dropped(self, camera: str, stage: str, reason: str, n: int = 1) -> None:
        """``n`` frames of ``camera`` dropped in ``stage`` for ``reason``."""
        if n:
            self.frames_dropped_total.labels(camera, stage, reason).inc(n)

    def camera_state(self, camera: str, state: str) -> None:
        """The camera entered ``state`` (a `stages.decode.CameraState` value or its name)."""
        state = str(getattr(state, "value", state))
        self.camera_state_changes_total.labels(camera, state).inc()
        self.camera_up.labels(camera).set(1 if state == "streaming" else 0)

    def batch(self, size: int) -> None:
        """One inference batch of ``size`` frames ran."""
        self.batch_size.observe(size)

    def stage_latency(self, stage: str, seconds: float) -> None:
        self.stage_latency_seconds.labels(stage).observe(seconds)

    def e2e_latency(self, camera: str, seconds: float) -> None:
        """A frame of ``camera`` was published ``seconds`` after its capture."""
        self.e2e_latency_seconds.labels(camera).observe(seconds)

    def published(self, camera: str, capture_ts: float, publish_ts: float) -> None:
        """The sink published a frame: counts it and records its capture-to-publish latency."""
        self.frames(camera, "sink")
        self.e2e_latency(camera, max(0.0, publish_ts - capture_ts))

    def line_crossed(self, camera: str, line: str, direction: str, class_name: str) -> None:
        """A track of ``class_name`` crossed ``line`` of ``camera`` in ``direction``."""
        self.line_crossings_total.labels(camera, line, direction, class_name).inc()

    def zone_occupancy(self, camera: str, zone: str, class_name: str, n: int) -> None:
        """``n`` tracks of ``class_name`` are inside ``zone`` of ``camera`` now."""
        self.zone_occupancy_gauge.labels(camera, zone, class_name).set(n)

    def restart(self, stage: str) -> None:
        """The supervisor restarted a process of ``stage``."""
        self.process_restarts_total.labels(stage).inc()

    # -- cumulative sources ----------------------------------------------------------------

    def _delta(self, key: tuple[str, ...], total: float) -> float:
        """Increase of a cumulative ``total`` since the last call with ``key`` (>= 0; a total
        that went down means its source restarted, and counts from zero again)."""
        with self._lock:
            last = self._last.get(key, 0.0)
            self._last[key] = total
        return total - last if total >= last else total

    def sync_redis(self, stats: Mapping[str, Any]) -> None:
        """Apply `stages.sinks.redis.RedisSink.stats()` (cumulative) as counter increments.

        Call it periodically from the sink process; only the increase since the last call
        is added, so calling often costs nothing and nothing is counted twice.
        """
        if (d := self._delta(("redis", "published"), stats.get("published", 0))) > 0:
            self.redis_published_total.inc(d)
        events = stats.get("events_published", 0)
        if (d := self._delta(("redis", "events"), events)) > 0:
            self.redis_events_published_total.inc(d)
        for reason, total in (stats.get("dropped") or {}).items():
            if (d := self._delta(("redis", "dropped", reason), total)) > 0:
                self.redis_dropped_total.labels(reason).inc(d)
        if (d := self._delta(("redis", "reconnects"), stats.get("reconnects", 0))) > 0:
            self.redis_reconnects_total.inc(d)
        if "connected" in stats:
            self.redis_connected.set(1 if stats["connected"] else 0)

    def sync_counter(self, counter: Counter, labels: tuple[str, ...], total: float) -> None:
        """Add the increase of a cumulative ``total`` to ``counter`` (with ``labels``)."""
        d = self._delta((counter._name, *labels), total)
        if d > 0:
            (counter.labels(*labels) if labels else counter).inc(d)


# ------------------------------------------------------------------------------------------
# Multiprocess mode
# ------------------------------------------------------------------------------------------


def default_multiproc_parent() -> Path:
    """``/dev/shm`` when present (tmpfs: the mmap'ed files never touch a disk), else the
    system temporary folder."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def setup_multiprocess(
    path: str | os.PathLike[str] | None = None, name: str = "edgestream"
) -> Path:
    """Prepare multiprocess metrics for this process and every child started after it.

    Creates ``path`` (default: a fresh ``edgestream-<name>-metrics-*`` folder in
    `default_multiproc_parent`), removes stale ``*.db`` files in it, exports
    ``PROMETHEUS_MULTIPROC_DIR`` and switches this process's metric values to files.
    Call it in the supervisor before starting children and before creating `Metrics`.
    Returns the folder; `teardown_multiprocess` removes it.
    """
    if path is None:
        folder = Path(
            tempfile.mkdtemp(prefix=f"edgestream-{name}-metrics-", dir=default_multiproc_parent())
        )
    else:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
    os.environ[ENV_DIR] = str(folder)
    # prometheus_client picks the value class when it is imported; a supervisor may have
    # imported it before the folder existed, so pick again (the library's documented switch).
    values.ValueClass = values.get_value_class()
    return folder


def teardown_multiprocess(folder: str | os.PathLike[str] | None = None) -> None:
    """Remove the metrics folder and unset ``PROMETHEUS_MULTIPROC_DIR`` (supervisor exit)."""
    target = folder if folder is not None else os.environ.get(ENV_DIR)
    os.environ.pop(ENV_DIR, None)
    values.ValueClass = values.get_value_class()
    if target:
        shutil.rmtree(target, ignore_errors=True)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(ENV_DIR))


def multiprocess_registry(folder: str | os.PathLike[str] | None = None) -> CollectorRegistry:
    """A registry that aggregates every process's files in ``folder`` at scrape time (what
    the HTTP server exposes). Do not register other `Metrics` on it: they are in the files."""
    path = folder if folder is not None else os.environ.get(ENV_DIR)
    if not path:
        raise RuntimeError(f"{ENV_DIR} is not set: call setup_multiprocess() first")
    registry = CollectorRegistry()
    _mp.MultiProcessCollector(registry, path=str(path))
    return registry


def mark_process_dead(pid: int, folder: str | os.PathLike[str] | None = None) -> None:
    """A child exited: drop its live gauges (its counters and histograms stay counted)."""
    path = folder if folder is not None else os.environ.get(ENV_DIR)
    if path:
        with contextlib.suppress(OSError):
            _mp.mark_process_dead(pid, path=str(path))


_process_metrics: Metrics | None = None
_process_lock = threading.Lock()


def process_metrics() -> Metrics:
    """This process's `Metrics` (created on first use).

    In multiprocess mode nothing is registered (values go to the files); otherwise the
    families are registered on a private registry, exposed by `pipeline.health` when this
    process serves /metrics itself.
    """
    global _process_metrics
    with _process_lock:
        if _process_metrics is None:
            registry = None if multiprocess_enabled() else CollectorRegistry()
            _process_metrics = Metrics(registry)
        return _process_metrics
