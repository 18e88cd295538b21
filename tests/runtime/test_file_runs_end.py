"""A run whose cameras are all files ends by itself when the last frame is published — live
(played at the file's own rate) as well as offline — and the files are not read before the
model is ready, so their first frames are not lost to start-up."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PIPELINE_TIMEOUT_S, STARTUP_S, pipeline_config, read_jsonl, start_run
from conftest import write_config as write_cfg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "decode"))
from rtsp_harness import make_clip

pytestmark = pytest.mark.timeout(PIPELINE_TIMEOUT_S)
FRAMES = 50  # 2 s at 25 fps


@pytest.mark.parametrize("realtime", [True, False], ids=["live", "offline"])
def test_a_run_of_file_cameras_ends_by_itself(
    tmp_path: Path, tiny_onnx: Path, reap: list[Any], realtime: bool
) -> None:
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=240, fps=25, frames=FRAMES)
    # live: sampled at 5 frames/s, which the tiny model keeps up with even on a loaded CPU, so
    # a frame lost here is lost to start-up (or superseded for no reason), not to overload
    cfg = pipeline_config(tmp_path, tiny_onnx, {"a": str(clip), "b": str(clip)},
                          realtime=realtime,
                          camera_defaults={"detect_fps": 5.0} if realtime else {})  # fmt: skip
    log = tmp_path / "run.log"
    t0 = time.monotonic()
    proc = start_run(write_cfg(tmp_path, cfg), log)
    reap.append(proc)
    rc = proc.wait(timeout=STARTUP_S + 60)
    took = time.monotonic() - t0
    text = log.read_text()
    print(f"exit {rc} after {took:.1f} s")
    print("\n".join(x for x in text.splitlines() if "summary" in x or "ended" in x))
    assert rc == 0, text[-3000:]
    assert "all 2 file camera(s) ended" in text
    for cam in ("a", "b"):
        lines = read_jsonl(tmp_path / "out" / f"{cam}.jsonl")
        frames = sorted(d["frame_id"] for d in lines if d["type"] == "detections")
        assert frames, f"camera {cam}: nothing published"
        # opened only once the model was ready: the file's first frame is not lost to start-up
        assert frames[0] == 0, f"camera {cam}: first published frame {frames[0]}"
        assert frames == (list(range(0, FRAMES, 5)) if realtime else list(range(FRAMES)))
    # nothing dropped anywhere, and the summary counts what was written
    summary = [x for x in text.splitlines() if "summary:" in x][-1]
    published = int(re.search(r"published (\d+)", summary).group(1))  # type: ignore[union-attr]
    dropped = int(re.search(r"dropped (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert (published, dropped) == (2 * len(frames), 0), summary
