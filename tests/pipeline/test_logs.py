"""Logging: text and JSON lines with the process name, redaction of every record (messages,
arguments, extras, tracebacks), one line per camera state change, the summary line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.config import validate_config
from pipeline.logs import (
    CameraStateLog,
    RedactFilter,
    setup_from_config,
    setup_logging,
    summary_line,
)

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-s3cret"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_text_lines_carry_process_and_are_redacted(restore_root: None) -> None:
    out = io.StringIO()
    redact = setup_logging("INFO", "text", process_name="decode", stream=out)
    redact.add([SECRET])
    log = logging.getLogger("edgestream.decode")
    log.info("opening %s", f"rtsp://admin:{SECRET}@10.0.0.5/stream")
    log.info("password alone: %s", SECRET)
    log.debug("not shown")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert " INFO  decode[" in lines[0] and "edgestream.decode: opening" in lines[0]
    assert "rtsp://admin:***@10.0.0.5/stream" in lines[0]
    assert SECRET not in out.getvalue()


def test_json_lines_with_extras_and_tracebacks(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("DEBUG", "json", process_name="preprocess[1]", secrets=[SECRET], stream=out)
    log = logging.getLogger("edgestream.x")
    log.warning("camera %s down", "gate", extra={"camera": "gate", "url": f"rtsp://u:{SECRET}@h/"})
    try:
        raise ValueError(f"cannot open redis://user:{SECRET}@r:6379")
    except ValueError:
        log.exception("sink failed")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["level"] for r in records] == ["WARNING", "ERROR"]
    first = records[0]
    assert first["process"] == "preprocess[1]" and first["msg"] == "camera gate down"
    assert first["camera"] == "gate" and first["url"] == "rtsp://u:***@h/"
    assert isinstance(first["pid"], int) and first["ts"].endswith("Z")
    assert "ValueError" in records[1]["exc"]
    assert SECRET not in out.getvalue()


def test_secrets_from_the_config_are_masked(restore_root: None) -> None:
    data = {
        "model": {"random_weights": True, "arch": "yolo_nas_s"},
        "cameras": [
            {"id": "c", "url": "rtsp://h/s", "options": {"headers": "X-Auth: ${API_TOKEN}"}}
        ],
        "sinks": {"jsonl": {"path": "/tmp/x.jsonl"}},
        "logging": {"format": "json"},
    }
    cfg = validate_config(data, env={"API_TOKEN": SECRET})
    redact = setup_from_config(cfg, process_name="sink")
    assert SECRET in redact.secrets
    out = io.StringIO()
    (ours,) = [h for h in logging.getLogger().handlers if getattr(h, "_edgestream", False)]
    ours.setStream(out)  # type: ignore[attr-defined]
    logging.getLogger("t").error("server said: bad header X-Auth: %s", SECRET)
    assert SECRET not in out.getvalue() and "***" in out.getvalue()


def test_filter_survives_bad_format_strings() -> None:
    record = logging.LogRecord("n", logging.INFO, "p", 1, "%d items", ("x",), None)
    assert RedactFilter().filter(record)
    assert "%d items" in record.msg


def test_one_line_per_camera_state_change(caplog: pytest.LogCaptureFixture) -> None:
    states = CameraStateLog(logging.getLogger("edgestream.cameras"))
    with caplog.at_level(logging.INFO, logger="edgestream.cameras"):
        assert states.update("gate", "connecting", now=0.0)
        assert not states.update("gate", "connecting", now=1.0)
        assert states.update("gate", "streaming", now=2.5)
        assert not states.update("gate", "streaming", now=3.0)
        assert states.update("gate", "stalled", "no frame for 10.0 s", now=20.0)
        assert states.update("dock", "connecting", now=20.0)
    msgs = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert msgs == [
        ("INFO", "camera gate: new -> connecting"),
        ("INFO", "camera gate: connecting -> streaming after 2.5 s"),
        ("WARNING", "camera gate: streaming -> stalled after 17.5 s (no frame for 10.0 s)"),
        ("INFO", "camera dock: new -> connecting"),
    ]
    assert caplog.records[2].camera == "gate" and caplog.records[2].previous == "streaming"  # type: ignore[attr-defined]
    assert states.state("gate") == "stalled"


def test_summary_line() -> None:
    stats = {
        "cameras": {
            "a": {
                "up": True,
                "published": 100,
                "fps": 10.0,
                "dropped": {"queue_full": 3},
                "latency_p50_ms": 80.0,
                "latency_p99_ms": 150.0,
            },
            "b": {
                "up": False,
                "published": 50,
                "fps": 5.0,
                "dropped": {"queue_full": 1, "too_old": 2},
                "latency_p50_ms": 90.0,
                "latency_p99_ms": 400.0,
            },
        },
        "batches": {"mean_size": 3.5},
        "restarts": {"detect": 1},
    }
    line = summary_line(stats, interval_s=30)
    assert line == (
        "summary 30s: cameras up 1/2 (down: b) | published 150 (15.0 fps) | dropped 6 "
        "(queue_full 4, too_old 2) | batch 3.5 | e2e p50 90 ms, worst p99 400 ms (b) | "
        "restarts 1"
    )
    assert "\n" not in line
    assert summary_line({}) == (
        "summary: cameras up 0/0 | published 0 (0.0 fps) | dropped 0 (none) | batch - | "
        "e2e - | restarts 0"
    )


def test_child_process_lines_name_the_process() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "import logging\n"
        "from pipeline.logs import setup_logging\n"
        "setup_logging('INFO', 'text', process_name='detect')\n"
        f"logging.getLogger('edgestream.detect').info('loaded redis://:{SECRET}@r/0')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert " INFO  detect[" in proc.stderr and "redis://:***@r/0" in proc.stderr
    assert SECRET not in proc.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_command_and_the_demo_stages_log_in_one_format(
    fmt: str, restore_root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main
    from stages.demo.app import DemoOptions, pipeline_config

    # every command (demo, run, models, tail...) starts with setup_logging, as `run` does
    assert main(["--log-format", fmt, "models"]) == 0
    logging.getLogger("edgestream.demo").warning("one line")
    (line,) = capsys.readouterr().err.strip().splitlines()
    if fmt == "json":
        assert json.loads(line)["process"] == "models" and json.loads(line)["msg"] == "one line"
    else:
        assert " WARNING models[" in line and line.endswith("edgestream.demo: one line")
    # and the demo's stages are configured with the same format
    video = tmp_path / "a.mp4"
    video.write_bytes(b"")
    opts = DemoOptions(workdir=tmp_path, random_weights=True, log_format=fmt)
    cfg = pipeline_config(opts, [video], "redis://localhost:6379/0", None)
    assert cfg.logging.format == fmt
