"""YOLO-NAS in plain PyTorch, state_dict-compatible with super-gradients 3.7.1."""

from stages.detect.nn.head import RawOutputs
from stages.detect.nn.yolo_nas import (
    ARCHS,
    YOLO_NAS_L,
    YOLO_NAS_M,
    YOLO_NAS_N,
    YOLO_NAS_S,
    StageSpec,
    YoloNAS,
    YoloNASArch,
    yolo_nas_l,
    yolo_nas_m,
    yolo_nas_n,
    yolo_nas_s,
)

__all__ = [
    "ARCHS",
    "YOLO_NAS_L",
    "YOLO_NAS_M",
    "YOLO_NAS_N",
    "YOLO_NAS_S",
    "RawOutputs",
    "StageSpec",
    "YoloNAS",
    "YoloNASArch",
    "yolo_nas_l",
    "yolo_nas_m",
    "yolo_nas_n",
    "yolo_nas_s",
]
