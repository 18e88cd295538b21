"""Soak: 1,000,000 frames of random detections through one tracker; memory must stay flat.

    python tests/bench/track_soak.py [--frames 1000000] [--every 100000]

Prints, every ``--every`` frames: live tracks, track-table bytes, process RSS, ids handed out and
tracks removed so far, and update time. Exits 1 if the last RSS reading exceeds the first (taken
after warm-up) by more than ``--rss-slack-mib``, or the track count exceeds its bound.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "track")]

from track_helpers import RandomScene  # noqa: E402

from stages.track.config import TrackerConfig  # noqa: E402
from stages.track.tracker import Tracker  # noqa: E402


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--rss-slack-mib", type=float, default=8.0)
    args = parser.parse_args()

    objects, clutter = 20, 8
    scene = RandomScene(seed=0, objects=objects, clutter=clutter)
    tracker = Tracker(TrackerConfig(per_class=True), frame_rate_hz=args.fps)
    bound = (objects + clutter) * (tracker.max_lost_frames + 1)
    removed = most = 0
    spent = 0.0
    readings: list[float] = []
    print(
        f"{'frame':>9} {'tracks':>6} {'max':>5} {'table KiB':>9} {'RSS MiB':>8} "
        f"{'ids':>8} {'removed':>8} {'ms/frame':>8}"
    )
    for f in range(1, args.frames + 1):
        boxes, scores, classes = scene.frame()
        t0 = time.perf_counter()
        out = tracker.update(boxes, scores, classes, f / args.fps)
        spent += time.perf_counter() - t0
        removed += sum(e.kind.value == "removed" for e in out.events)
        most = max(most, tracker.num_tracks)
        if f % args.every == 0 or f == args.frames:
            readings.append(rss_mib())
            print(
                f"{f:9d} {tracker.num_tracks:6d} {most:5d} {tracker.state_bytes / 1024:9.1f} "
                f"{readings[-1]:8.1f} {tracker.next_id - 1:8d} {removed:8d} "
                f"{1000 * spent / f:8.3f}",
                flush=True,
            )
    growth = readings[-1] - readings[0]
    ok = growth <= args.rss_slack_mib and most <= bound
    print(
        f"RSS growth after first reading: {growth:+.1f} MiB (slack {args.rss_slack_mib}); "
        f"most tracks held {most} (bound {bound}): {'OK' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
