"""Run edgestream's tracker over a MOTChallenge sequence (the ``edgestream track`` command)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.track.config import TrackerConfig
from stages.track.mot import Sequence, format_results, load_sequence
from stages.track.tracker import Tracker


@dataclass(frozen=True)
class SequenceRun:
    """Results of one tracker over one sequence."""

    results: str  # MOTChallenge text
    update_seconds: float  # time inside update() only, summed over frames
    frames: int


def track_sequence(seq: Sequence, config: TrackerConfig | None = None) -> SequenceRun:
    """Track every frame of ``seq`` (all detections are class 0)."""
    tracker = Tracker(config, frame_rate_hz=seq.frame_rate_hz)
    rows = []
    spent = 0.0
    for frame, boxes, scores in seq.frames():
        class_ids = np.zeros(len(scores), dtype=np.int64)
        t0 = time.perf_counter()
        out = tracker.update(boxes, scores, class_ids, (frame - 1) / seq.frame_rate_hz)
        spent += time.perf_counter() - t0
        t = out.tracks
        rows.append((frame, t.track_ids, t.boxes, t.scores))
    return SequenceRun(format_results(rows), spent, seq.num_frames)


def track_to_file(seq_dir: Path | str, output: Path | str) -> SequenceRun:
    run = track_sequence(load_sequence(seq_dir))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(run.results)
    return run
