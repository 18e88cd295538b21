"""Draw detections on frames and write them as an image or an H.264 video."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from stages.detect.types import Detections

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi"})


def _colour(class_id: int) -> tuple[int, int, int]:
    # A fixed, well-spread hue per class so the same class keeps its colour across frames.
    hue = (class_id * 47) % 180
    hsv = np.array([[[hue, 200, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw(rgb: np.ndarray, det: Detections, class_names: list[str]) -> np.ndarray:
    """Return a copy of ``rgb`` with boxes and ``name score`` labels drawn."""
    img = np.ascontiguousarray(rgb).copy()
    thickness = max(1, round(min(img.shape[:2]) / 400))
    for box, score, cls in zip(det.boxes, det.scores, det.class_ids, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        colour = _colour(int(cls))
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness)
        label = f"{class_names[int(cls)]} {float(score):.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y_text = max(y1, th + base)
        cv2.rectangle(img, (x1, y_text - th - base), (x1 + tw, y_text), colour, -1)
        cv2.putText(
            img,
            label,
            (x1, y_text - base),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return img


class AnnotatedWriter:
    """Writes annotated frames: the first frame to an image file, or all frames to a video.

    Video is H.264 (libx264, ``crf`` 23, yuv420p) so every player opens it; odd frame sizes are
    padded by one pixel because yuv420p needs even dimensions.
    """

    def __init__(self, path: Path, fps: float | None = None) -> None:
        self.path = path
        self.fps = fps or 25.0
        self.is_video = path.suffix.lower() in VIDEO_SUFFIXES
        self._container: Any = None
        self._stream: Any = None
        self._written = 0

    def write(self, rgb: np.ndarray) -> None:
        if not self.is_video:
            ok = self._written > 0 or cv2.imwrite(
                str(self.path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            )
            if not ok:
                raise OSError(f"{self.path}: could not write image (unknown extension?)")
            self._written += 1
            return
        from fractions import Fraction

        import av

        h, w = rgb.shape[:2]
        if self._container is None:
            self._container = av.open(str(self.path), mode="w")
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = w + (w % 2), h + (h % 2)
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": "23", "preset": "veryfast"}
        if w % 2 or h % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self._written += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None

    def __enter__(self) -> AnnotatedWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
