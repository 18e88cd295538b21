"""Fixtures for the runtime tests: a tiny ONNX detector, `edgestream detect` references,
pipeline configs in tmp, and the pipeline run as a real process tree (`python -m
pipeline.run run -c CONFIG`, the same parser as `edgestream run`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests" / "sinks") not in sys.path:  # redis_server helper
    sys.path.insert(0, str(REPO / "tests" / "sinks"))
VIDEO = "car-detection.mp4"  # 768x432, 377 frames at 12.5 fps
MAX_DET = 20  # keeps JSON small: the comparison is per box anyway
# Bounds, not timings: how long a test waits for a pipeline's first output, and for output to
# resume after a stage restart. Start-up imports torch/ONNX Runtime in several processes at
# once, which takes a minute or more on a loaded 2-core machine (seconds on an idle one).
STARTUP_S = float(os.environ.get("EDGESTREAM_TEST_STARTUP_S", "240"))
RESUME_S = float(os.environ.get("EDGESTREAM_TEST_RESUME_S", "60"))
# pytest-timeout for the tests that run a pipeline (pyproject's default is 300 s): above their
# own bounds (the `reference` subprocess, up to 300 s, plus a run of up to STARTUP_S + 120 s),
# so that the test's own assertion, which says what it waited for, is what fires.
PIPELINE_TIMEOUT_S = int(STARTUP_S) + 600


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random conv detector exported to ONNX (batch 1: the same kernels for `detect`
    and for every batch the pipeline forms)."""
    from tiny_detector import TinyDetector

    from stages.detect.export import export_onnx

    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    return export_onnx(TinyDetector(), path, batch_size=1, input_hw=(640, 640))


def box_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """(class_id, score, x1, y1, x2, y2) with the sink's rounding (4 and 2 decimals)."""
    x1, y1, x2, y2 = r["box"]
    return (r["class_id"], round(r["score"], 4), x1, y1, x2, y2)


@pytest.fixture(scope="session")
def reference(shared_data: Path, tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[int, list[tuple[Any, ...]]]:  # fmt: skip
    """``edgestream detect VIDEO --json`` with the tiny model: frame index -> sorted boxes."""
    out = tmp_path_factory.mktemp("reference") / "det.json"
    cmd = [sys.executable, "-m", "pipeline.cli", "detect", str(shared_data / "media" / VIDEO),
           "--weights", str(tiny_onnx), "--json", str(out), "--max-det", str(MAX_DET)]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, timeout=300)
    frames: dict[int, list[tuple[Any, ...]]] = {}
    for r in json.loads(out.read_text()):
        box = [round(r[k], 2) for k in ("x1", "y1", "x2", "y2")]
        frames.setdefault(r["frame"], []).append(box_key({**r, "box": box}))
    return {k: sorted(v) for k, v in frames.items()}


def pipeline_config(tmp: Path, model: Path, cameras: dict[str, str], **over: Any) -> dict[str, Any]:
    """A config dict: offline, jsonl sink in ``tmp/out``, no metrics port, fast restarts."""
    cfg: dict[str, Any] = {
        "name": f"t{os.getpid()}",
        "realtime": False,
        "cameras": [{"id": cid, "url": url} for cid, url in cameras.items()],
        "model": {
            "weights": str(model),
            "backend": "onnxruntime",
            "device": "cpu",
            "threads": 1,
            "max_detections": MAX_DET,
        },
        "batching": {"max_batch": 4, "max_wait_ms": 10},
        "sinks": {"jsonl": {"path": str(tmp / "out" / "{camera}.jsonl")}},
        "metrics": {"port": 0},
        "logging": {"summary_interval_s": 2},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def assert_equals_detect(text: str, out: Path, cameras: list[str],
                         reference: dict[int, list[tuple[Any, ...]]]) -> None:  # fmt: skip
    """An offline run's log ``text`` and JSON lines under ``out``: every camera ended, every
    frame decode forwarded was published once, in order, with exactly the detections of
    ``edgestream detect`` (``reference``), and there were detections to compare."""
    ends = {
        m[0]: int(m[1]) for m in re.findall(r"camera (\S+): end of file \(last seq (-?\d+)\)", text)
    }
    assert set(ends) == set(cameras), text[-3000:]
    total = 0
    for cam in cameras:
        docs = [d for d in read_jsonl(out / f"{cam}.jsonl") if d["type"] == "detections"]
        ids = [d["frame_id"] for d in docs]
        assert len(ids) == ends[cam] + 1, f"{cam}: published {len(ids)} of {ends[cam] + 1} frames"
        assert ids == sorted(set(ids)), f"{cam}: frames out of order or duplicated"
        for d in docs:
            got = sorted(box_key(o) for o in d["objects"])
            assert got == reference.get(d["frame_id"], []), f"{cam} frame {d['frame_id']} differs"
            total += len(got)
    assert total > 0, "no detections at all: the comparison would mean nothing"


def write_config(tmp: Path, cfg: dict[str, Any]) -> Path:
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``edgestream run -c CONFIG`` as a child in its own session (signals go to it alone)."""
    cmd = [sys.executable, "-m", "pipeline.run", "run", "-c", str(config)]
    with log.open("wb") as f:
        return subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def children_of(pid: int) -> list[int]:
    """Every descendant pid of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test started; any still running at the end are killed with their group."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


# ------------------------------------------------------------------ live pipelines, faults
SHM = Path(os.environ.get("EDGESTREAM_SHM_DIR", "/dev/shm"))


def live_config(tmp: Path, model: Path, video: str, n: int = 2, **over: Any) -> dict[str, Any]:
    cams = {f"live{i}": video for i in range(n)}
    cfg = pipeline_config(tmp, model, cams, realtime=True, camera_defaults={"loop": True}, **over)
    cfg["sinks"]["jsonl"]["flush_each_line"] = True
    return cfg


def wait_for(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stage_pids(log: Path) -> dict[str, int]:
    text = log.read_text()
    m = re.findall(r"pipeline \S+ started: (.*)", text)
    pids = dict((k, int(v)) for k, v in (kv.split("=") for kv in m[-1].split(", "))) if m else {}
    for key, pid in re.findall(r"(\S+) restarted \(pid (\d+)", text):
        pids[key] = int(pid)
    return pids


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def segments(name: str) -> list[str]:
    return sorted(p.name for p in SHM.glob(f"edgestream-{name}-*"))
