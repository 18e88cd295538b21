"""Synthetic tracking sequences for cross-validation: `edgestream synth` scenes with simulated
person detections, written in the MOTChallenge layout (``seqinfo.ini``, ``gt/gt.txt``,
``det/det.txt``) so the same loader and TrackEval (MOT17 rules) score them.

The detector is simulated from the ground truth, because running a model here would need the
weights and minutes of CPU: a pedestrian or rider (MOT classes 1 and 2; riders are distractors
under the MOT17 rules) is detected with a probability that falls with its visible share, the
box is the visible-clipped box with edge noise proportional to its height, the score rises with
visibility, and a few low-score false positives appear per frame. Every draw comes from one
seeded generator, so a scene and its detections are the same on every run. The constants are
round numbers meant to look like a public FRCNN detector on MOT17 (recall ~0.6, precision
~0.9), not fitted to anything; the scenes add crowd shapes that the six real sequences lack,
not a new detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.synth.scene import MOT_CLASS, SceneConfig, generate_scene
from stages.synth.writer import gt_lines, write_seqinfo

# (seed, max_objects) of the scenes used by cross-validation: a sparse and a dense street.
CV_SCENES: tuple[tuple[int, int], ...] = ((11, 10), (12, 24))
SECONDS = 20.0
FPS = 25.0
SIZE = (960, 540)

_PEOPLE = (MOT_CLASS["person"], MOT_CLASS["rider"])
_MISS_AT_FULL_VIEW = 0.08  # a fully visible person is still missed this often
_FALSE_PER_FRAME = 0.4  # mean false positives per frame (Poisson)
_EDGE_NOISE = 0.04  # box edge noise, std as a fraction of the box height


def _detections(
    frame: int, objects: list, width: int, height: int, rng: np.random.Generator
) -> list[str]:
    rows = []
    for o in objects:
        if o.mot_class not in _PEOPLE:
            continue
        x1, y1, x2, y2 = o.clipped_box(width, height)
        h = y2 - y1
        if x2 - x1 < 4 or h < 8:
            continue
        p = (1.0 - _MISS_AT_FULL_VIEW) * min(1.0, max(0.0, (o.visibility - 0.15) / 0.5))
        if rng.random() >= p:
            continue
        x1, y1, x2, y2 = np.array([x1, y1, x2, y2], float) + rng.normal(0, _EDGE_NOISE * h, 4)
        score = float(np.clip(0.35 + 0.6 * o.visibility + rng.normal(0, 0.12), 0.05, 1.0))
        rows.append(
            f"{frame},-1,{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},{score:.3f},-1,-1,-1"
        )
    for _ in range(rng.poisson(_FALSE_PER_FRAME)):
        h = rng.uniform(0.08, 0.4) * height
        x, y = rng.uniform(0, width - 0.4 * h), rng.uniform(0, height - h)
        score = float(rng.uniform(0.1, 0.75))
        rows.append(f"{frame},-1,{x:.1f},{y:.1f},{0.4 * h:.1f},{h:.1f},{score:.3f},-1,-1,-1")
    return rows


def write_scene(root: Path, seed: int, max_objects: int, seconds: float = SECONDS) -> Path:
    """Render one scene (for its exact visibility), write its sequence folder; returns it."""
    cfg = SceneConfig(
        seed=seed, seconds=seconds, fps=FPS, width=SIZE[0], height=SIZE[1], max_objects=max_objects
    )
    name = f"SYNTH-{seed:02d}"
    seq = root / name
    (seq / "gt").mkdir(parents=True, exist_ok=True)
    (seq / "det").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1000 + seed)
    gt: list[str] = []
    det: list[str] = []
    n = 0
    for n, (_rgb, objects) in enumerate(
        generate_scene(seed, seconds, FPS, SIZE, max_objects=max_objects), 1
    ):
        gt.extend(gt_lines(n, objects))
        det.extend(_detections(n, objects, cfg.width, cfg.height, rng))
    write_seqinfo(seq, name, cfg, n)
    (seq / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    (seq / "det" / "det.txt").write_text("\n".join(det) + "\n")
    return seq


def write_cv_scenes(root: Path, scenes: tuple[tuple[int, int], ...] = CV_SCENES) -> list[Path]:
    """Write the cross-validation scenes under ``root``; returns their folders."""
    return [write_scene(root, seed, max_objects) for seed, max_objects in scenes]
