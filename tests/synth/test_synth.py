"""Synthetic scenes: determinism, ground-truth formats, visibility, entering/leaving, CLI."""

from __future__ import annotations

import argparse
import configparser
from pathlib import Path

import av
import numpy as np
import pytest

from stages.synth import (
    CLASS_NAMES,
    MIN_BOX_PX,
    MIN_VISIBILITY,
    Scene,
    SceneConfig,
    generate_scene,
    write_video_set,
)
from stages.synth import cli as synth_cli

SMALL = (320, 192)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_video_set(out, seed=3, videos=2, seconds=3, size=SMALL, every=5, val_videos=1)
    return out


def _tree_bytes(root: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob(pattern))}


def test_same_seed_gives_identical_gt_and_labels(written: Path, tmp_path: Path) -> None:
    write_video_set(tmp_path, seed=3, videos=2, seconds=3, size=SMALL, every=5, val_videos=1)
    for pattern in ("mot/*/gt/gt.txt", "mot/*/seqinfo.ini", "dataset/*/labels/*.txt"):
        a, b = _tree_bytes(written, pattern), _tree_bytes(tmp_path, pattern)
        assert a and a == b, pattern


def test_pixels_are_deterministic_and_seeds_differ() -> None:
    a = [f for f, _ in generate_scene(11, seconds=0.4, size=SMALL)]
    b = [f for f, _ in generate_scene(11, seconds=0.4, size=SMALL)]
    c = [f for f, _ in generate_scene(12, seconds=0.4, size=SMALL)]
    assert len(a) == 10 and a[0].shape == (192, 320, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[9])  # lighting, noise and motion change the frames


def test_gt_parses_back_to_the_api_objects(written: Path) -> None:
    seq = written / "mot" / "synth-s3-000"
    ini = configparser.ConfigParser()
    ini.read(seq / "seqinfo.ini")
    info = ini["Sequence"]
    assert (int(info["imWidth"]), int(info["imHeight"])) == SMALL
    assert int(info["seqLength"]) == 75 and float(info["frameRate"]) == 25
    rows = np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2)
    assert rows.shape[1] == 9 and len(rows) > 0
    assert set(np.unique(rows[:, 6])) == {1.0}
    assert set(np.unique(rows[:, 7])) <= {1.0, 2.0, 3.0, 4.0}
    assert rows[:, 0].min() >= 1 and rows[:, 0].max() <= 75
    assert (rows[:, 8] > 0).all() and (rows[:, 8] <= 1).all()
    assert (rows[:, 4] > 0).all() and (rows[:, 5] > 0).all()
    # The rows are the generator's objects, frame by frame.
    from stages.synth import scene_seed

    api = []
    for n, (_, objs) in enumerate(generate_scene(scene_seed(3, 0), 3, 25, SMALL), start=1):
        for o in objs:
            x1, y1, x2, y2 = o.box
            api.append((n, o.track_id, x1, y1, x2 - x1, y2 - y1, 1, o.mot_class, o.visibility))
    np.testing.assert_allclose(rows, np.array(api, dtype=float), atol=1e-4)


def test_labels_are_inside_the_image_and_follow_the_rule(written: Path) -> None:
    labels = sorted((written / "dataset").glob("*/labels/*.txt"))
    images = sorted((written / "dataset").glob("*/images/*.jpg"))
    assert len(labels) == len(images) == 2 * 15  # 75 frames, every 5th
    assert {p.stem for p in labels} == {p.stem for p in images}
    n = 0
    for p in labels:
        for line in p.read_text().splitlines():
            c, cx, cy, w, h = line.split()
            cx_, cy_, w_, h_ = float(cx), float(cy), float(w), float(h)
            assert int(c) in range(len(CLASS_NAMES))
            assert cx_ - w_ / 2 >= -1e-6 and cx_ + w_ / 2 <= 1 + 1e-6
            assert cy_ - h_ / 2 >= -1e-6 and cy_ + h_ / 2 <= 1 + 1e-6
            assert w_ * SMALL[0] >= MIN_BOX_PX - 1e-3 and h_ * SMALL[1] >= MIN_BOX_PX - 1e-3
            n += 1
    assert n > 20
    yaml_text = (written / "dataset" / "data.yaml").read_text()
    assert "train: train/images" in yaml_text and "val: val/images" in yaml_text
    assert "0: person" in yaml_text and "2: bicycle" in yaml_text


def test_dataset_images_are_the_decoded_video_frames(written: Path) -> None:
    import cv2

    name = "synth-s3-001"
    with av.open(str(written / "videos" / f"{name}.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 75 and frames[0].shape == (192, 320, 3)
    jpg = cv2.cvtColor(cv2.imread(str(written / "dataset/val/images" / f"{name}_00006.jpg")), 4)
    assert np.abs(jpg.astype(int) - frames[5].astype(int)).mean() < 3.0
    assert np.abs(jpg.astype(int) - frames[0].astype(int)).mean() > 0.5


def test_video_is_h264_yuv420p(written: Path) -> None:
    with av.open(str(written / "videos" / "synth-s3-000.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(video=0)) == 75


def _blank_scene(**kw: float) -> Scene:
    s = Scene(SceneConfig(seed=5, seconds=1, width=320, height=192, spawn_rate_hz=0, **kw))  # type: ignore[arg-type]
    s.clear()
    return s


def test_visibility_counts_occlusion_and_the_border() -> None:
    s = _blank_scene()
    back = s.add_object("car", x=150, y=150, size=120)
    front = s.add_object("car", x=155, y=152, size=120)  # nearer (lower), almost on top
    alone = s.add_object("person", x=270, y=150, size=80)
    cut = s.add_object("car", x=0, y=150, size=120)  # centred on the left border
    _, objs = s.step()
    by_id = {o.track_id: o for o in objs}
    assert by_id[front].visibility == 1.0 and by_id[alone].visibility == 1.0
    assert 0 < by_id[back].visibility < 0.3
    assert 0.3 < by_id[cut].visibility < 0.7
    assert by_id[cut].box[0] < 0  # the full (amodal) box runs past the border
    assert by_id[cut].clipped_box(320, 192)[0] == 0


def test_fully_hidden_objects_are_not_in_the_ground_truth() -> None:
    s = _blank_scene()
    hidden = s.add_object("person", x=150, y=140, size=30)  # small person behind a car
    s.add_object("car", x=150, y=150, size=160)
    gone = s.add_object("person", x=-200, y=150, size=60)  # outside the image
    _, objs = s.step()
    ids = {o.track_id for o in objs}
    assert hidden not in ids and gone not in ids and len(ids) == 1


def test_objects_enter_and_leave_through_the_borders() -> None:
    w, h = 640, 384
    first: dict[int, tuple[int, tuple[int, int, int, int]]] = {}
    last: dict[int, int] = {}
    vis = []
    n = 0
    for n, (_, objs) in enumerate(generate_scene(21, seconds=30, size=(w, h)), start=1):
        for o in objs:
            first.setdefault(o.track_id, (n, o.box))
            last[o.track_id] = n
            vis.append(o.visibility)
    entered = [(f, b) for f, b in first.values() if f > 1]
    assert len(entered) >= 3
    touching = [b for _, b in entered if b[0] < 2 or b[2] > w - 2 or b[3] > h - 2]
    assert len(touching) >= 0.8 * len(entered)  # new objects come in through an edge
    assert sum(1 for f in last.values() if f < n) >= 3  # and some leave before the end
    v = np.array(vis)
    assert (v > 0).all() and (v <= 1).all()
    assert (v < 0.9).mean() > 0.02  # occlusions and crossings happen
    assert (v == 1.0).mean() > 0.3


def test_cli_writes_the_expected_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    synth_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(
        ["synth", str(out), "--seed", "4", "--videos", "2", "--seconds", "1", "--size", "160x96",
         "--every", "5", "--val-videos", "1"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert sorted(p.name for p in (out / "videos").iterdir()) == [
        "synth-s4-000.mp4",
        "synth-s4-001.mp4",
    ]
    for name in ("synth-s4-000", "synth-s4-001"):
        assert (out / "mot" / name / "seqinfo.ini").is_file()
        assert (out / "mot" / name / "gt" / "gt.txt").is_file()
    assert len(list((out / "dataset/train/images").glob("*.jpg"))) == 5
    assert len(list((out / "dataset/val/labels").glob("*.txt"))) == 5
    assert (out / "dataset/data.yaml").is_file() and (out / "synth.json").is_file()
    assert "wrote 2 videos" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["640", "641x384", "axb", "32x32"])
def test_cli_rejects_bad_sizes(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="size"):
        synth_cli.parse_size(bad)


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="max_objects"):
        SceneConfig(max_objects=0)
    with pytest.raises(ValueError, match="val_videos"):
        write_video_set(Path("/nonexistent"), seed=0, videos=1, seconds=1, val_videos=2)
    with pytest.raises(ValueError, match="kind"):
        _blank_scene().add_object("boat", 1, 1, 10)


def test_visibility_threshold_constant_matches_the_docs() -> None:
    assert MIN_VISIBILITY == 0.15 and MIN_BOX_PX == 6
