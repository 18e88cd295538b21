"""Issue 13's overload bound, measured: live cameras asking far more than the model can do
still get results at the model's capacity, shared fairly, with bounded latency, and every
frame is either published or counted as dropped. The figures come from
``tests/bench/bench_overload.py`` (which prints them all; run it by hand for longer windows)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import PIPELINE_TIMEOUT_S, VIDEO

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_overload import measure

pytestmark = pytest.mark.timeout(PIPELINE_TIMEOUT_S)


@pytest.mark.slow
def test_overload_publishes_at_model_capacity_fairly_and_accounts_for_every_frame(
    shared_data: Path,
) -> None:
    """YOLO-NAS S (seeded weights) on ONNX Runtime, 2 live cameras at detect_fps 10 (the CPU
    does ~3-10 images/s): published >= 0.7 x the bare model's frames/s measured in the same
    run, cameras within 30 % of each other, p95 capture->publish <= 3 x the bare model's ms
    per image + 300 ms, received = published + every counted drop, no queue_full drop ahead
    of detect, exit 0."""
    figures, bad = measure(shared_data / "media" / VIDEO, cameras=2, detect_fps=10.0,
                           seconds=20.0, threads=2)  # fmt: skip
    print(json.dumps(figures, indent=2))
    run = figures["pipeline"]
    assert run["fps"] > 0 and run["drops"].get("detect/superseded", 0) > 0  # it was overloaded
    assert not bad, bad
    # ahead of detect the newest frame wins at every hop: nothing is refused by a full queue
    # (decode -> preprocess -> detect), and decode_in counts every decode drop (accounted for)
    refused = {k: v for k, v in run["drops"].items() if k.endswith("/queue_full")}
    assert not refused, refused
