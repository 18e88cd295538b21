"""`edgestream run` with a PyTorch checkpoint on the CPU and ``backend: auto`` runs its ONNX
export on ONNX Runtime (exported once, cached by the checkpoint's hash), and says so."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import validate_config
from pipeline.procs import cpu_onnx_config, model_info_of
from pipeline.run import run_pipeline

DEMO_PTH = Path(__file__).resolve().parents[2] / "stages" / "detect" / "models" / "demo.pth"


def config(weights: Path, backend: str = "auto") -> Any:
    return validate_config(
        {
            "model": {"weights": str(weights), "backend": backend, "device": "cpu"},
            "cameras": [{"id": "a", "url": "rtsp://192.0.2.1/s"}],
            "sinks": {"jsonl": {"path": "out/{camera}.jsonl"}},
        },
        check_files=False,
    )


@pytest.mark.slow  # one ONNX export of the demo model (~5 s)
def test_a_checkpoint_on_the_cpu_runs_its_cached_onnx_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "mine.pth"  # no shipped export beside it: exported here
    shutil.copy(DEMO_PTH, weights)
    cfg, note = cpu_onnx_config(config(weights))
    onnx_path = Path(cfg.model.weights)
    assert cfg.model.backend == "onnxruntime" and onnx_path.suffix == ".onnx"
    assert onnx_path.parent == tmp_path / "cache" / "edgestream" / "onnx"
    assert "ONNX Runtime" in note and "mine.pth" in note
    assert model_info_of(cfg).backend == "onnxruntime"
    stamp = onnx_path.stat().st_mtime_ns
    again, _ = cpu_onnx_config(config(weights))
    assert again.model.weights == onnx_path and onnx_path.stat().st_mtime_ns == stamp  # cached

    asked, note = cpu_onnx_config(config(weights, backend="torch"))  # asked for: kept
    assert asked.model.weights == weights and asked.model.backend == "torch" and not note

    class Stop(Exception):
        pass

    def stop(*a: object, **k: object) -> None:
        raise Stop

    monkeypatch.setattr("pipeline.run.setup_from_config", lambda *a, **k: None)
    monkeypatch.setattr("pipeline.run.Supervisor", stop)
    with caplog.at_level(logging.INFO, logger="edgestream.run"), pytest.raises(Stop):
        run_pipeline(config(weights))
    assert "runs on ONNX Runtime as its cached export" in caplog.text
