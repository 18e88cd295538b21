"""The decode stage alone, one or several decode processes (``decode.processes``): K processes
(each a `DecodeFeeder` over its share of the cameras, `stages.decode.config.decode_shard`, with
its own ipc socket, as the pipeline runs them) and one receiver connected to all of them, as a
preprocess worker is, counting the frames that leave decode (descriptors; pixels unread).

    python3 tests/bench/bench_decode_processes.py K CAMERAS WxH FPS

Each camera is a synthetic scene file played live and looped. What it shows: the per-frame
Python work of a decode process's camera threads and its one sender thread shares one GIL,
and past ~16 busy cameras a single process does not only stop keeping up, it collapses
(measured on the 2-core CI machine kind, 2026-12-04, 320x192 at 100 frames/s per camera:
24 cameras: 735 of 2400 frames/s with 1 process, 2388 with 2; 48 cameras: 67 / ~600 / 1492
with 1 / 2 / 4 processes).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO)]


def decode_proc(k: int, shards: int, paths: list[Path], n: int, d: Path, stop: Any) -> None:
    from pipeline.shm import ShmPool
    from pipeline.transport import Endpoint, Sender
    from stages.decode.config import CameraConfig, decode_shard
    from stages.decode.feeder import DecodeFeeder

    cams = [(f"cam{i:02d}", CameraConfig(str(paths[i % len(paths)]), loop=True)) for i in range(n)]
    cams = [(c, cfg) for c, cfg in cams if decode_shard(c, shards) == k]
    pool = ShmPool(f"db{os.getpid()}", "frames", slots=8)
    sender = Sender(Endpoint("bind", f"ipc://{d}/f{k}.sock"), 8, shm=pool, name="decode")
    feeder = DecodeFeeder(cams, sender)
    feeder.start()
    stop.wait()
    feeder.stop()
    sender.close()
    pool.close()


def drain(shards: int, d: Path, warmup_s: float, seconds: float, q: Any) -> None:
    from pipeline.transport import Endpoint, Receiver

    more = [Endpoint("connect", f"ipc://{d}/f{k}.sock") for k in range(1, shards)]
    r = Receiver(Endpoint("connect", f"ipc://{d}/f0.sock"), 8, pixels="ref", also_connect=more)
    t_end = time.time() + warmup_s
    while time.time() < t_end:
        r.recv(100)
    n, t0 = 0, time.time()
    while time.time() < t0 + seconds:
        if r.recv(100) is not None:
            n += 1
    q.put(n / (time.time() - t0))
    r.close()


def main() -> None:
    shards, n = int(sys.argv[1]), int(sys.argv[2])
    w, h = (int(v) for v in sys.argv[3].split("x"))
    fps = float(sys.argv[4])
    from stages.demo.scenes import ensure_scenes

    work = Path(tempfile.gettempdir()) / "edgestream-bench-decode"
    paths = ensure_scenes(work, 4, 4.0, size=(w, h), fps=fps)
    d = Path(tempfile.mkdtemp(prefix="decbench-"))
    ctx = mp.get_context("spawn")
    stop, q = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=decode_proc, args=(k, shards, paths, n, d, stop))
             for k in range(shards)]  # fmt: skip
    for p in procs:
        p.start()
    dr = ctx.Process(target=drain, args=(shards, d, 8.0, 10.0, q))
    dr.start()
    rate = q.get()
    dr.join()
    stop.set()
    for p in procs:
        p.join(10)
    print(f"{shards} decode process(es), {n} cameras {w}x{h}@{fps:g} (offered {n * fps:.0f}/s): "
          f"{rate:.0f} frames/s left decode")  # fmt: skip


if __name__ == "__main__":
    main()
