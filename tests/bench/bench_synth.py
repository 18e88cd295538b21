"""Synthetic scene throughput on one core: generation, H.264 encoding, the full dataset writer.

    python3 tests/bench/bench_synth.py [--seconds 10] [--size 640x384] [--repeat 3]

"fps/core" divides frames by the process CPU time (user+system) with OpenCV and x264 limited to
one thread, so it does not depend on how busy the machine is; "fps wall" is throughput on this
machine at the time. The median of ``--repeat`` runs is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from stages.synth import encode_video, generate_scene, write_video_set  # noqa: E402
from stages.synth.cli import parse_size  # noqa: E402


def timed(fn: Callable[[], int]) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    n = fn()
    return n / (time.process_time() - c0), n / (time.perf_counter() - w0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", type=parse_size, default=(640, 384))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    size = args.size

    def gen() -> int:
        return sum(1 for _ in generate_scene(1, args.seconds, 25, size))

    def gen_encode() -> int:
        with tempfile.TemporaryDirectory() as d:
            frames = (f for f, _ in generate_scene(1, args.seconds, 25, size))
            return sum(1 for _ in encode_video(Path(d) / "v.mp4", frames, 25, crf=28))

    def full() -> int:
        with tempfile.TemporaryDirectory() as d:
            s = write_video_set(Path(d), seed=1, videos=1, seconds=args.seconds, size=size, every=4)
            return sum(v.frames for v in s.videos)

    print(f"synth bench, {size[0]}x{size[1]}, {args.seconds:g} s clips at 25 fps, one core")
    for name, fn in (
        ("generate (frames + gt)", gen),
        ("generate + H.264 encode", gen_encode),
        ("write_video_set (+ decode, jpg, labels)", full),
    ):
        runs = [timed(fn) for _ in range(args.repeat)]
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        print(f"  {name:42s} {cpu:7.1f} fps/core  {wall:7.1f} fps wall")


if __name__ == "__main__":
    main()
