"""Score what the pipeline published for a synthetic scene against the scene's ground truth.

The input is what ``edgestream run --no-realtime --jsonl DIR`` writes for a camera whose id is
the scene's name (``DIR/<name>.jsonl``) and the scene's MOTChallenge folder
(``mot/<name>/gt/gt.txt``, from ``edgestream synth``). Scoring is TrackEval's, with its MOT17
rules, run once per class (person, car, bicycle) and combined over classes and scenes:

- a sequence ``<name>-<class>`` holds that class's ground truth relabelled pedestrian and the
  tracks the pipeline published with that class name; detections without a track id (not yet
  confirmed) are not tracker output and are left out;
- bicycle riders count as persons (the detector is taught to call them person);
- ground truth boxes are clipped to the image (the model predicts the visible box), and an
  object the training labels leave out (less than 15 % of it visible, or a clipped side under
  6 px) becomes a distractor: not a miss when nobody finds it, not a false positive when a track
  covers it.

TrackEval (``pip install trackeval``) is a test and benchmark dependency, imported when used
(through `stages.track.evaluate.trackeval_raw`, the tracker benchmark's own runner).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.synth.writer import MIN_BOX_PX, MIN_VISIBILITY

CLASS_MOT_IDS = {"person": (1, 2), "car": (3,), "bicycle": (4,)}
"""Which gt.txt classes (``stages.synth.scene.MOT_CLASS``) each published class name scores."""

_PEDESTRIAN = 1
_DISTRACTOR = 8  # MOT17 "distractor": matched tracker boxes are removed, never scored


@dataclass(frozen=True)
class SceneScores:
    """CLEAR MOT and identity scores in [0, 1] (combined) plus the counts behind them."""

    mota: float
    idf1: float
    hota: float
    id_switches: int
    false_negatives: int
    false_positives: int
    gt_boxes: int
    per_sequence: Mapping[str, tuple[float, float]]  # name-class -> (MOTA, IDF1)


def _seq_length(mot_dir: Path) -> tuple[int, int, int]:
    info: dict[str, str] = {}
    for line in (mot_dir / "seqinfo.ini").read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            info[key.strip()] = value.strip()
    return int(info["seqLength"]), int(info["imWidth"]), int(info["imHeight"])


def _gt_rows(gt_file: Path, mot_ids: tuple[int, ...], width: int, height: int) -> list[str]:
    rows = []
    for line in gt_file.read_text().splitlines():
        f = line.split(",")
        if int(f[7]) not in mot_ids:
            continue
        x, y, w, h = (float(v) for v in f[2:6])
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(width), x + w), min(float(height), y + h)
        if x2 <= x1 or y2 <= y1:
            continue
        visibility = float(f[8])
        ignored = visibility < MIN_VISIBILITY or x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX
        cls = _DISTRACTOR if ignored else _PEDESTRIAN
        rows.append(f"{f[0]},{f[1]},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,{cls},1")
    return rows


def _track_rows(jsonl: Path, class_name: str) -> list[str]:
    rows = []
    with jsonl.open() as fh:
        for line in fh:
            doc = json.loads(line)
            if doc.get("type") != "detections":
                continue
            frame = int(doc["frame_id"]) + 1  # decode index -> MOTChallenge's 1-based frame
            for o in doc["objects"]:
                if o["track_id"] is None or o["class_name"] != class_name:
                    continue
                x1, y1, x2, y2 = o["box"]
                rows.append(
                    f"{frame},{o['track_id']},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                    f"{o['score']:.4f},-1,-1,-1"
                )
    return rows


def score_scenes(results: Mapping[str, Path], mot_root: Path) -> SceneScores:
    """Scores ``{scene name: published JSONL}`` against ``mot_root/<scene name>/``."""
    from stages.track.evaluate import trackeval_raw

    with tempfile.TemporaryDirectory(prefix="edgestream-score-") as tmp:
        gt_root, tr_root = Path(tmp) / "gt", Path(tmp) / "trackers"
        seq_info: dict[str, int] = {}
        for name, jsonl in results.items():
            mot_dir = mot_root / name
            length, width, height = _seq_length(mot_dir)
            for class_name, mot_ids in CLASS_MOT_IDS.items():
                gt = _gt_rows(mot_dir / "gt" / "gt.txt", mot_ids, width, height)
                if not any(r.split(",")[7] == str(_PEDESTRIAN) for r in gt):
                    continue  # a class absent from this scene has nothing to score
                seq = f"{name}-{class_name}"
                seq_info[seq] = length
                (gt_root / seq / "gt").mkdir(parents=True)
                (gt_root / seq / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
                (tr_root / "edgestream" / "data").mkdir(parents=True, exist_ok=True)
                tracks = _track_rows(Path(jsonl), class_name)
                (tr_root / "edgestream" / "data" / f"{seq}.txt").write_text(
                    "\n".join(tracks) + ("\n" if tracks else "")
                )
        if not seq_info:
            raise ValueError("no ground truth to score in the given scenes")
        res = trackeval_raw(gt_root, tr_root, ["edgestream"], seq_info)["edgestream"]
    combined = res["COMBINED_SEQ"]["pedestrian"]
    per_seq = {
        seq: (float(r["pedestrian"]["CLEAR"]["MOTA"]), float(r["pedestrian"]["Identity"]["IDF1"]))
        for seq, r in res.items()
        if seq != "COMBINED_SEQ"
    }
    clear = combined["CLEAR"]
    return SceneScores(
        mota=float(clear["MOTA"]),
        idf1=float(combined["Identity"]["IDF1"]),
        hota=float(np.mean(combined["HOTA"]["HOTA"])),
        id_switches=int(clear["IDSW"]),
        false_negatives=int(clear["CLR_FN"]),
        false_positives=int(clear["CLR_FP"]),
        gt_boxes=int(clear["CLR_TP"] + clear["CLR_FN"]),
        per_sequence=per_seq,
    )


def main(argv: list[str] | None = None) -> int:
    """``python3 -m stages.synth.score JSONL_DIR MOT_DIR``: score every scene that has both."""
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m stages.synth.score", description=__doc__)
    parser.add_argument("jsonl_dir", type=Path, help="edgestream run --jsonl output folder")
    parser.add_argument("mot_dir", type=Path, help="the scenes' mot/ folder (edgestream synth)")
    args = parser.parse_args(argv)
    found = sorted(args.jsonl_dir.glob("*.jsonl"))
    results = {p.stem: p for p in found if (args.mot_dir / p.stem).is_dir()}
    if not results:
        parser.error(f"no <scene>.jsonl in {args.jsonl_dir} matches a scene in {args.mot_dir}")
    s = score_scenes(results, args.mot_dir)
    for seq, (mota, idf1) in sorted(s.per_sequence.items()):
        print(f"{seq:<32} MOTA {mota:6.3f}  IDF1 {idf1:6.3f}")
    print(
        f"{'combined':<32} MOTA {s.mota:6.3f}  IDF1 {s.idf1:6.3f}  HOTA {s.hota:6.3f}  "
        f"IDsw {s.id_switches}  FN {s.false_negatives}  FP {s.false_positives}  "
        f"gt {s.gt_boxes}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
