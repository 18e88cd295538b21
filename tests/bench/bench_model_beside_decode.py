"""The bare model's frames/s while only decode runs beside it: the ceiling `efficiency` can reach
on a CPU box where decode and the model share the cores.

    python3 tests/bench/bench_model_beside_decode.py [--cameras 6] [--convert 0.43]
        [--videos 'GLOB'] [--seconds 8]

``--cameras`` files of the bench's synthetic 720p25 scenes (``edgestream bench pipeline`` writes
them once under ~/.cache/edgestream/bench) are decoded in real time in one process, one thread
per camera as decode runs them, every frame decoded and the ``--convert`` share converted to RGB
(what decode forwards: published ÷ offered in the every-frame run). Meanwhile ``edgestream bench
model --batch 1 8`` runs; then again alone, right after. Prints both and their ratio. One run
of each on a shared machine: an order of magnitude, not a constant.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

DEFAULT_VIDEOS = str(Path.home() / ".cache/edgestream/bench/scenes/*1280x720-25fps/videos/*.mp4")


def decode_load(files: list[str], cameras: int, convert: float, stop: threading.Event,
                counts: list[int]) -> list[threading.Thread]:  # fmt: skip
    import av

    from stages.decode.pacing import RealtimeClock

    def camera(i: int) -> None:
        share = 0.0
        while not stop.is_set():
            with av.open(files[i % len(files)]) as container:
                clock = RealtimeClock(stop)  # paced as decode paces a file played live
                for frame in container.decode(container.streams.video[0]):
                    clock.wait_until(float(frame.time or 0.0))
                    if stop.is_set():
                        return
                    share += convert
                    if share >= 1.0:
                        share -= 1.0
                        frame.to_ndarray(format="rgb24")
                    counts[i] += 1

    threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(cameras)]
    for t in threads:
        t.start()
    return threads


def bench_model(seconds: float) -> tuple[str, float]:
    """``edgestream bench model --batch 1 8``: (its table, the best frames/s)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.json"
        cmd = [sys.executable, "-m", "pipeline.cli", "bench", "model", "--batch", "1", "8",
               "--seconds", str(seconds), "--json", str(path)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        rows = json.loads(path.read_text())["rows"]
    return out.stdout, max(float(r["fps"]) for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=6)
    ap.add_argument("--convert", type=float, default=0.43)
    ap.add_argument("--videos", default=DEFAULT_VIDEOS)
    ap.add_argument("--seconds", type=float, default=8.0, help="per batch size")
    args = ap.parse_args()
    files = sorted(glob.glob(args.videos))
    if not files:
        print(f"no videos match {args.videos}: run `edgestream bench pipeline` once (it writes "
              "the scenes) or pass --videos", file=sys.stderr)  # fmt: skip
        return 2
    stop, counts = threading.Event(), [0] * args.cameras
    threads = decode_load(files, args.cameras, args.convert, stop, counts)
    t0 = time.monotonic()
    beside, fps_beside = bench_model(args.seconds)
    decoded = sum(counts) / (time.monotonic() - t0)
    stop.set()
    for t in threads:
        t.join(5.0)
    alone, fps_alone = bench_model(args.seconds)
    print(f"beside decode ({args.cameras} cameras, {decoded:.0f} frames/s decoded):\n{beside}")
    print(f"alone:\n{alone}")
    print(f"ceiling: {fps_beside:.1f} / {fps_alone:.1f} = {fps_beside / fps_alone:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
