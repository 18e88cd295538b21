"""One hop of 1080p RGB frames between two processes: ipc + shared memory vs inline ipc / tcp.

    python3 tests/bench/bench_transport.py [--frames 300] [--rate 60]
    python3 tests/bench/bench_transport.py --minutes 10 [--mode ipc+shm/copy] [--rate 60]

A producer process sends `FrameMsg`s of 1920x1080x3 uint8 (6.2 MB) through `pipeline.transport`
to a consumer process, the way the runtime's decode → preprocess edge does:

- ``ipc+shm/ref``: the producer copies the frame into its `ShmRing` and sends the descriptor;
  the consumer gets the `ShmRef`, takes a zero-copy view and checks the seqlock (what the detect
  stage does before copying into its pinned batch).
- ``ipc+shm/copy``: the same, and the consumer copies the frame out of the ring.
- ``ipc inline`` / ``tcp inline``: the pixels travel in the message (zero-copy send,
  ``np.frombuffer`` on receive); tcp on 127.0.0.1.

Figures:

- hop: from the producer's ``send()`` call (after the ring write for shm) to the consumer holding
  usable pixels; for shm that is the descriptor's trip, which is what crosses the socket.
- total: from the start of the producer's work on the frame (ring write included) to usable
  pixels in the consumer (copy-out included for ``/copy``).
- Latency is measured with frames paced at ``--rate`` (no queueing); throughput with the
  producer as fast as a window of 4 frames in flight allows (the consumer acknowledges each
  frame on a side channel, so the ring is never overrun and nothing is dropped).
- memcpy: one 1080p ``np.copyto`` in one process, for reference.

Both sides use ``time.monotonic()`` (CLOCK_MONOTONIC is system-wide on Linux).

``--minutes N`` runs one mode for N minutes at ``--rate`` fps (0: flat out) and prints, every
``--interval`` s, the resident memory of both processes (VmRSS, its anonymous part, and the
peak VmHWM): flat numbers mean nothing accumulates per frame. Shared-memory pages mapped by both
count in both RSS figures (RssShmem), once touched.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from pipeline import transport  # noqa: E402
from pipeline.messages import EndMsg, FrameMsg, ShmRef  # noqa: E402
from pipeline.shm import ShmPool, list_segments  # noqa: E402
from pipeline.transport import Receiver, Sender  # noqa: E402

H, W = 1080, 1920
MODES = ("ipc+shm/ref", "ipc+shm/copy", "ipc inline", "tcp inline")
WINDOW = 4
SPAWN = mp.get_context("spawn")


def _mem(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssShmem and VmHWM of ``pid`` in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssShmem", "VmHWM"):
            out[key] = int(val.split()[0]) // 1024
    return out


# ------------------------------------------------------------------------- processes


def consumer(
    mode: str, endpoint: str, ack_endpoint: str, ready: Any, results: Any, keep: int | None
) -> None:
    """keep: how many latency samples to keep (the long run keeps a bounded window, so the
    bench's own bookkeeping does not show as memory growth)."""
    rx = Receiver(endpoint, capacity=8, pixels="ref" if mode == "ipc+shm/ref" else "copy")
    ack = transport.context().socket(zmq.PUSH)
    ack.setsockopt(zmq.LINGER, 0)
    ack.connect(ack_endpoint)
    ready.put(rx.address)
    hops: deque[float] = deque(maxlen=keep)
    totals: deque[float] = deque(maxlen=keep)
    dropped = 0
    cpu0: float | None = None
    while True:
        msg = rx.recv(timeout_ms=60_000)
        if msg is None or isinstance(msg, EndMsg):
            break
        if cpu0 is None:
            cpu0 = time.process_time()
        if not isinstance(msg, FrameMsg):  # DropMsg: the slot was overwritten
            dropped += 1
            ack.send(b"")
            continue
        px = msg.pixels
        if isinstance(px, ShmRef):
            view = rx.reader.view(px)
            ok = view is not None and int(view[7, 7, 0]) >= 0 and rx.reader.valid(px)
            dropped += not ok
        else:
            assert px.shape == (H, W, 3)
        now = time.monotonic()
        ack.send(b"")
        if msg.seq == 0:  # the connection's first frame
            continue
        hops.append(now - msg.stage_ts["send"])
        totals.append(now - msg.stage_ts["start"])
    cpu = time.process_time() - (cpu0 or 0.0)
    results.put({"hops": list(hops), "totals": list(totals), "dropped": dropped, "cons_cpu": cpu})
    ack.close(0)
    rx.close()
    transport.shutdown()


def producer(
    mode: str, endpoint: str, ack_endpoint: str, frames: int, rate: float, minutes: float,
    pipeline: str, results: Any,
) -> None:  # fmt: skip
    acks = transport.context().socket(zmq.PULL)
    acks.setsockopt(zmq.LINGER, 0)
    acks.bind(ack_endpoint)
    pool = ShmPool(pipeline, "bench", slots=2 * WINDOW) if mode.startswith("ipc+shm") else None
    tx = Sender(endpoint, capacity=8, shm=pool)
    images = [np.full((H, W, 3), i, np.uint8) for i in range(4)]  # decoder output stand-ins
    while not tx.send(_frame(0, images[0], time.monotonic())):  # wait for the connection
        time.sleep(0.01)
    acks.recv()
    in_flight, sent, t_start, cpu0 = 0, 0, time.monotonic(), time.process_time()
    deadline = t_start + minutes * 60 if minutes else None
    while (sent < frames) if deadline is None else (time.monotonic() < deadline):
        if rate:
            time.sleep(max(0.0, t_start + sent / rate - time.monotonic()))
        while in_flight >= WINDOW:
            acks.recv()
            in_flight -= 1
        start = time.monotonic()
        msg = _frame(sent + 1, images[sent % 4], start)
        if pool is not None:  # the ring write is the producer's cost; "send" is after it
            ref = pool.write("cam", msg.pixels)  # type: ignore[arg-type]
            msg = FrameMsg(**{**_fields(msg), "pixels": ref, "stage_ts": {"start": start}})
        msg.stage_ts["send"] = time.monotonic()
        # realtime (non-blocking) sends, so the shm modes use the ring; ZeroMQ's HWM accounting
        # lags the consumer a little, so a send may be refused with the window not yet full
        while not tx.send(msg, block=False):
            tx.socket.poll(10, zmq.POLLOUT)
        sent += 1
        in_flight += 1
        while acks.poll(0):
            acks.recv()
            in_flight -= 1
    elapsed = time.monotonic() - t_start
    cpu = time.process_time() - cpu0
    tx.send(EndMsg("cam", sent), block=True, timeout_s=30)
    results.put({"sent": sent, "elapsed": elapsed, "prod_cpu": cpu})
    time.sleep(0.5)
    tx.close()
    acks.close(0)
    if pool is not None:
        pool.close()
    transport.shutdown()


def _frame(seq: int, px: np.ndarray, start: float) -> FrameMsg:
    return FrameMsg(
        "cam", seq, seq, time.time(), "wallclock", W, H, px, {"start": start, "send": start}
    )


def _fields(msg: FrameMsg) -> dict[str, Any]:
    return {k: getattr(msg, k) for k in msg.__dataclass_fields__}


# ------------------------------------------------------------------------- orchestration


def run_pair(
    mode: str, frames: int, rate: float, minutes: float = 0.0, interval: float = 30.0
) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="es-bench-")
    pipeline = f"bench{os.getpid()}"
    if mode.startswith("tcp"):
        endpoint, ack_ep = "bind:tcp://127.0.0.1:0", "tcp://127.0.0.1:0"
    else:
        endpoint, ack_ep = f"bind:ipc://{tmp}/frames.sock", f"ipc://{tmp}/acks.sock"
    if mode.startswith("tcp"):  # the producer binds the ack socket: give it a fixed free port
        s = zmq.Context.instance().socket(zmq.PULL)
        port = s.bind_to_random_port("tcp://127.0.0.1")
        s.close(0)
        ack_ep = f"tcp://127.0.0.1:{port}"
    ready, results = SPAWN.Queue(), SPAWN.Queue()
    keep = 1000 if minutes else None
    cons = SPAWN.Process(target=consumer, args=(mode, endpoint, ack_ep, ready, results, keep))
    cons.start()
    address = ready.get(timeout=60)
    prod_results = SPAWN.Queue()
    prod = SPAWN.Process(
        target=producer,
        args=(mode, f"connect:{address}", ack_ep, frames, rate, minutes, pipeline, prod_results),
    )
    prod.start()
    if minutes:
        _watch_memory(mode, prod, cons, minutes, interval)
    p = _get(prod_results, prod, minutes * 60 + 300)
    c = _get(results, cons, 120)
    prod.join(30)
    cons.join(30)
    leaked = list_segments(f"edgestream-{pipeline}-")
    return {**p, **c, "leaked": [x.name for x in leaked]}


def _get(q: Any, proc: Any, timeout_s: float) -> dict[str, Any]:
    """The process's result, or an error as soon as it died without one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return q.get(timeout=1.0)  # type: ignore[no-any-return]
        except Exception:
            if proc.exitcode is not None and q.empty():
                raise RuntimeError(f"{proc.name} exited with {proc.exitcode}") from None
    raise TimeoutError(f"{proc.name}: no result in {timeout_s:.0f} s")


def _watch_memory(mode: str, prod: Any, cons: Any, minutes: float, interval: float) -> None:
    print(f"\n{mode}: memory over {minutes:g} min (MiB; RSS includes touched shared memory)")
    print(f"{'t (s)':>7} | {'producer RSS anon HWM':>24} | {'consumer RSS anon HWM':>24}")
    t0 = time.monotonic()
    while time.monotonic() - t0 < minutes * 60 + 1:
        time.sleep(min(interval, max(0.1, minutes * 60 + 1 - (time.monotonic() - t0))))
        try:
            pm, cm = _mem(prod.pid), _mem(cons.pid)
        except FileNotFoundError:
            break
        print(
            f"{time.monotonic() - t0:7.0f} | {pm['VmRSS']:8} {pm['RssAnon']:6} {pm['VmHWM']:8} | "
            f"{cm['VmRSS']:8} {cm['RssAnon']:6} {cm['VmHWM']:8}",
            flush=True,
        )


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q)) if xs else float("nan")


def memcpy_ms() -> dict[str, tuple[float, float]]:
    """p50/p99 of one 1080p copy: "warm" = the same two buffers again and again (they stay in
    the CPU caches when those are large); "cold" = rotating over 32 frames (200 MB), like a
    stream of new frames; "fresh" = into a newly allocated array (page faults included)."""
    src = [np.full((H, W, 3), i, np.uint8) for i in range(32)]
    dst = [np.empty_like(a) for a in src]
    for d in dst:
        d[:] = 1
    out: dict[str, tuple[float, float]] = {}
    for name in ("warm", "cold", "fresh"):
        times = []
        for i in range(200):
            j = 0 if name == "warm" else i % 32
            t = time.perf_counter()
            if name == "fresh":
                np.copyto(np.empty((H, W, 3), np.uint8), src[j])
            else:
                np.copyto(dst[j], src[j])
            times.append(time.perf_counter() - t)
        out[name] = (pct(times, 50), pct(times, 99))
    return out


def descriptor_ms() -> tuple[float, float, float]:
    """send + recv + decode of one frame descriptor over ipc, both ends in one thread: wall
    p50/p99 (includes waking ZeroMQ's I/O thread twice) and CPU time per descriptor (both ends
    and the I/O thread: the work the shm path does per frame instead of moving 6 MB)."""
    tmp = tempfile.mkdtemp(prefix="es-bench-")
    pool = ShmPool(f"bench{os.getpid()}", "desc", slots=2)
    ref = pool.write("cam", np.zeros((H, W, 3), np.uint8))
    msg = FrameMsg("cam", 1, 1, time.time(), "wallclock", W, H, ref, {"decode": time.time()})
    times = []
    with Receiver(f"ipc://{tmp}/d.sock", pixels="ref") as rx, Sender(rx.address, shm=pool) as tx:
        while not tx.send(msg):
            time.sleep(0.01)
        rx.recv(1000)
        cpu = time.process_time()
        for _ in range(2000):
            t = time.perf_counter()
            tx.send(msg)
            got = rx.recv(1000)
            times.append(time.perf_counter() - t)
            assert isinstance(got, FrameMsg)
        cpu = (time.process_time() - cpu) / 2000 * 1e3
    pool.close()
    transport.shutdown()
    return pct(times, 50), pct(times, 99), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="frames per run (default 300)")
    ap.add_argument("--rate", type=float, default=60.0, help="paced rate for latency (fps)")
    ap.add_argument("--minutes", type=float, default=0.0, help="long run: memory over time")
    ap.add_argument("--mode", choices=MODES, default="ipc+shm/copy", help="mode of --minutes")
    ap.add_argument("--interval", type=float, default=30.0, help="memory print interval (s)")
    args = ap.parse_args()

    mb = H * W * 3 / 1e6
    if args.minutes:
        r = run_pair(args.mode, 0, args.rate, args.minutes, args.interval)
        fps = r["sent"] / r["elapsed"]
        print(f"{args.mode}: {r['sent']} frames in {r['elapsed']:.0f} s = {fps:.0f} fps, "
              f"dropped {r['dropped']}, leaked segments {r['leaked'] or 'none'}")  # fmt: skip
        return

    copies = ", ".join(f"{k} {p50:.2f}/{p99:.2f}" for k, (p50, p99) in memcpy_ms().items())
    print(f"1080p RGB frame: {mb:.1f} MB; one np.copyto p50/p99 ms: {copies}")
    d50, d99, dcpu = descriptor_ms()
    print(f"frame descriptor (ShmRef) send+recv+decode, one thread: wall p50 {d50:.3f} ms, "
          f"p99 {d99:.3f} ms; CPU {dcpu:.3f} ms per descriptor")  # fmt: skip
    print(f"latency: {args.frames} frames paced at {args.rate:g} fps; throughput: "
          f"{args.frames} frames, window {WINDOW}\n")  # fmt: skip
    head = (f"{'mode':<13} | {'hop p50':>8} {'hop p99':>8} | {'total p50':>9} {'total p99':>9} "
            f"| {'fps':>6} {'GB/s':>5} | {'cpu ms/frame':>12} | dropped")  # fmt: skip
    print(head)
    print("-" * len(head))
    for mode in MODES:
        lat = run_pair(mode, args.frames, args.rate)
        thr = run_pair(mode, args.frames, 0.0)
        fps = thr["sent"] / thr["elapsed"]
        print(
            f"{mode:<13} | {pct(lat['hops'], 50):8.3f} {pct(lat['hops'], 99):8.3f} | "
            f"{pct(lat['totals'], 50):9.3f} {pct(lat['totals'], 99):9.3f} | "
            f"{fps:6.0f} {fps * mb / 1e3:5.2f} | "
            f"{thr['prod_cpu'] / thr['sent'] * 1e3:5.2f} "
            f"{thr['cons_cpu'] / thr['sent'] * 1e3:6.2f} | "
            f"{lat['dropped'] + thr['dropped']}"
            + (
                f"  LEAKED {lat['leaked'] + thr['leaked']}"
                if lat["leaked"] or thr["leaked"]
                else ""
            ),
            flush=True,
        )
    print("\n(ms; hop = send() to usable pixels in the consumer; total adds the ring write"
          " and, for /copy, the copy-out; cpu = process CPU time per frame, producer and"
          " consumer, in the throughput run)")  # fmt: skip


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
