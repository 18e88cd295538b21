"""Soak: N RTSP cameras for M minutes, the server SIGKILLed every minute; nothing may leak.

    python3 tests/bench/soak_rtsp.py [--minutes 10] [--cameras 8] [--kill-every-s 60]
                                     [--down-s 3] [--recover-bound-s 20]

Starts the GStreamer RTSP test server (``tests/decode/rtsp_server.py``, needs Debian's
``/usr/bin/python3`` with gst-rtsp-server) serving live test patterns and the real clips from
``../shared/data/media`` looped, and one :class:`CameraSource` per camera in this process.
Every ``--kill-every-s`` the server is SIGKILLed, kept down ``--down-s`` and restarted on the
same port. For every outage it prints how long each camera took from the restart to its first
frame; every 30 s it prints RSS, open file descriptors and threads of this process, so a leak
shows as a trend. Exits 1 if an outage was not recovered within ``--recover-bound-s`` or RSS/fds
grew beyond the tolerances printed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "decode"))
sys.path.insert(0, str(REPO))

from rtsp_harness import RtspServer, gstreamer_missing  # noqa: E402

from stages.decode import CameraConfig, CameraSource, CameraState, DecodedFrame  # noqa: E402

MEDIA = REPO.parent / "shared" / "data" / "media"


class CountingSink:
    def __init__(self) -> None:
        self.frames = 0
        self.last_frame_mono = 0.0
        self.lock = threading.Lock()

    def on_frame(self, frame: DecodedFrame) -> None:
        with self.lock:
            self.frames += 1
            self.last_frame_mono = time.monotonic()

    def on_state(self, camera_id: str, old: CameraState, new: CameraState, reason: str) -> None:
        pass


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--kill-every-s", type=float, default=60.0)
    ap.add_argument("--down-s", type=float, default=3.0)
    ap.add_argument("--recover-bound-s", type=float, default=20.0)
    ap.add_argument("--report-every-s", type=float, default=30.0)
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    reason = gstreamer_missing()
    if reason:
        print(f"SKIP: {reason}")
        return 0

    mounts = ["/live0=live:640x360@25", "/live1=live:320x240@15"]
    for clip in ("car-detection.mp4", "bottle-detection.mp4"):
        if (MEDIA / clip).exists():
            mounts.append(f"/{clip.split('-')[0]}=clip:{MEDIA / clip}")
    paths = [m.split("=")[0] for m in mounts]
    server = RtspServer(mounts)
    cfg_kw = dict(
        open_timeout_s=5.0,
        read_timeout_s=2.0,
        stall_timeout_s=5.0,
        backoff_min_s=0.5,
        backoff_max_s=8.0,
    )
    cams: list[tuple[CameraSource, CountingSink]] = []
    for i in range(args.cameras):
        sink = CountingSink()
        url = server.url(paths[i % len(paths)])
        cams.append((CameraSource(f"cam{i}", CameraConfig(url, **cfg_kw), sink), sink))  # type: ignore[arg-type]
    print(f"soak: {args.cameras} cameras on {paths}, {args.minutes:g} min, server killed "
          f"every {args.kill_every_s:g} s for {args.down_s:g} s; pid {os.getpid()}",
          flush=True)  # fmt: skip
    for cam, _ in cams:
        cam.start()

    t_start = time.monotonic()
    t_end = t_start + args.minutes * 60
    samples: list[tuple[float, float, int, int]] = []
    outages: list[float | None] = []
    next_kill = t_start + args.kill_every_s
    next_report = t_start + min(10.0, args.report_every_s)
    baseline: tuple[float, int] | None = None
    try:
        while time.monotonic() < t_end:
            now = time.monotonic()
            died = server.died()
            if died is not None:
                print(f"!! RTSP server died by itself at {now - t_start:.0f} s ({died}); "
                      "restarting it", flush=True)  # fmt: skip
                server.start()
            if now >= next_report:
                sample = (now - t_start, rss_mib(), open_fds(), threading.active_count())
                samples.append(sample)
                frames = sum(s.frames for _, s in cams)
                states = ",".join(sorted({c.state.value for c, _ in cams}))
                print(f"[{sample[0]:6.0f} s] RSS {sample[1]:7.1f} MiB  fds {sample[2]:4d}  "
                      f"threads {sample[3]:3d}  frames {frames:8d}  states {states}",
                      flush=True)  # fmt: skip
                if baseline is None:
                    baseline = (sample[1], sample[2])
                next_report += args.report_every_s
            if now >= next_kill and now + args.down_s + args.recover_bound_s < t_end:
                server.kill()
                time.sleep(args.down_s)
                server.start()
                t_up = time.monotonic()
                recovered: dict[str, float] = {}
                while time.monotonic() - t_up < args.recover_bound_s and len(recovered) < len(cams):
                    for cam, sink in cams:
                        if cam.camera_id not in recovered and sink.last_frame_mono > t_up:
                            recovered[cam.camera_id] = sink.last_frame_mono - t_up
                    time.sleep(0.05)
                worst = max(recovered.values()) if len(recovered) == len(cams) else None
                outages.append(worst)
                times = " ".join(f"{v:.1f}" for _, v in sorted(recovered.items()))
                status = (
                    f"recovered, slowest {worst:.2f} s" if worst is not None else "NOT RECOVERED"
                )
                print(f"outage {len(outages)} at {now - t_start:.0f} s: {status} "
                      f"({len(recovered)}/{len(cams)} cameras; s after restart: {times})",
                      flush=True)  # fmt: skip
                next_kill = now + args.kill_every_s
            time.sleep(0.2)
    finally:
        for cam, _ in cams:
            cam.stop(timeout_s=10)
        server.close()

    final = (time.monotonic() - t_start, rss_mib(), open_fds(), threading.active_count())
    samples.append(final)
    ok_outages = sum(1 for o in outages if o is not None)
    print(f"\noutages recovered: {ok_outages}/{len(outages)}; slowest recovery "
          f"{max((o for o in outages if o is not None), default=0):.2f} s")  # fmt: skip
    rss_series = [s[1] for s in samples]
    fd_series = [s[2] for s in samples]
    running_last = rss_series[-2] if len(rss_series) > 1 else rss_series[-1]
    print(f"RSS MiB: first {rss_series[0]:.1f}, max {max(rss_series):.1f}, "
          f"last with cameras running {running_last:.1f}")  # fmt: skip
    print(f"open fds: first {fd_series[0]}, max {max(fd_series)}, after stop {fd_series[-1]}")
    # Tolerances: RSS may settle upwards once (allocator arenas, FFmpeg pools) but must not trend.
    half = len(rss_series) // 2
    rss_growth = max(rss_series[half:-1] or rss_series) - max(
        rss_series[1 : half + 1] or rss_series
    )
    fd_growth = max(fd_series[half:-1] or fd_series) - max(fd_series[: half + 1])
    print(f"second half vs first half: RSS {rss_growth:+.1f} MiB, fds {fd_growth:+d}")
    failed = ok_outages < len(outages) or rss_growth > 20 or fd_growth > 2
    print("SOAK " + ("FAILED" if failed else "PASSED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
