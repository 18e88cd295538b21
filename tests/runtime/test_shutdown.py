"""SIGTERM → exit 0 within 10 s with no process or shared-memory segment left; a
configuration a stage cannot work with is fatal (non-zero exit, no restart loop)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PIPELINE_TIMEOUT_S,
    SHM,
    STARTUP_S,
    VIDEO,
    alive,
    children_of,
    live_config,
    pipeline_config,
    read_jsonl,
    segments,
    start_run,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(PIPELINE_TIMEOUT_S)


@pytest.mark.parametrize(("where", "processes"), [("decode", 4), ("workers", 6)])
def test_sigterm_exits_zero_no_leftovers(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any], where: str, processes: int
) -> None:
    """Live cameras, both places a frame is letterboxed: decode letterboxes (decode, detect,
    track, sink) or 2 preprocess workers do."""
    cfg = live_config(tmp_path, tiny_onnx, str(shared_data / "media" / VIDEO),
                      preprocess={"where": where, "workers": 2})  # fmt: skip
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    out = tmp_path / "out" / "live0.jsonl"
    wait_for(lambda: len(read_jsonl(out)) > 3, STARTUP_S, "published frames")
    tree = children_of(proc.pid)
    assert len(tree) >= processes, tree  # and multiprocessing's resource tracker
    assert segments(cfg["name"]), "live frames travel through shared memory"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=12)
    print(f"SIGTERM → exit {rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, log.read_text()[-3000:]
    # multiprocessing's resource tracker leaves when it sees the supervisor's pipe close
    left = [p for p in tree if alive(p)]
    cmdlines = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ") for p in left}
    wait_for(lambda: not any(alive(p) for p in tree), 3, f"leftover processes {cmdlines}")
    assert segments(cfg["name"]) == []
    assert not any(p.name.startswith(f"edgestream-{cfg['name']}-") for p in Path("/tmp").iterdir())


def test_bad_weights_is_fatal_not_restarted(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any]
) -> None:
    """A model the detect stage cannot open as configured fails the same way on every
    restart: the run exits non-zero with the reason, and a stale segment of a dead run is
    cleaned at start. (A bad weights file never gets this far: test_fail_fast.py.)"""
    cfg = pipeline_config(tmp_path, tiny_onnx, {"c": str(shared_data / "media" / VIDEO)})
    cfg["model"]["half"] = True  # FP16 is for the torch backend
    stale = SHM / f"edgestream-{cfg['name']}-999999999-frames.c.1"  # pid that cannot exist
    stale.write_bytes(b"\0" * 64)
    os.utime(stale, (time.time() - 60, time.time() - 60))
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    rc = proc.wait(timeout=STARTUP_S)
    text = log.read_text()
    assert rc == 2, text[-3000:]
    assert "half=True is for the torch backend" in text and "configuration error" in text
    assert "restarted" not in text
    assert not stale.exists()
    assert segments(cfg["name"]) == []
