"""Tune the tracker for a detector on synthetic scenes, reproducibly and cheaply.

Two steps, so that the detector runs once and every tracker setting costs only a replay:

``python3 -m stages.synth.replay detect WEIGHTS VIDEOS_DIR DETS_DIR [--conf 0.1]``
    runs the detector (the same `Detector` path as the pipeline: letterbox at the weights'
    input size, reference postprocessing) on every frame of every ``VIDEOS_DIR/*.mp4`` and
    writes ``DETS_DIR/<scene>.jsonl``: one ``{"frame_id", "capture_ts", "objects": [...]}``
    line per frame, every detection down to ``--conf`` (below the tracker's ``low_score``, so
    the tracker sees what it would see in the pipeline), each with its appearance descriptor
    (``feat``, `stages.detect.appearance`, computed as the detect stage computes it).

``python3 -m stages.synth.replay track DETS_DIR MOT_DIR [--set K=V ...] [--grid K=V1,V2 ...]``
    feeds those detections through `stages.track.tracker.Tracker` (one per scene, frame by
    frame, at the scene's frame rate) with the product defaults changed by ``--set``, once per
    point of the ``--grid`` product, and scores each run with `stages.synth.score` (TrackEval,
    MOT17 rules, per class, combined), one line per run.

Tune on validation seeds, then check the chosen settings once on a held-out seed: the demo
model's tracker section in configs/demo.yaml was chosen this way (commands there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.synth.score import SceneScores, score_scenes
from stages.track.config import TrackerConfig

DEFAULT_FPS = 25.0


def detect_videos(
    weights: Path, videos_dir: Path, out_dir: Path, *, conf: float = 0.1, threads: int = 0
) -> list[Path]:
    """Detections of ``weights`` on every frame of ``videos_dir/*.mp4`` (see the module doc)."""
    from stages.detect.backends import open_backend
    from stages.detect.detector import Detector
    from stages.detect.sources import iter_frames
    from stages.detect.types import NMSParams

    nms = NMSParams(conf=conf)
    detector = Detector(open_backend("auto", weights, max_batch=1, threads=threads, nms_params=nms))
    names = detector.class_names
    videos = sorted(videos_dir.glob("*.mp4"))
    if not videos:
        raise FileNotFoundError(f"no *.mp4 in {videos_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for video in videos:
            path = out_dir / f"{video.stem}.jsonl"
            with path.open("w") as fh:
                for frame in iter_frames(video):
                    ((det, feats),) = detector.detect_with_features([frame.rgb])
                    objects = [
                        {"box": [round(float(v), 3) for v in b], "score": round(float(s), 5),
                         "class_id": int(k), "class_name": names[int(k)],
                         "feat": [round(float(v), 4) for v in f]}
                        for b, s, k, f in zip(det.boxes, det.scores, det.class_ids, feats,
                                              strict=True)
                    ]  # fmt: skip
                    ts = frame.index / (frame.fps or DEFAULT_FPS)
                    doc = {"frame_id": frame.index, "capture_ts": ts, "objects": objects}
                    fh.write(json.dumps(doc) + "\n")
            written.append(path)
    finally:
        detector.close()
    return written


def track_and_score(
    dets_dir: Path, mot_dir: Path, config: TrackerConfig, *, fps: float = DEFAULT_FPS
) -> SceneScores:
    """Replay every ``dets_dir/<scene>.jsonl`` that has a ``mot_dir/<scene>`` through a fresh
    tracker with ``config`` and score the tracks."""
    from stages.track.tracker import Tracker

    scenes = sorted(p for p in dets_dir.glob("*.jsonl") if (mot_dir / p.stem).is_dir())
    if not scenes:
        raise FileNotFoundError(f"no <scene>.jsonl in {dets_dir} matches a scene in {mot_dir}")
    with tempfile.TemporaryDirectory(prefix="edgestream-replay-") as tmp:
        results = {}
        for path in scenes:
            tracker = Tracker(config, frame_rate_hz=fps)
            out = Path(tmp) / path.name
            names: dict[int, str] = {}  # class id -> name, as the detections named them
            with path.open() as src, out.open("w") as fh:
                for line in src:
                    doc = json.loads(line)
                    objs = doc["objects"]
                    boxes = np.array([o["box"] for o in objs], np.float32).reshape(-1, 4)
                    scores = np.array([o["score"] for o in objs], np.float32)
                    classes = np.array([o["class_id"] for o in objs], np.int64)
                    names.update((o["class_id"], o["class_name"]) for o in objs)
                    feats = None
                    if objs and "feat" in objs[0]:
                        feats = np.array([o["feat"] for o in objs], np.float32)
                    t = tracker.update(boxes, scores, classes, doc["capture_ts"], feats).tracks
                    published = [
                        {"track_id": int(i), "class_name": names.get(int(c), str(int(c))),
                         "score": float(s), "box": [float(v) for v in b]}
                        for i, c, s, b in zip(t.track_ids, t.class_ids, t.scores, t.boxes,
                                              strict=True)
                    ]  # fmt: skip
                    line_out = {"type": "detections", "frame_id": doc["frame_id"]}
                    fh.write(json.dumps({**line_out, "objects": published}) + "\n")
            results[path.stem] = out
        return score_scenes(results, mot_dir)


def _value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _settings(pairs: Sequence[str], what: str) -> dict[str, list[Any]]:
    fields = set(TrackerConfig.model_fields)
    out: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(
                f"error: {what} {pair!r}: expected KEY=VALUE with KEY one of {sorted(fields)}"
            )
        out[key] = [_value(v) for v in values.split(",")]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m stages.synth.replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("detect", help="detections of WEIGHTS on every frame -> DETS_DIR")
    d.add_argument("weights", type=Path)
    d.add_argument("videos_dir", type=Path, help="edgestream synth OUT/videos")
    d.add_argument("dets_dir", type=Path)
    d.add_argument("--conf", type=float, default=0.1, help="lowest score kept (default 0.1)")
    d.add_argument("--threads", type=int, default=0)
    t = sub.add_parser("track", help="replay DETS_DIR through the tracker and score it")
    t.add_argument("dets_dir", type=Path)
    t.add_argument("mot_dir", type=Path, help="edgestream synth OUT/mot")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrackerConfig field for every run (repeatable)")  # fmt: skip
    t.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="one run per combination of these values (repeatable)")  # fmt: skip
    t.add_argument("--fps", type=float, default=DEFAULT_FPS)
    args = parser.parse_args(argv)

    if args.command == "detect":
        for path in detect_videos(
            args.weights, args.videos_dir, args.dets_dir, conf=args.conf, threads=args.threads
        ):
            print(f"wrote {path}")
        return 0

    fixed = {k: v[0] for k, v in _settings(args.set, "--set").items()}
    grid = _settings(args.grid, "--grid")
    base = TrackerConfig(**fixed)
    for combo in itertools.product(*grid.values()):
        changes = dict(zip(grid, combo, strict=True))
        config = TrackerConfig(**{**base.model_dump(), **changes})
        s = track_and_score(args.dets_dir, args.mot_dir, config, fps=args.fps)
        label = " ".join(f"{k}={v}" for k, v in {**fixed, **changes}.items()) or "defaults"
        print(
            f"{label:<64} MOTA {s.mota:.3f} IDF1 {s.idf1:.3f} HOTA {s.hota:.3f} "
            f"IDsw {s.id_switches} FN {s.false_negatives} FP {s.false_positives}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
