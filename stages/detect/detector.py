"""Images in, detections in source pixels out: letterbox → backend → inverse mapping.

`Detector` is what the CLI and the pipeline's detect stage use; it knows nothing of files or
sockets. It owns one uint8 batch slab of ``max_batch`` images that is reused for every call, so
steady-state detection allocates no image-sized memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stages.detect.appearance import describe
from stages.detect.classes import class_names_for
from stages.detect.preprocess import letterbox_batch, resize_to_for
from stages.detect.types import Backend, Detections


class Detector:
    """Run a backend over RGB images of any size.

    backend: any `Backend` (torch, onnxruntime, tensorrt). Its ``max_batch`` bounds how many
        images go through one inference call; longer inputs are split into chunks.
    """

    def __init__(self, backend: Backend, class_names: Sequence[str] | None = None) -> None:
        self.backend = backend
        num_classes = backend.info.num_classes or 80
        self.class_names = class_names_for(
            num_classes, list(class_names or backend.info.class_names or [])
        )
        h, w = backend.info.input_hw
        self._slab = np.empty((backend.max_batch, 3, h, w), np.uint8)
        self._resize_to = resize_to_for((h, w))

    def detect(self, images_rgb: Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in RGB uint8 (H, W, 3) images; boxes come back in each image's pixels.

        Decoded video frames must be converted to RGB before this call: feeding BGR costs the
        reference model ~3.4 mAP on COCO.
        """
        return [det for det, _ in self._run(images_rgb, appearance=False)]

    def detect_with_features(
        self, images_rgb: Sequence[np.ndarray]
    ) -> list[tuple[Detections, np.ndarray]]:
        """`detect`, plus each detection's appearance descriptor for the tracker, computed as
        the pipeline's detect stage does (`stages.detect.appearance`, on the letterboxed image)."""
        return self._run(images_rgb, appearance=True)

    def _run(
        self, images_rgb: Sequence[np.ndarray], appearance: bool
    ) -> list[tuple[Detections, np.ndarray]]:
        """Detections with their (k, DIM) descriptors, or (k, 0) arrays without ``appearance``
        (the pipeline's convention for "none", as in `DetectionsMsg.features`)."""
        out: list[tuple[Detections, np.ndarray]] = []
        step = self.backend.max_batch
        for start in range(0, len(images_rgb), step):
            chunk = images_rgb[start : start + step]
            batch, metas = letterbox_batch(
                chunk,
                out=self._slab[: len(chunk)],
                input_hw=self.backend.info.input_hw,
                resize_to=self._resize_to,
            )
            dets = self.backend.infer(batch)
            if appearance:
                feats = describe(batch, [det.boxes for det in dets])
            else:
                feats = [np.zeros((len(det.scores), 0), np.float32) for det in dets]
            for det, meta, feat in zip(dets, metas, feats, strict=True):
                out.append((Detections(meta.to_source(det.boxes), det.scores, det.class_ids), feat))
        return out

    def close(self) -> None:
        self.backend.close()
