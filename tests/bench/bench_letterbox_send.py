"""What one live send costs decode with ``preprocess.where: decode``: `LetterboxSender.send`
of a 720p frame on a real ipc edge with the items' shm pool (letterbox to 640x640, into the
camera's ring slot, descriptor sent), a consumer reading each item back.

    python3 tests/bench/bench_letterbox_send.py [--n 300]

Two rates: paced at 5 frames/s (the ring's slots are cold by the time they are written again,
as at light load) and back to back. Prints p50/p95 ms per send. Compare two trees in one
sitting, alternating (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

import numpy as np

from pipeline.messages import FrameMsg
from pipeline.shm import ShmPool, ShmReader
from pipeline.transport import Receiver, Sender
from stages.preprocess.stage import LetterboxSender


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="back-to-back sends (paced: a third)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (720, 1280, 3), np.uint8) for _ in range(4)]
    pool = ShmPool(f"lbb{uuid.uuid4().hex[:8]}", "items", slots=26)  # ~ one camera's ring
    folder = tempfile.mkdtemp()
    rx = Receiver(f"ipc://{folder}/items.sock", 64, pixels="ref")
    inner = Sender(f"ipc://{folder}/items.sock", 64, shm=pool)
    reader = ShmReader()
    try:
        if not inner.wait_connected(5):
            raise SystemExit("the items edge never connected")
        tx = LetterboxSender(inner, (640, 640))

        def run(n: int, gap_s: float) -> tuple[float, float]:
            ms = []
            for i in range(n):
                msg = FrameMsg("cam", i, i, time.time(), "wallclock", 1280, 720, imgs[i % 4])
                t0 = time.perf_counter()
                if not tx.send(msg):
                    raise SystemExit(f"send {i} refused")
                ms.append((time.perf_counter() - t0) * 1e3)
                got = rx.recv(5000)
                if got is None or reader.read(got.pixels) is None:  # type: ignore[union-attr]
                    raise SystemExit(f"item {i} lost")
                if gap_s:
                    time.sleep(gap_s)
            ms.sort()
            return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]

        run(30, 0.0)  # warm-up: rings created, pages touched
        for name, n, gap in (
            ("paced 5/s", max(20, args.n // 3), 0.2),
            ("back to back", args.n, 0.0),
        ):
            p50, p95 = run(n, gap)
            print(
                f"{name:>12}: LetterboxSender.send p50 {p50:.2f} ms, p95 {p95:.2f} ms ({n} sends)"
            )
    finally:
        reader.close()
        inner.close()
        rx.close()
        pool.close()


if __name__ == "__main__":
    main()
