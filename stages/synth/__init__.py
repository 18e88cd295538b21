"""Synthetic multi-object videos with exact ground truth (issue 7).

- :func:`generate_scene` streams ``(rgb, objects)`` frames without touching disk.
- :func:`write_video_set` writes H.264 videos, MOTChallenge gt and a YOLO dataset.
"""

from stages.synth.scene import (
    CLASS_NAMES,
    MOT_CLASS,
    Scene,
    SceneConfig,
    SynthObject,
    generate_scene,
)
from stages.synth.writer import (
    MIN_BOX_PX,
    MIN_VISIBILITY,
    decode_video,
    encode_video,
    gt_lines,
    scene_seed,
    write_video_set,
    yolo_lines,
)

__all__ = [
    "CLASS_NAMES",
    "MIN_BOX_PX",
    "MIN_VISIBILITY",
    "MOT_CLASS",
    "Scene",
    "SceneConfig",
    "SynthObject",
    "decode_video",
    "encode_video",
    "generate_scene",
    "gt_lines",
    "scene_seed",
    "write_video_set",
    "yolo_lines",
]
