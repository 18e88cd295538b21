"""Plain data passed between the detect stage's parts: one dataclass in, one out.

Coordinates are always xyxy floats. `Detections` in *input* space (the 640x640 letterboxed
tensor) come out of a backend; `Detections` in *source* space (the camera image) come out of
`Detector.detect` after `pipeline.payloads.LetterboxMeta.to_source` undoes the resize and
padding (the runtime carries that from preprocess to detect, so it lives in `pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class NMSParams:
    """Postprocessing knobs; the defaults are those of the reference ``predict()``.

    conf: score threshold. Lower finds more small/occluded objects and more false positives.
    iou: IoU above which a lower-scored box of the same class is suppressed. 0.7 keeps
        crowded objects apart; lower merges neighbours more aggressively.
    multi_label: one box may yield several (class, score) pairs; costs a little more NMS work.
    top_k: candidates kept (by score) before NMS; bounds NMS cost on noisy frames.
    max_det: detections returned per image after NMS.
    """

    conf: float = 0.25
    iou: float = 0.7
    multi_label: bool = True
    top_k: int = 1024
    max_det: int = 300


@dataclass(frozen=True)
class Detections:
    """Detections of one image. ``boxes`` (N, 4) float32 xyxy, ``scores`` (N,) float32,
    ``class_ids`` (N,) int64, ordered by decreasing score."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
        )


@dataclass
class ModelInfo:
    """What a weights file says about itself (all optional in the file).

    `stages.detect.describe.describe` fills every field it can read; a backend fills the
    first four. format: "torch" | "safetensors" | "onnx" | "tensorrt". backend: the one that
    runs this format ("torch" | "onnxruntime" | "tensorrt"; None for an ONNX that only a
    TensorRT engine built from it runs). nms: in-graph NMS of an export or engine ("none" |
    "onnx" | "tensorrt"; None for checkpoints, whose NMS always runs outside).
    """

    arch: str | None = None
    num_classes: int | None = None
    class_names: list[str] = field(default_factory=list)
    input_hw: tuple[int, int] = (640, 640)
    format: str | None = None
    backend: str | None = None
    nms: str | None = None


class Backend(Protocol):
    """One inference engine. ``infer`` takes a uint8 RGB NCHW batch of letterboxed images
    (B <= max_batch) and returns one `Detections` per image in model-input pixels."""

    name: str
    max_batch: int
    info: ModelInfo

    def infer(self, batch: np.ndarray) -> list[Detections]: ...

    def close(self) -> None: ...
