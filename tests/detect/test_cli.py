"""`edgestream detect` end to end through the real command-line entry point."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.cli import main


def _write_video(path: Path, frames: int = 6, w: int = 320, h: int = 240) -> None:
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.full((h, w, 3), 40 * i % 255, np.uint8)
            cv2.rectangle(img, (20 + 10 * i, 30), (120 + 10 * i, 160), (255, 0, 0), -1)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_detect_video_writes_json_and_annotated_video(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    _write_video(video)
    out_json, out_mp4 = tmp_path / "dets.json", tmp_path / "annotated.mp4"
    # conf 0.01 so that a random network yields detections to check the JSON shape on.
    rc = main(
        ["detect", str(video), "--random-weights", "--batch", "4", "--conf", "0.01",
         "--json", str(out_json), "--save", str(out_mp4)]
    )  # fmt: skip
    assert rc == 0
    records = json.loads(out_json.read_text())
    assert records, "expected detections at conf 0.01"
    assert {r["frame"] for r in records} <= set(range(6))
    r = records[0]
    assert set(r) == {"frame", "source", "x1", "y1", "x2", "y2", "score", "class_id", "class_name"}
    assert all(0.01 < rec["score"] <= 1.0 for rec in records)
    with av.open(str(out_mp4)) as c:
        st = c.streams.video[0]
        assert (st.codec_context.width, st.codec_context.height) == (320, 240)
        assert sum(1 for _ in c.decode(st)) == 6


def test_detect_max_frames_and_image_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((100, 150, 3), 60 * i, np.uint8))
    rc = main(["detect", str(folder), "--random-weights", "--max-frames", "2", "--batch", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "00.png #0" in out and "01.png #1" in out and "02.png" not in out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.mp4", None, "no such file"),
        ("junk.mp4", b"\x00garbage" * 100, "not a readable image or video"),
        ("empty_dir", "dir", "holds no images"),
        ("broken.png", b"not a png", "not a readable image"),
    ],
    ids=["missing", "junk-video", "empty-folder", "broken-png"],
)
def test_detect_bad_source_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: object, message: str
) -> None:
    src = tmp_path / name
    if content == "dir":
        src.mkdir()
    elif isinstance(content, bytes):
        src.write_bytes(content)
    rc = main(["detect", str(src), "--random-weights"])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_detect_rejects_bad_thresholds(tmp_path: Path) -> None:
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(SystemExit, match=r"--conf must be within 0\.\.1"):
        main(["detect", str(img), "--random-weights", "--conf", "1.5"])
