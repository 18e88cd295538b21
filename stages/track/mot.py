"""MOTChallenge sequences: read ``seqinfo.ini`` and ``det/det.txt``, write tracker results."""

from __future__ import annotations

import configparser
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# the MOT17 set beside a checkout (../shared/data/mot17); the CLI's default, defined here
# (numpy only) so that building the CLI's parser does not import the tracker (scipy)
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mot17"


@dataclass(frozen=True)
class Sequence:
    """One MOTChallenge sequence's public detections, grouped by frame (1-based)."""

    name: str
    frame_rate_hz: float
    num_frames: int
    width: int
    height: int
    detections: np.ndarray  # (K, 6): frame, x1, y1, x2, y2, score — sorted by frame

    def frames(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(frame, boxes_xyxy (N, 4) float32, scores (N,) float32)`` for every frame,
        including frames without detections."""
        d = self.detections
        frame_col = d[:, 0].astype(np.int64)
        starts = np.searchsorted(frame_col, np.arange(1, self.num_frames + 2))
        for f in range(1, self.num_frames + 1):
            rows = d[starts[f - 1] : starts[f]]
            yield f, rows[:, 1:5].astype(np.float32), rows[:, 5].astype(np.float32)


def load_sequence(seq_dir: Path | str) -> Sequence:
    """Read a sequence directory (``seqinfo.ini`` + ``det/det.txt``)."""
    seq_dir = Path(seq_dir)
    ini = seq_dir / "seqinfo.ini"
    det_path = seq_dir / "det" / "det.txt"
    for path in (ini, det_path):
        if not path.is_file():
            raise FileNotFoundError(f"{seq_dir} is not a MOTChallenge sequence: {path} missing")
    parser = configparser.ConfigParser()
    parser.read(ini)
    try:
        info = parser["Sequence"]
        name = info.get("name", seq_dir.name)
        frame_rate = float(info["frameRate"])
        length = int(info["seqLength"])
        width, height = int(info["imWidth"]), int(info["imHeight"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{ini}: bad or missing [Sequence] field: {exc}") from exc
    raw = np.loadtxt(det_path, delimiter=",", ndmin=2)
    if raw.shape[0] and raw.shape[1] < 7:
        raise ValueError(f"{det_path}: expected >= 7 columns (frame,id,x,y,w,h,score,...)")
    dets = np.zeros((raw.shape[0], 6))
    if raw.shape[0]:
        dets[:, 0] = raw[:, 0]
        dets[:, 1:3] = raw[:, 2:4]
        dets[:, 3:5] = raw[:, 2:4] + raw[:, 4:6]
        dets[:, 5] = raw[:, 6]
        dets = dets[np.argsort(dets[:, 0], kind="stable")]
    return Sequence(name, frame_rate, length, width, height, dets)


def format_results(rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> str:
    """MOTChallenge result lines ``frame,id,x,y,w,h,score,-1,-1,-1`` from
    ``(frame, ids (M,), boxes xyxy (M, 4), scores (M,))`` tuples."""
    lines = []
    for frame, ids, boxes, scores in rows:
        for tid, (x1, y1, x2, y2), s in zip(ids, boxes, scores, strict=True):
            lines.append(
                f"{frame},{int(tid)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{s:.4f},-1,-1,-1"
            )
    return "\n".join(lines) + ("\n" if lines else "")
