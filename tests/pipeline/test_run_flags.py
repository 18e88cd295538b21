"""`edgestream run`'s flags match the config: every arch, --detect-fps, --conf, --classes,
--video-out; the default sink is stated in --help and in the start-up log."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.config import ARCH_NAMES
from pipeline.run import config_from_args, run_pipeline


def run_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", *argv])


def test_run_help_lists_the_per_run_flags_and_the_default_sink(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--detect-fps", "--conf", "--classes", "--video-out", "--redis", "--jsonl"):
        assert flag in text
    assert "runs/NAME/{camera}.jsonl" in text  # the default sink
    assert "unix://" in text
    for arch in ARCH_NAMES:
        assert arch in text


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_every_arch_is_accepted(arch: str) -> None:
    args = run_args("--camera", "a=rtsp://192.0.2.1/s", "--random-weights", "--arch", arch)
    assert config_from_args(args).model.arch == arch


def test_per_run_flags_reach_the_config(tmp_path: Path) -> None:
    args = run_args(
        "--camera", "a=rtsp://192.0.2.1/s", "--random-weights", "--arch", "yolo_nas_n",
        "--detect-fps", "5", "--conf", "0.4", "--classes", "person, car,2",
        "--video-out", str(tmp_path / "v"),
    )  # fmt: skip
    cfg = config_from_args(args)
    cam = cfg.effective_cameras()[0]
    assert cam.detect_fps == 5 and cam.classes == ["person", "car", 2]
    assert cfg.model.conf_threshold == 0.4
    assert cfg.sinks.video is not None and cfg.sinks.video.dir == tmp_path / "v"
    assert cfg.sinks.jsonl is not None  # no --redis/--jsonl: the default JSONL sink
    assert str(cfg.sinks.jsonl.path).endswith("runs/edgestream/{camera}.jsonl")


def test_a_config_file_takes_no_per_run_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cameras: []\n")
    with pytest.raises(ValueError, match="--conf"):
        config_from_args(run_args("-c", str(path), "--conf", "0.5"))


def test_the_start_up_log_says_where_results_go(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config_from_args(run_args("--camera", "a=rtsp://192.0.2.1/s", "--random-weights",
                                    "--arch", "yolo_nas_n"))  # fmt: skip

    class Stop(Exception):
        pass

    def stop(*a: object, **k: object) -> None:
        raise Stop

    monkeypatch.setattr("pipeline.run.setup_from_config", lambda *a, **k: None)
    monkeypatch.setattr("pipeline.run.model_info_of", lambda cfg: None)
    monkeypatch.setattr("pipeline.run.Supervisor", stop)
    with caplog.at_level(logging.INFO, logger="edgestream.run"), pytest.raises(Stop):
        run_pipeline(cfg, default_sink=True)
    assert "results: JSON lines" in caplog.text
    assert "runs/edgestream/{camera}.jsonl (the default: no --redis or --jsonl given)" in (
        caplog.text
    )
