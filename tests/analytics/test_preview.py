"""The camera preview against a running pipeline (real processes, the demo model on the CPU).

``GET /cameras/{id}/snapshot.jpg`` must return a JPEG of the camera's frame with its tracked
boxes drawn: the test decodes it, finds the same frame's published boxes in the JSON lines
output (the ``X-Frame-Id`` header names the frame) and checks the pixels along each box's
edges have that track's colour (`stages.sinks.video.track_colour`), where the raw frame at the
same place (decoded from the source clip) does not. Zones and lines are drawn too (their
colour at a line's pixels). Unknown cameras are 404, and with ``preview.enabled: false`` (the
default) the endpoints say the preview is off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from stages.sinks.video import REGION_COLOUR, track_colour

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "stages" / "detect" / "models" / "demo.pth"
SIZE = (1280, 720)  # boxes drawn 2 px wide: they survive JPEG's colour subsampling

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def frame_of(video: Path, frame_id: int) -> np.ndarray:
    import av

    with av.open(str(video)) as c:
        n = 0
        while True:  # the camera loops the clip: frame ids go on across passes
            for i, frame in enumerate(c.decode(video=0)):
                if n + i == frame_id:
                    return np.asarray(frame.to_ndarray(format="rgb24"))
            n += i + 1
            c.seek(0)


def edge_pixels(img: np.ndarray, box: list[float]) -> np.ndarray:
    """The pixels on the left, right and bottom edges of ``box`` (the top holds the label)."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in box)
    x1, x2 = min(max(x1, 0), w - 1), min(max(x2, 0), w - 1)
    y1, y2 = min(max(y1, 0), h - 1), min(max(y2, 0), h - 1)
    ys = np.arange(y1 + (y2 - y1) // 3, y2)  # below the label
    xs = np.arange(x1, x2)
    return np.concatenate([img[ys, x1], img[ys, x2], img[y2, xs]]).astype(np.int32)


def close_to(pixels: np.ndarray, colour: tuple[int, int, int], tol: int = 60) -> float:
    """Share of ``pixels`` within ``tol`` (max abs per channel) of ``colour``."""
    return float((np.abs(pixels - np.array(colour)).max(axis=1) <= tol).mean())


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "synth", str(out), "--seed", "31", "--videos",
         "1", "--seconds", "5", "--size", f"{SIZE[0]}x{SIZE[1]}", "--val-videos", "0",
         "--no-dataset", "--crf", "18"],
        cwd=REPO, check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    return next((out / "videos").glob("*.mp4"))


def start(tmp: Path, clip: Path, preview: bool) -> tuple[subprocess.Popen[str], str, Path]:
    port = free_port()
    out = tmp / "out.jsonl"
    config = {
        "version": 1,
        "name": f"pv-{os.getpid()}-{int(preview)}",
        "realtime": True,
        "cameras": [
            {
                "id": "street",
                "url": str(clip),
                "loop": True,
                "lines": [{"id": "mid", "normalized": True, "points": [[0.5, 1.0], [0.5, 0.0]]}],
            }
        ],
        "model": {"weights": str(WEIGHTS), "backend": "auto", "device": "cpu"},
        "sinks": {"jsonl": {"path": str(out), "flush_each_line": True}},
        "metrics": {"host": "127.0.0.1", "port": port},
        "preview": {"enabled": preview, "fps": 4, "max_width": SIZE[0], "jpeg_quality": 90},
    }
    path = tmp / "pv.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", "-c", str(path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}", out


def wait_up(base: str, proc: subprocess.Popen[str], deadline_s: float = 120) -> None:
    """Until the HTTP server answers (the supervisor starts it before the stages)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            fetch(f"{base}/healthz")
            return
        except (urllib.error.URLError, ConnectionError):
            assert proc.poll() is None, "the pipeline exited"
            assert time.monotonic() < deadline, "the HTTP server never answered"
            time.sleep(0.3)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def wait_for_snapshot(base: str, proc: subprocess.Popen[str], jsonl: Path,
                      deadline_s: float = 150) -> tuple[dict[str, str], bytes, dict]:  # fmt: skip
    """A snapshot whose frame's published detections hold at least one tracked box."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the pipeline exited"
        status, headers, body = fetch(f"{base}/cameras/street/snapshot.jpg")
        if status == 200:
            frame_id = int(headers["X-Frame-Id"])
            for line in jsonl.read_text().splitlines():
                doc = json.loads(line)
                if (
                    doc["type"] == "detections"
                    and doc["frame_id"] == frame_id
                    and any(o["track_id"] is not None for o in doc["objects"])
                ):
                    return headers, body, doc
        time.sleep(0.5)
    raise AssertionError("no snapshot with a tracked box in time")


def test_snapshot_is_the_frame_with_its_boxes_and_lines_drawn(tmp_path: Path, clip: Path) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"demo model missing: {WEIGHTS}")
    proc, base, jsonl = start(tmp_path, clip, preview=True)
    try:
        wait_up(base, proc)
        status, _, body = fetch(f"{base}/cameras/nope/snapshot.jpg")
        assert status == 404 and b"no camera" in body
        headers, body, doc = wait_for_snapshot(base, proc, jsonl)
        assert headers["Content-Type"] == "image/jpeg"
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)  # fmt: skip
        assert img.shape[:2] == (SIZE[1], SIZE[0])
        raw = frame_of(clip, doc["frame_id"])
        checked = 0
        for o in doc["objects"]:
            if o["track_id"] is None or (o["box"][2] - o["box"][0]) < 12:
                continue
            colour = track_colour(o["track_id"])
            drawn = close_to(edge_pixels(img, o["box"]), colour)
            before = close_to(edge_pixels(raw, o["box"]), colour)
            assert drawn > 0.5, (o, drawn)
            assert before < 0.3, (o, before)  # it is the drawing, not the scene's colour
            checked += 1
        assert checked >= 1
        # the line at x = 50 %, away from the caption in the bottom-left corner
        column = img[SIZE[1] // 4 : SIZE[1] * 3 // 4, SIZE[0] // 2 - 1 : SIZE[0] // 2 + 2]
        assert close_to(column.reshape(-1, 3).astype(np.int32), REGION_COLOUR) > 0.5
        # the MJPEG stream serves the same kind of JPEGs
        with urllib.request.urlopen(f"{base}/cameras/street/stream.mjpg", timeout=15) as resp:
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            head = resp.read(200)
            assert head.startswith(b"--frame\r\nContent-Type: image/jpeg")
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output[-3000:]


def test_preview_is_off_by_default(tmp_path: Path, clip: Path) -> None:
    if not WEIGHTS.is_file():
        pytest.skip(f"demo model missing: {WEIGHTS}")
    proc, base, _ = start(tmp_path, clip, preview=False)
    try:
        wait_up(base, proc)
        status, _, body = fetch(f"{base}/cameras/street/snapshot.jpg")
        assert status == 404 and b"preview is off" in body
    finally:
        stop(proc)
