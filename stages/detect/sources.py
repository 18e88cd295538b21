"""Read what `edgestream detect` is pointed at: one image, a folder of images, or a video.

Frames come out as RGB uint8 arrays: OpenCV reads BGR and is converted once here; PyAV decodes
straight to RGB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source: frame number of a video, rank in a sorted folder
    name: str  # file name, or the video's name for each of its frames
    rgb: np.ndarray  # (H, W, 3) uint8
    fps: float | None = None  # set for video frames


class SourceError(ValueError):
    """The detect source cannot be read; the message says why."""


def read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def iter_frames(source: Path) -> Iterator[Frame]:
    """Yield frames of an image, a folder of images (sorted by name) or a video file."""
    if not source.exists():
        raise SourceError(f"{source}: no such file or folder")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{source}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for i, p in enumerate(files):
            yield Frame(i, p.name, read_image(p))
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        yield Frame(0, source.name, read_image(source))
    else:
        yield from _iter_video(source)


def _iter_video(path: Path) -> Iterator[Frame]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise SourceError(f"{path}: not a readable image or video ({exc})") from exc
    with container:
        if not container.streams.video:
            raise SourceError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else None
        for i, frame in enumerate(container.decode(stream)):
            yield Frame(i, path.name, frame.to_ndarray(format="rgb24"), fps)
