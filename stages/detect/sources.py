"""Read what `edgestream detect` is pointed at: one image, a folder of images, or a video.

Frames come out as RGB uint8 arrays: OpenCV reads BGR and is converted once here; PyAV decodes
straight to RGB.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
    """One image file as RGB (H, W, 3) uint8."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SourceError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_files(folder: Path) -> list[Path]:
    """The images of a folder (not its subfolders), sorted by name; at least one."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise SourceError(f"{folder}: folder holds no images ({suffixes})")
    return files


def iter_frames(source: Path, indices: Iterable[int] | None = None) -> Iterator[Frame]:
    """Yield frames of an image, a folder of images (sorted by name) or a video file.

    indices: only the frames at these positions, in order (a folder reads only those files,
    a video stops decoding after the last one); None: every frame.
    """
    wanted = None if indices is None else sorted(set(indices))
    if not source.exists():
        raise SourceError(f"{source}: no such file or folder")
    if source.is_dir():
        files = image_files(source)
        for i in range(len(files)) if wanted is None else [i for i in wanted if i < len(files)]:
            yield Frame(i, files[i].name, read_image(files[i]))
    elif source.suffix.lower() in IMAGE_SUFFIXES:
        if wanted is None or 0 in wanted:
            yield Frame(0, source.name, read_image(source))
    else:
        yield from _iter_video(source, wanted)


def _iter_video(path: Path, wanted: list[int] | None) -> Iterator[Frame]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise SourceError(f"{path}: not a readable image or video ({exc})") from exc
    keep = None if wanted is None else set(wanted)
    with container:
        if not container.streams.video:
            raise SourceError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate) if stream.average_rate else None
        for i, frame in enumerate(container.decode(stream)):
            if keep is None or i in keep:
                yield Frame(i, path.name, frame.to_ndarray(format="rgb24"), fps)
            if wanted is not None and (not wanted or i >= wanted[-1]):
                return  # past the last frame asked for
