"""The two Prometheus families of zones and lines, fed by `ZoneAnalytics` through `Metrics`."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.config.zones import LineConfig, ZoneConfig
from pipeline.metrics import Metrics
from pipeline.payloads import FrameResult, TrackedObject
from stages.analytics import CameraRegions, ZoneAnalytics

T0 = 1_750_000_000.0


def test_crossings_and_occupancy_reach_the_exposition() -> None:
    registry = CollectorRegistry()
    analytics = ZoneAnalytics(
        {
            "gate": CameraRegions(
                zones=(
                    ZoneConfig(id="right", points=[(300, 0), (640, 0), (640, 480), (300, 480)]),
                ),
                lines=(LineConfig(id="door", points=[(300, 480), (300, 0)]),),
            )
        },
        metrics=Metrics(registry),
    )
    # a person walks right across the door, a car walks right then back left
    for i, x in enumerate(np.linspace(200, 420, 45)):
        objects = [
            TrackedObject(1, 0, "person", 0.9, (x - 10, 100.0, x + 10, 160.0)),
            TrackedObject(2, 2, "car", 0.9, (x - 30, 300.0, x + 30, 340.0)),
        ]
        analytics.process(FrameResult("gate", i, T0 + i / 25, 640, 480, objects))
    for i, x in enumerate(np.linspace(420, 200, 45)):
        car = TrackedObject(2, 2, "car", 0.9, (x - 30, 300.0, x + 30, 340.0))
        analytics.process(FrameResult("gate", 45 + i, T0 + (45 + i) / 25, 640, 480, [car]))
    text = generate_latest(registry).decode()
    crossings = (
        'edgestream_line_crossings_total{camera="gate",class="%s",direction="%s",line="door"}'
    )
    assert crossings % ("person", "in") + " 1.0" in text
    assert crossings % ("car", "in") + " 1.0" in text
    assert crossings % ("car", "out") + " 1.0" in text
    assert crossings % ("person", "out") not in text
    # the person is still in the zone (not seen since, never removed); the car left it
    assert 'edgestream_zone_occupancy{camera="gate",class="person",zone="right"} 1.0' in text
    assert 'edgestream_zone_occupancy{camera="gate",class="car",zone="right"} 0.0' in text
