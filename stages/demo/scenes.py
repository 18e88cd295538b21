"""The demo's cameras: synthetic scenes written once and cached (videos only, no dataset)."""

from __future__ import annotations

import json
from pathlib import Path

from stages.synth import write_video_set

DEMO_SEED = 2024  # not a training seed (1) nor the held-out test seed (999)


def ensure_scenes(
    workdir: Path,
    cameras: int,
    seconds: float,
    seed: int = DEMO_SEED,
    size: tuple[int, int] = (640, 384),
    fps: float = 25.0,
) -> list[Path]:
    """Video files for ``cameras`` demo cameras under ``workdir/scenes``, written if missing.

    The cache is keyed by every parameter, so changing one writes a new set.
    """
    key = f"s{seed}-n{cameras}-t{seconds:g}-{size[0]}x{size[1]}-{fps:g}fps"
    out = Path(workdir) / "scenes" / key
    stamp = out / "synth.json"
    paths = [out / "videos" / f"synth-s{seed}-{i:03d}.mp4" for i in range(cameras)]
    if stamp.is_file() and all(p.is_file() for p in paths):
        try:
            json.loads(stamp.read_text())
            return paths
        except ValueError:
            pass
    write_video_set(out, seed=seed, videos=cameras, seconds=seconds, fps=fps, size=size,
                    dataset=False)  # fmt: skip
    return paths
