"""Dataset loaders (YOLO, COCO) and the augmentation geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from toy_data import NAMES, write_coco, write_yolo

from stages.detect.preprocess import letterbox_geometry, resize_to_for
from stages.detect.train.data import (
    NO_AUGMENT,
    Augment,
    DatasetError,
    TrainDataset,
    collate,
    load_coco_split,
    load_dataset,
)


def test_yolo_loader_reads_boxes_in_pixels(tmp_path: Path) -> None:
    yaml_path = write_yolo(tmp_path, n_train=3, n_val=2)
    data = load_dataset(yaml_path)
    assert data.class_names == NAMES
    assert len(data.train) == 3 and len(data.val) == 2
    s = data.train[0]
    line = (tmp_path / "labels" / "train" / "00000.txt").read_text().split("\n")[0].split()
    cx, cy, w, h = (float(v) for v in line[1:])
    assert s.boxes[0] == pytest.approx(
        [(cx - w / 2) * 160, (cy - h / 2) * 120, (cx + w / 2) * 160, (cy + h / 2) * 120], abs=1e-3
    )
    assert s.classes[0] == int(line[0])


def test_yolo_loader_errors(tmp_path: Path) -> None:
    yaml_path = write_yolo(tmp_path, n_train=2, n_val=1)
    (tmp_path / "labels" / "train" / "00000.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match="class id 7"):
        load_dataset(yaml_path)
    (tmp_path / "labels" / "train" / "00000.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(DatasetError, match="5 numbers"):
        load_dataset(yaml_path)
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing.yaml")
    with pytest.raises(DatasetError, match="needs --val"):
        load_dataset(tmp_path / "x.json")


def test_coco_loader_maps_categories_in_id_order(tmp_path: Path) -> None:
    ann = write_coco(tmp_path, n=4)
    samples, names = load_coco_split(ann)
    assert names == NAMES  # ids 3, 7, 9 -> 0, 1, 2 whatever the file order
    import json

    coco = json.loads(ann.read_text())
    first = [a for a in coco["annotations"] if a["image_id"] == 100]
    x, y, w, h = first[0]["bbox"]
    assert samples[0].boxes[0].tolist() == pytest.approx([x, y, x + w, y + h])
    assert samples[0].classes[0] == {3: 0, 7: 1, 9: 2}[first[0]["category_id"]]
    assert samples[0].image_id == 100
    data = load_dataset(ann, ann)
    assert len(data.train) == len(data.val) == 4
    (tmp_path / "images" / "001.png").unlink()
    with pytest.raises(DatasetError, match=r"001\.png not found"):
        load_coco_split(ann)


def test_unaugmented_sample_is_the_inference_letterbox(tmp_path: Path) -> None:
    data = load_dataset(write_yolo(tmp_path, n_train=2, n_val=1))
    hw = (96, 96)
    ds = TrainDataset(data.train, hw, resize_to_for(hw), NO_AUGMENT)
    img, target = ds[0]
    assert img.shape == (3, 96, 96) and img.dtype == torch.uint8
    _new_h, _new_w, meta = letterbox_geometry(120, 160, hw, resize_to_for(hw))
    expect = data.train[0].boxes * meta.scale
    expect[:, [0, 2]] += meta.pad_left
    expect[:, [1, 3]] += meta.pad_top
    assert target[:, 1:].numpy() == pytest.approx(expect, abs=1e-3)
    cached = TrainDataset(data.train, hw, resize_to_for(hw), NO_AUGMENT, cache=True)
    assert torch.equal(cached[0][0], img) and torch.equal(cached[0][0], img)
    assert int(img[:, 0, 0].float().mean()) == 114  # padding row


def test_augmentations_keep_boxes_on_the_objects(tmp_path: Path) -> None:
    data = load_dataset(write_yolo(tmp_path, n_train=6, n_val=1))
    ds = TrainDataset(data.train, (96, 96), 92, Augment(flip=1.0, mosaic=0.5), seed=3)
    for i in range(len(ds)):
        img, target = ds[i]
        assert (target[:, 3] > target[:, 1]).all() and (target[:, 4] > target[:, 2]).all()
        assert target[:, 1:].min() >= 0 and target[:, 1:].max() <= 96
        again, t2 = ds[i]  # same (seed, epoch, index) -> same sample
        assert torch.equal(img, again) and torch.equal(target, t2)
    images, targets = collate([ds[0], ds[1]])
    assert images.shape == (2, 3, 96, 96)
    assert targets.shape[1] == 6 and set(np.unique(targets[:, 0].numpy())) <= {0.0, 1.0}


def test_test_only_dataset_and_missing_splits(tmp_path: Path) -> None:
    write_yolo(tmp_path, n_train=2, n_val=2)
    (tmp_path / "test.yaml").write_text(
        f"path: {tmp_path}\ntest: images/val\nnames: [square, disc, bar]\n"
    )
    data = load_dataset(tmp_path / "test.yaml")
    assert len(data.split("test")) == 2
    with pytest.raises(DatasetError, match="no 'train' split"):
        data.split("train")
    (tmp_path / "none.yaml").write_text("names: [a]\n")
    with pytest.raises(DatasetError, match="no 'train', 'val' or 'test'"):
        load_dataset(tmp_path / "none.yaml")
