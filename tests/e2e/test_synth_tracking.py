"""End to end (issue 7): synthetic scenes through ``edgestream run``, tracks scored by TrackEval.

A held-out scene (seed 4242; the demo model was trained on seed 5, its tracker settings chosen
on seeds 77 and 78) is generated with ``edgestream synth``, run offline (``realtime: false``)
through every stage with the demo model (stages/detect/models/demo.pth, yolo_nas_n, 416
input, person/car/bicycle) and the tracker settings of configs/demo.yaml's ``tracker:``
section, and what the JSON lines sink published is scored against the scene's ground truth by
``stages.synth.score`` (MOT17 rules, per class, combined).

Measured here (demo model v3): MOTA 0.912, IDF1 0.881 (HOTA 0.788, 6 id switches, FN 246,
FP 174 of 4836 gt boxes; without the appearance cue, appearance_weight 0: 0.910 / 0.869). Both
are held to the issue's target, 0.85. On the larger held-out set (seed 999, 4 x 20 s, replay;
configs/demo.yaml): MOTA 0.856, IDF1 0.892.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip(
    "trackeval", reason="trackeval is needed to score tracking (tests/requirements.txt)"
)

from stages.synth.score import score_scenes

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "stages" / "detect" / "models" / "demo.pth"
SEED = 4242  # never used for training (seed 5) nor for tuning (77, 78) or the held-out set (999)
SECONDS = 16
FPS = 25

MOTA_FLOOR = 0.85  # issue 7's target; measured 0.912
IDF1_FLOOR = 0.85  # issue 7's target; measured 0.881

# Above the test's own bounds (synth 120 s + run 600 s), so those report first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(780)]


def _edgestream(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def test_synthetic_scene_tracking(tmp_path: Path) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"demo model missing: {WEIGHTS}")
    synth = tmp_path / "synth"
    _edgestream(
        "synth", str(synth), "--seed", str(SEED), "--videos", "2", "--seconds", str(SECONDS),
        "--fps", str(FPS), "--val-videos", "0", "--no-dataset",
        timeout=120,
    )  # fmt: skip
    videos = sorted((synth / "videos").glob("*.mp4"))
    assert len(videos) == 2, videos

    tracker = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["tracker"]
    out = tmp_path / "out"
    config = {
        "version": 1,
        "name": f"e2e-{os.getpid()}",
        "realtime": False,
        "cameras": [{"id": v.stem, "url": str(v), "frame_rate_hz": FPS} for v in videos],
        "model": {"weights": str(WEIGHTS), "backend": "torch", "device": "cpu"},
        "tracker": tracker,
        "sinks": {"jsonl": {"path": str(out / "{camera}.jsonl"), "events": False}},
        "metrics": {"port": 0},
    }
    config_file = tmp_path / "e2e.yaml"
    config_file.write_text(yaml.safe_dump(config))
    _edgestream("run", "-c", str(config_file), timeout=600)

    results = {v.stem: out / f"{v.stem}.jsonl" for v in videos}
    for path in results.values():
        assert path.is_file() and path.stat().st_size > 0, path
    scores = score_scenes(results, synth / "mot")

    print(f"\n{'sequence':<32} {'MOTA':>7} {'IDF1':>7}")
    for seq, (mota, idf1) in sorted(scores.per_sequence.items()):
        print(f"{seq:<32} {mota:7.3f} {idf1:7.3f}")
    print(
        f"combined: MOTA {scores.mota:.3f} IDF1 {scores.idf1:.3f} HOTA {scores.hota:.3f} "
        f"IDsw {scores.id_switches} FN {scores.false_negatives} FP {scores.false_positives} "
        f"gt {scores.gt_boxes}"
    )
    assert scores.gt_boxes > 0
    assert scores.mota >= MOTA_FLOOR, f"MOTA {scores.mota:.3f} < floor {MOTA_FLOOR}"
    assert scores.idf1 >= IDF1_FLOOR, f"IDF1 {scores.idf1:.3f} < floor {IDF1_FLOOR}"
