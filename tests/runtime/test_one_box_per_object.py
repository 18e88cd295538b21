"""The runtime's defaults publish one box per object, and a camera's ``classes`` filter.

`edgestream detect` and the parity tests keep the reference's multi-label default
(`NMSParams()`); the runtime's `model.multi_label` defaults to false.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipeline.config import ConfigError, validate_config
from pipeline.messages import DetectionsMsg, TrackedMsg
from pipeline.procs import class_filter_of, nms_params
from stages.detect.postprocess_np import postprocess_np
from stages.detect.types import NMSParams
from stages.track.pipeline_stage import OrderedTrackConfig, OrderedTrackStage

NAMES = ["person", "car", "bicycle"]


def config(**extra: Any) -> Any:
    data: dict[str, Any] = {
        "model": {"random_weights": True, "arch": "yolo_nas_n"},
        "cameras": [
            {"id": "a", "url": "rtsp://192.0.2.1/s"},
            {"id": "b", "url": "rtsp://192.0.2.2/s"},
        ],
        "sinks": {"jsonl": {"path": "out/{camera}.jsonl"}},
    }
    data.update(extra)
    return validate_config(data, check_files=False)


def test_one_object_gives_one_box_with_the_runtime_defaults() -> None:
    # one car that the model also scores as person and bicycle above conf (the case of
    # issue 16: a white car published as person, car and bicycle at once)
    boxes = np.array([[[10, 10, 60, 40], [11, 10, 61, 41], [200, 200, 210, 210]]], np.float32)
    scores = np.array([[[0.30, 0.36, 0.28], [0.29, 0.35, 0.27], [0.0, 0.0, 0.0]]], np.float32)
    params = nms_params(config())
    assert params.multi_label is False
    (det,) = postprocess_np(boxes, scores, params)
    assert det.class_ids.tolist() == [1] and det.scores.tolist() == [np.float32(0.36)]
    # the reference default (detect CLI, parity) keeps a box per class above conf
    (ref,) = postprocess_np(boxes, scores, NMSParams())
    assert sorted(ref.class_ids.tolist()) == [0, 1, 2]
    on = nms_params(config(model={"random_weights": True, "arch": "yolo_nas_n",
                                  "multi_label": True}))  # fmt: skip
    assert on.multi_label is True


def test_classes_resolve_by_name_or_id_per_camera() -> None:
    cfg = config(
        camera_defaults={"classes": ["car"]},
        cameras=[
            {"id": "a", "url": "rtsp://192.0.2.1/s"},
            {"id": "b", "url": "rtsp://192.0.2.2/s", "classes": ["person", 2]},
        ],
    )
    assert class_filter_of(cfg, NAMES) == {"a": frozenset({1}), "b": frozenset({0, 2})}
    assert class_filter_of(config(), NAMES) == {}  # no filter: every class


def test_unknown_classes_are_refused_with_their_key_path() -> None:
    cfg = config(cameras=[{"id": "a", "url": "rtsp://192.0.2.1/s", "classes": ["truck", 7]}])
    with pytest.raises(ConfigError) as info:
        class_filter_of(cfg, NAMES)
    assert info.value.problems == [
        "cameras[0].classes: the model has no class 'truck' (person, car, bicycle)",
        "cameras[0].classes: no class id 7 (0..2)",
    ]


def test_an_empty_classes_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="classes"):
        config(camera_defaults={"classes": []})


def test_the_track_stage_drops_unwanted_classes_before_tracking() -> None:
    stage = OrderedTrackStage(OrderedTrackConfig(class_names=NAMES, classes={"a": frozenset({1})}))
    stage.setup()
    boxes = np.array([[10, 10, 50, 80], [100, 10, 150, 80], [200, 10, 250, 80]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 1, 2], np.int64)
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    a = DetectionsMsg("a", 0, 0, 1000.0, 640, 480, boxes, scores, classes, features=feats)
    b = DetectionsMsg("b", 0, 0, 1000.0, 640, 480, boxes, scores, classes)
    (ta,) = stage.process(a)
    (tb,) = stage.process(b)
    stage.close()
    assert isinstance(ta, TrackedMsg) and isinstance(tb, TrackedMsg)
    assert [o.class_name for o in ta.objects] == ["car"]
    assert ta.objects[0].box == (100.0, 10.0, 150.0, 80.0)
    assert [o.class_name for o in tb.objects] == NAMES  # camera b has no filter
