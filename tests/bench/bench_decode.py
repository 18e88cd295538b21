"""Decode throughput per core, 720p and 1080p H.264: PyAV / CameraSource vs ``ffmpeg -threads 1``.

    python3 tests/bench/bench_decode.py [--frames 600] [--repeat 3] [--workdir /tmp/bench_decode]

Makes the test files first (real footage: ``../shared/data/media/car-detection.mp4`` scaled to
1280x720 and 1920x1080, libx264 High profile, ``veryfast``, GOP 50 — what an IP camera sends;
a generated pattern when the clip is absent), then times, each in one decoder thread:

- ``ffmpeg -benchmark -threads 1 -i FILE -f null -`` (the reference; frames / (utime+stime));
- PyAV decode only (``codec_context.thread_count = 1``);
- PyAV decode + ``to_ndarray(format="rgb24")`` (what the detector needs);
- :class:`~stages.decode.CameraSource` end to end (offline file, ``decoder_threads=1``,
  null sink): demux, decode, RGB conversion, frame objects, state machine.

"fps/core" divides frames by the process CPU time (user+system), so it does not depend on how
busy the machine is; "fps wall" is throughput on this machine at the time. The median of
``--repeat`` runs is printed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "decode"))

from stages.decode import CameraConfig, CameraSource, CameraState, DecodedFrame  # noqa: E402

MEDIA = REPO.parent / "shared" / "data" / "media" / "car-detection.mp4"
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


def make_file(path: Path, width: int, height: int, frames: int) -> Path:
    if path.exists():
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg and MEDIA.exists():
        cmd = [ffmpeg, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(MEDIA), "-an",
               "-vf", f"scale={width}:{height}", "-frames:v", str(frames), "-c:v", "libx264",
               "-preset", "veryfast", "-profile:v", "high", "-g", "50", "-pix_fmt", "yuv420p",
               str(path)]  # fmt: skip
        subprocess.run(cmd, check=True)
    else:
        from rtsp_harness import make_clip

        make_clip(path, width=width, height=height, frames=frames, gop=50)
    return path


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """(frames, wall s, process CPU s) of one call."""
    c0, w0 = time.process_time(), time.perf_counter()
    n = fn()
    return n, time.perf_counter() - w0, time.process_time() - c0


def pyav_decode(path: Path, rgb: bool) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        n = 0
        for frame in c.decode(s):
            if rgb:
                frame.to_ndarray(format="rgb24")
            n += 1
        return n


class _NullSink:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.frames = 0

    def on_frame(self, frame: DecodedFrame) -> None:
        self.frames += 1

    def on_state(self, camera_id: str, old: CameraState, new: CameraState, reason: str) -> None:
        if new == CameraState.STOPPED:
            self.done.set()


def camera_source(path: Path) -> int:
    sink = _NullSink()
    cfg = CameraConfig(str(path), realtime=False, decoder_threads=1)
    src = CameraSource("bench", cfg, sink)
    src.start()
    sink.done.wait(600)
    src.stop()
    return sink.frames


def ffmpeg_bench(path: Path) -> tuple[int, float, float]:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("ffmpeg")
    cmd = [ffmpeg, "-hide_banner", "-nostats", "-benchmark", "-threads", "1", "-i", str(path),
           "-f", "null", "-"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    bench = re.search(r"bench: utime=([\d.]+)s stime=([\d.]+)s rtime=([\d.]+)s", out)
    frames = re.findall(r"frame=\s*(\d+)", out)
    if not bench:
        raise RuntimeError(f"no bench line in ffmpeg output:\n{out[-2000:]}")
    n = int(frames[-1]) if frames else 0
    if n == 0:  # -nostats hides the progress line on some builds: count with ffprobe-free PyAV
        with av.open(str(path)) as c:
            n = sum(1 for _ in c.demux(video=0)) - 1
    return n, float(bench.group(3)), float(bench.group(1)) + float(bench.group(2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_decode"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); ffmpeg CLI: "
          f"{shutil.which('ffmpeg') or 'not found'}")  # fmt: skip
    rows: list[tuple[str, str, int, float, float]] = []
    for label, (w, h) in SIZES.items():
        path = make_file(args.workdir / f"h264_{label}_{args.frames}.mp4", w, h, args.frames)
        runners: dict[str, Callable[[], tuple[int, float, float]]] = {
            "ffmpeg -threads 1 (decode)": lambda p=path: ffmpeg_bench(p),
            "PyAV decode": lambda p=path: timed(lambda: pyav_decode(p, rgb=False)),
            "PyAV decode+rgb24": lambda p=path: timed(lambda: pyav_decode(p, rgb=True)),
            "CameraSource (decode+rgb24)": lambda p=path: timed(lambda: camera_source(p)),
        }
        for name, run in runners.items():
            try:
                results = [run() for _ in range(args.repeat)]
            except FileNotFoundError:
                print(f"{label} {name}: skipped (ffmpeg not installed)")
                continue
            n = results[0][0]
            wall = statistics.median(r[1] for r in results)
            cpu = statistics.median(r[2] for r in results)
            rows.append((label, name, n, n / wall, n / cpu if cpu > 0 else float("nan")))
    print(f"\n{'size':6} {'decoder':30} {'frames':>6} {'fps wall':>9} {'fps/core':>9}")
    for label, name, n, fps_wall, fps_core in rows:
        print(f"{label:6} {name:30} {n:6d} {fps_wall:9.0f} {fps_core:9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
