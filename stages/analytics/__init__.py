"""Zones and lines: per-track enter/exit/dwell and directed line crossings, with hysteresis.

* `geometry`: anchor points, signed distances to lines and polygons (numpy);
* `counting`: the per-track state machines of one zone or line, one camera's set;
* `stage`: `ZoneAnalytics`, run in the sink process on every `FrameResult` before the sinks;
* `preview`: the annotated snapshot / MJPEG preview of a camera (off by default).

The config models are `pipeline.config.zones` (the camera entry references them).
"""

from stages.analytics.counting import CameraAnalytics, RegionCounter
from stages.analytics.stage import CameraRegions, ZoneAnalytics

__all__ = ["CameraAnalytics", "CameraRegions", "RegionCounter", "ZoneAnalytics"]
