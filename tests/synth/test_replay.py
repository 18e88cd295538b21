"""Tracker tuning by replay: detections written once, replayed through the tracker, scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages.synth import MIN_VISIBILITY, write_video_set
from stages.synth.replay import detect_videos, main, track_and_score
from stages.track.config import TrackerConfig

pytest.importorskip("trackeval", reason="trackeval scores the replays (tests/requirements.txt)")

SIZE = (320, 192)
NAMES = {1: "person", 2: "person", 3: "car", 4: "bicycle"}
CLASS_ID = {"person": 0, "car": 1, "bicycle": 2}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    write_video_set(out, seed=5, videos=1, seconds=3, size=SIZE, val_videos=0, dataset=False)
    return out


def _gt_as_detections(scene: Path, dets: Path, drop_every: int = 0) -> Path:
    """A perfect detector: the visible ground truth as detections (score 0.9), optionally
    missing every ``drop_every``-th frame."""
    (seq,) = sorted((scene / "mot").iterdir())
    frames: dict[int, list[dict[str, object]]] = {}
    for line in (seq / "gt" / "gt.txt").read_text().splitlines():
        f = line.split(",")
        frame, x, y, w, h = int(f[0]), *map(float, f[2:6])
        if float(f[8]) < MIN_VISIBILITY:
            continue
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(SIZE[0], x + w), min(SIZE[1], y + h)
        name = NAMES[int(f[7])]
        box = [x1, y1, x2, y2]
        frames.setdefault(frame, []).append(
            {"box": box, "score": 0.9, "class_id": CLASS_ID[name], "class_name": name}
        )
    n = max(frames)
    dets.mkdir(parents=True, exist_ok=True)
    with (dets / f"{seq.name}.jsonl").open("w") as fh:
        for i in range(n):
            objs = [] if drop_every and i % drop_every == 0 else frames.get(i + 1, [])
            fh.write(json.dumps({"frame_id": i, "capture_ts": i / 25, "objects": objs}) + "\n")
    return dets


def test_perfect_detections_track_almost_perfectly(scene: Path, tmp_path: Path) -> None:
    dets = _gt_as_detections(scene, tmp_path / "perfect")
    s = track_and_score(dets, scene / "mot", TrackerConfig(per_class=True))
    # only the first frames of each new track (min_hits) are missed
    assert s.mota > 0.85 and s.idf1 > 0.85, s
    assert s.gt_boxes > 100 and s.false_positives < 0.02 * s.gt_boxes


def test_worse_detections_score_worse(scene: Path, tmp_path: Path) -> None:
    good = track_and_score(_gt_as_detections(scene, tmp_path / "a"), scene / "mot", TrackerConfig())
    holes = _gt_as_detections(scene, tmp_path / "b", drop_every=2)
    # half the frames empty: tracks coast through the gaps but count as misses
    bad = track_and_score(holes, scene / "mot", TrackerConfig(lost_track_seconds=0.01))
    assert bad.mota < good.mota - 0.1


def test_detect_writes_one_line_per_frame_with_the_models_class_names(
    scene: Path, tmp_path: Path
) -> None:
    weights = Path(__file__).resolve().parents[2] / "stages/detect/models/demo.pth"
    if not weights.is_file():
        pytest.skip("no demo model")
    (path,) = detect_videos(weights, scene / "videos", tmp_path / "dets", conf=0.2, threads=1)
    docs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["frame_id"] for d in docs] == list(range(75))  # 3 s at 25 fps
    objs = [o for d in docs for o in d["objects"]]
    assert objs and all(o["score"] >= 0.2 for o in objs)
    assert {o["class_name"] for o in objs} <= {"person", "car", "bicycle"}


def test_cli_grid_runs_every_combination(
    scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dets = _gt_as_detections(scene, tmp_path / "perfect")
    args = ["track", str(dets), str(scene / "mot"), "--set", "per_class=true"]
    assert main([*args, "--grid", "min_hits=1,3", "--grid", "high_score=0.5,0.6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all("MOTA" in line and "per_class=True" in line for line in lines)
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main([*args, "--grid", "no_such_field=1"])
