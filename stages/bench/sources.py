"""What the bench's cameras play: synthetic scenes, a video file, or a live URL.

- ``synthetic``: street scenes written by `stages.synth` (the demo's scenes, `stages.demo.scenes`),
  a few distinct ones cycled over the cameras, cached under the bench's work folder; each is
  played as a live camera (a file source with ``loop: true`` under the live policy: frames
  leave at the file's frame rate, the newest frame wins).
- a video FILE: every camera plays it the same way.
- ``rtsp`` (or ``rtsp:FILE``): the synthetic scenes (the FILE) served over RTSP by a local
  GStreamer server, one mount per camera (`stages.bench.rtsp`);
- a URL (``rtsp://``, ``http(s)://``): every camera opens it (``{index}`` in it becomes the
  camera's number, 1, 2, ...: one mount per camera); the source paces itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SYNTHETIC = "synthetic"
DEFAULT_SCENES = 4  # distinct synthetic scenes, cycled over the cameras
DEFAULT_SIZE = (1280, 720)  # synthetic scene width x height (a 720p camera)
SCENE_FPS = 25.0


def default_workdir() -> Path:
    """``$XDG_CACHE_HOME/edgestream/bench`` (scenes and run folders)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgestream" / "bench"


@dataclass(frozen=True)
class Source:
    """kind: synthetic | file | url. urls: cycled over the cameras. fps: the source's own frame
    rate when known (files), else None. label: for tables and JSON."""

    kind: str
    urls: tuple[str, ...]
    fps: float | None
    label: str
    server: Any = field(default=None, compare=False)  # the local RTSP server (`close()` it)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    @property
    def is_file(self) -> bool:
        """Files are played in real time and looped; a URL is live by itself."""
        return self.kind != "url"

    def camera_urls(self, cameras: int) -> list[str]:
        """One url per camera: the urls cycled; ``{index}`` in a URL becomes 1, 2, ..."""
        return [
            self.urls[i % len(self.urls)].replace("{index}", str(i + 1)) for i in range(cameras)
        ]


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``, with a clear error."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or min(size) < 64 or max(size) > 8192 or any(v % 2 for v in size):
        raise ValueError(f"--size {text!r}: give WIDTHxHEIGHT, even numbers 64..8192 (1280x720)")
    return size


def resolve_source(
    spec: str,
    workdir: Path,
    size: tuple[int, int] = DEFAULT_SIZE,
    scene_seconds: float = 20.0,
    scenes: int = DEFAULT_SCENES,
    cameras: int = 1,
) -> Source:
    """The `Source` for ``--source SPEC`` (synthetic scenes are written now if not cached;
    ``rtsp`` / ``rtsp:FILE`` start the local RTSP server with ``cameras`` mounts)."""
    if spec == "rtsp" or (spec.startswith("rtsp:") and "://" not in spec):
        from stages.bench.rtsp import RtspServer

        inner = SYNTHETIC if spec == "rtsp" else spec[len("rtsp:") :]
        media = resolve_source(inner, workdir, size, scene_seconds, scenes)
        server = RtspServer(media.urls, cameras)
        label = f"{media.label} over RTSP (local GStreamer server, a mount per camera)"
        return Source("url", (server.url_template,), media.fps, label, server)
    if spec == SYNTHETIC:
        from stages.demo.scenes import ensure_scenes

        paths = ensure_scenes(Path(workdir), scenes, scene_seconds, size=size, fps=SCENE_FPS)
        label = (
            f"synthetic {size[0]}x{size[1]}@{SCENE_FPS:g} ({scenes} scenes of {scene_seconds:g} s)"
        )
        return Source("synthetic", tuple(str(p) for p in paths), SCENE_FPS, label)
    if "://" in spec:
        from pipeline.redact import redact_url

        return Source("url", (spec,), None, redact_url(spec))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ValueError(f"--source {spec}: no such file (give synthetic, a video file or a URL)")
    fps, w, h = probe(path)
    return Source("file", (str(path.resolve()),), fps, f"{path.name} {w}x{h}@{fps:g}")


def probe(path: Path) -> tuple[float, int, int]:
    """(frame rate, width, height) of a video file; ValueError when it has no video."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"--source {path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or SCENE_FPS)
            return rate, int(stream.codec_context.width), int(stream.codec_context.height)
    except av.error.FFmpegError as exc:
        raise ValueError(f"--source {path}: cannot read it as video ({exc})") from None


def sample_frames(source: Source, n: int = 8) -> list[np.ndarray]:
    """The first ``n`` frames (RGB) of the source's first url: real content for the bare
    model, so its postprocess sees as many boxes as in the pipeline."""
    import av

    try:
        frames = list(_frames(source.camera_urls(1)[0], n))
    except av.error.FFmpegError as exc:
        raise ValueError(f"--source {source.label}: cannot read it ({exc})") from None
    if not frames:
        raise ValueError(f"--source {source.label}: no frame could be decoded")
    return frames


def _frames(url: str, n: int) -> Iterator[np.ndarray]:
    import av

    with av.open(url, timeout=(10.0, 10.0)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= n:
                return
            yield frame.to_ndarray(format="rgb24")
