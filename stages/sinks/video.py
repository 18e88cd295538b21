"""Annotated H.264 video per camera: boxes, class, track id, one colour per track.

Tracked boxes only by default; ``VideoSinkConfig.untracked`` (``sinks.video.untracked``) also
draws the boxes no track holds, in grey.

Two layers:

- `VideoSink` — ``setup() / process(result, rgb) / close()``: draws a `FrameResult` on the
  frame's pixels and appends it to ``<dir>/<camera>.mp4`` (libx264, yuv420p, through
  `stages.detect.annotate.AnnotatedWriter`). Whoever holds the pixels calls it.
- `FileVideoSink` — ``setup() / process(result) / close()``, the plain sink contract of the
  sink stage: for cameras that are video *files* it recovers the pixels itself with
  `FileFrames`, which decodes the same file again and returns the frame whose decode index is
  the result's ``frame_id`` (`stages.decode.CameraSource` numbers a file's frames 0, 1, ...
  across loops, and decoding is deterministic). The pipeline's messages do not carry pixels
  past the detector (shared-memory slots are recycled long before a frame reaches the sink),
  so live cameras (RTSP...) get no video here: their results are counted as ``no_pixels``.

Frames are written as they are published; frames the pipeline dropped are not in the video,
so a clip with drops plays shorter than real time.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.payloads import FrameResult, TrackedObject
from stages.detect.annotate import AnnotatedWriter

log = logging.getLogger("edgestream.sinks.video")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def track_colour(track_id: int | None) -> tuple[int, int, int]:
    """A stable, well-spread RGB colour per track id (golden-ratio hues); grey for untracked."""
    if track_id is None:
        return (200, 200, 200)
    hue = int((track_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 220, 255]]], dtype=np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_tracks(rgb: np.ndarray, objects: Sequence[TrackedObject], caption: str = "") -> np.ndarray:
    """A copy of ``rgb`` with each object's box and ``class #id score`` label drawn."""
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    scale = max(0.35, min(h, w) / 900)
    for o in objects:
        x1, y1, x2, y2 = (round(v) for v in o.box)
        colour = track_colour(o.track_id)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness)
        tid = "" if o.track_id is None else f" #{o.track_id}"
        label = f"{o.class_name}{tid} {o.score:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y1 if y1 - th - base >= 0 else min(h - 1, y2 + th + base)
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw, ty), colour, -1)
        cv2.putText(img, label, (x1, ty - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)  # fmt: skip
    if caption:
        cv2.putText(img, caption, (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
    return img


REGION_COLOUR = (255, 255, 0)  # RGB: zones and lines, one colour (boxes have one per track)


def draw_regions(
    img: np.ndarray,
    zones: Sequence[tuple[str, np.ndarray]] = (),
    lines: Sequence[tuple[str, np.ndarray]] = (),
    counts: Mapping[str, Mapping[str, Any]] | None = None,
) -> np.ndarray:
    """Draws zones (polygon outlines) and directed lines (with an arrow towards their ``in``
    side) on ``img`` in place, each labelled with its id and live count from ``counts``
    (``{"zones": {...}, "lines": {...}}`` as in a detections message). Points are pixels."""
    h, w = img.shape[:2]
    thickness = max(1, round(min(h, w) / 300))
    scale = max(0.35, min(h, w) / 900)
    counts = counts or {}

    def label(text: str, x: float, y: float) -> None:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x0 = int(min(max(x, 0), max(0, w - tw - 4)))
        y0 = int(min(max(y, th + base + 2), h - 2))
        cv2.rectangle(img, (x0, y0 - th - base - 2), (x0 + tw + 4, y0), (0, 0, 0), -1)
        cv2.putText(img, text, (x0 + 2, y0 - base), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    REGION_COLOUR, 1, cv2.LINE_AA)  # fmt: skip

    for zid, pts in zones:
        poly = np.round(pts).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [poly], True, REGION_COLOUR, thickness, cv2.LINE_AA)
        n = (counts.get("zones") or {}).get(zid, {}).get("occupancy")
        label(f"{zid}: {n}" if n is not None else zid, float(pts[:, 0].min()) + 4,
              float(pts[:, 1].min()) + 16)  # fmt: skip
    for lid, pts in lines:
        a, b = pts[0], pts[1]
        cv2.line(img, (round(a[0]), round(a[1])), (round(b[0]), round(b[1])), REGION_COLOUR,
                 thickness + 1, cv2.LINE_AA)  # fmt: skip
        mid = (a + b) / 2
        d = b - a
        normal = np.array([-d[1], d[0]]) / max(1e-9, float(np.hypot(*d)))  # towards "in"
        tip = mid + normal * max(12.0, min(h, w) / 20)
        cv2.arrowedLine(img, (round(mid[0]), round(mid[1])), (round(tip[0]), round(tip[1])),
                        REGION_COLOUR, thickness, cv2.LINE_AA, tipLength=0.3)  # fmt: skip
        c = (counts.get("lines") or {}).get(lid)
        text = f"{lid}: in {c['in']} out {c['out']}" if c else lid
        label(text, float(mid[0]) + 6, float(mid[1]) - 14)
    return img


@dataclass(frozen=True)
class VideoSinkConfig:
    """dir: output folder (``<dir>/<camera>.mp4``, camera ids made file-safe).
    fps: output frame rate (frames/s); None: 25.
    caption: draw ``camera frame N`` in the corner of every frame.
    untracked: also draw boxes the tracker has not (yet) confirmed, in grey; default: tracked
    boxes only (untracked low-score boxes overlap the tracked ones and clutter the video).
    """

    dir: Path
    fps: float | None = None
    caption: bool = True
    untracked: bool = False

    def __post_init__(self) -> None:
        if self.fps is not None and not 0 < self.fps <= 1000:
            raise ValueError(f"video sink fps must be in (0, 1000], got {self.fps}")


class VideoSink:
    """``setup() / process(result, rgb) / close()``: one annotated H.264 file per camera."""

    def __init__(self, config: VideoSinkConfig) -> None:
        self.config = config
        self._writers: dict[str, AnnotatedWriter] = {}
        self._size: dict[str, tuple[int, int]] = {}
        self.written: Counter[str] = Counter()

    def setup(self) -> None:
        Path(self.config.dir).mkdir(parents=True, exist_ok=True)

    def path_for(self, camera: str) -> Path:
        return Path(self.config.dir) / f"{_UNSAFE.sub('_', camera)}.mp4"

    def process(self, result: FrameResult, rgb: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        cam = result.camera
        caption = f"{cam}  frame {result.frame_id}" if self.config.caption else ""
        objects = result.objects
        if not self.config.untracked:
            objects = [o for o in objects if o.track_id is not None]
        img = draw_tracks(rgb, objects, caption)
        size = self._size.setdefault(cam, (img.shape[1], img.shape[0]))
        if (img.shape[1], img.shape[0]) != size:  # a camera that changed resolution
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        writer = self._writers.get(cam)
        if writer is None:
            writer = self._writers[cam] = AnnotatedWriter(self.path_for(cam), self.config.fps)
        writer.write(img)
        self.written[cam] += 1

    def close(self) -> None:
        for cam, writer in list(self._writers.items()):
            try:
                writer.close()
            except Exception:
                log.exception("video sink: closing %s failed", self.path_for(cam))
        self._writers.clear()

    def stats(self) -> dict[str, Any]:
        return {"written": dict(self.written)}


class FileFrames:
    """The frames of a video file by decode index, looping like ``CameraSource(loop=True)``.

    Reads forward only: asking for an index behind the current position returns None (results
    of one camera arrive in frame order, so this happens only after a restart of the sink).
    Skipped indices are decoded and discarded, which costs about 1 ms per 640x384 frame.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        self._container: Any = None
        self._frames: Iterator[Any] | None = None
        self._next = 0  # decode index of the next frame the iterator yields
        self._pass_start = 0
        self.pass_length: int | None = None  # frames per pass, known after the first one

    def _open(self) -> None:
        import av

        self.close()
        self._container = av.open(str(self.path))
        self._frames = self._container.decode(video=0)

    def get(self, frame_id: int) -> np.ndarray | None:
        if frame_id < self._next:
            return None
        if self.pass_length and frame_id - self._next > self.pass_length:
            # far ahead (drops): jump whole passes instead of decoding them
            skip = (frame_id - self._next) // self.pass_length * self.pass_length
            self._next += skip
            self._pass_start += skip
        while True:
            if self._frames is None:
                self._open()
            assert self._frames is not None
            frame = next(self._frames, None)
            if frame is None:  # end of a pass: loop
                length = self._next - self._pass_start
                if length == 0:
                    raise ValueError(f"{self.path}: no decodable video frames")
                self.pass_length = self.pass_length or length
                self._pass_start = self._next
                self._frames = None
                continue
            index = self._next
            self._next += 1
            if index == frame_id:
                return np.asarray(frame.to_ndarray(format="rgb24"))

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._frames = None


class FileVideoSink:
    """``setup() / process(result) / close()``: annotated videos for file cameras.

    cameras: camera id → video file path; results of other cameras are counted under
    ``no_pixels`` (a warning once per camera) and not written.
    """

    def __init__(self, config: VideoSinkConfig, cameras: Mapping[str, Path | str]) -> None:
        self.video = VideoSink(config)
        self.files = {cam: Path(p) for cam, p in cameras.items()}
        self._frames: dict[str, FileFrames] = {}
        self.no_pixels: Counter[str] = Counter()
        self.missed: Counter[str] = Counter()  # results whose frame could not be recovered

    def setup(self) -> None:
        self.video.setup()
        for cam, path in self.files.items():
            self._frames[cam] = FileFrames(path)

    def process(self, result: FrameResult) -> None:
        frames = self._frames.get(result.camera)
        if frames is None:
            if not self.no_pixels[result.camera]:
                log.warning("video sink: camera %s is not a video file: no annotated video "
                            "(the pixels do not travel to the sink)", result.camera)  # fmt: skip
            self.no_pixels[result.camera] += 1
            return
        rgb = frames.get(result.frame_id)
        if rgb is None:
            self.missed[result.camera] += 1
            return
        self.video.process(result, rgb)

    def close(self) -> None:
        for f in self._frames.values():
            f.close()
        self.video.close()

    def stats(self) -> dict[str, Any]:
        return {
            **self.video.stats(),
            "no_pixels": dict(self.no_pixels),
            "missed": dict(self.missed),
        }
