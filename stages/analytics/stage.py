"""Zones and lines in the sink process: `FrameResult` in, the same frame plus its zone/line
events and live counts out, before any sink sees it.

Why the sink process and not the track stage: the tracker's output reaches the sinks there in
order per camera already, the payload (`pipeline.payloads.FrameResult`) carries the events and
counts to every sink without a change of the track → sink wire format, and the preview
(`stages.analytics.preview`) draws zones and counts where it has the results.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.config.zones import LineConfig, ZoneConfig
from pipeline.payloads import FrameResult
from stages.analytics.counting import CameraAnalytics

log = logging.getLogger("edgestream.analytics")


class AnalyticsMetrics(Protocol):
    """What `ZoneAnalytics` reports to (`pipeline.metrics.Metrics` has both)."""

    def line_crossed(self, camera: str, line: str, direction: str, class_name: str) -> None: ...

    def zone_occupancy(self, camera: str, zone: str, class_name: str, n: int) -> None: ...


@dataclass(frozen=True)
class CameraRegions:
    """The zones and lines of one camera (from its config entry)."""

    zones: tuple[ZoneConfig, ...] = ()
    lines: tuple[LineConfig, ...] = ()


class ZoneAnalytics:
    """Holds one `CameraAnalytics` per camera that has zones or lines.

    cameras: camera id -> its regions; cameras without any pass through unchanged.
    metrics: where crossings and occupancy go (Prometheus), or None.
    """

    def __init__(
        self, cameras: Mapping[str, CameraRegions], metrics: AnalyticsMetrics | None = None
    ) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()  # set_cameras may come from a control thread
        self._cameras: dict[str, CameraAnalytics] = {}
        self._regions: dict[str, CameraRegions] = {}
        self._occupancy: dict[tuple[str, str, str], int] = {}
        self.events = 0
        self.set_cameras(cameras)

    def set_cameras(self, cameras: Mapping[str, CameraRegions]) -> None:
        """Apply a new camera set (a live config change): a camera whose zones or lines
        changed starts afresh (counts from 0), a removed camera is forgotten, the others keep
        their state."""
        with self._lock:
            self._set_cameras(cameras)

    def _set_cameras(self, cameras: Mapping[str, CameraRegions]) -> None:
        for cam in list(self._cameras):
            if cameras.get(cam) != self._regions.get(cam):
                del self._cameras[cam]
                self._regions.pop(cam, None)
                for key in [k for k in self._occupancy if k[0] == cam]:
                    if self.metrics is not None:
                        self.metrics.zone_occupancy(*key, 0)
                    del self._occupancy[key]
        for cam, regions in cameras.items():
            if cam not in self._cameras and (regions.zones or regions.lines):
                self._cameras[cam] = CameraAnalytics.from_config(regions.zones, regions.lines)
                self._regions[cam] = regions

    @property
    def cameras(self) -> Mapping[str, CameraAnalytics]:
        return self._cameras

    def regions(self, camera: str) -> CameraRegions | None:
        """The zones and lines ``camera`` is counted with now (None: none)."""
        return self._regions.get(camera)

    def process(self, frame: FrameResult) -> FrameResult:
        with self._lock:
            return self._process(frame)

    def _process(self, frame: FrameResult) -> FrameResult:
        cam = self._cameras.get(frame.camera)
        if cam is None:
            return frame
        events = cam.process(
            frame.objects, frame.events, frame.capture_ts, frame.width, frame.height
        )
        self.events += len(events)
        m = self.metrics
        if m is not None:
            for e in events:
                if e.kind == "line_cross":
                    assert e.direction is not None
                    m.line_crossed(frame.camera, e.region, e.direction, e.class_name)
            self._sync_occupancy(frame.camera, cam, m)
        return dataclasses.replace(
            frame,
            analytics_events=events,
            zones={z.region.id: z.counts() for z in cam.zones},
            lines={ln.region.id: ln.counts() for ln in cam.lines},
        )

    def _sync_occupancy(self, camera: str, cam: CameraAnalytics, m: AnalyticsMetrics) -> None:
        for z in cam.zones:
            now = z.occupancy()
            for cls in {k[2] for k in self._occupancy if k[:2] == (camera, z.region.id)} | set(now):
                key = (camera, z.region.id, cls)
                if self._occupancy.get(key) != now[cls]:
                    self._occupancy[key] = now[cls]
                    m.zone_occupancy(camera, z.region.id, cls, now[cls])

    def stats(self) -> dict[str, Any]:
        return {"events": self.events, "cameras": len(self._cameras)}
