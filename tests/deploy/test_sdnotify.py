"""systemd notifications (`pipeline.sdnotify`) on a real unix datagram socket standing in for
systemd's ``$NOTIFY_SOCKET``: READY=1 only once ready, WATCHDOG=1 only while healthy."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.sdnotify import SystemdNotifier, watchdog_interval_s

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    try:
        yield path, sock
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out


class FakeSupervisor:
    def __init__(self) -> None:
        self.live: dict[str, bool | str] = {"decode": True, "detect": True, "sink": True}
        self.reasons = ["model not loaded"]

    def liveness(self) -> dict[str, bool | str]:
        return dict(self.live)

    def readiness(self) -> list[str]:
        return list(self.reasons)


def test_ready_once_when_ready_and_watchdog_only_while_healthy(
    notify_socket: tuple[str, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    path, sock = notify_socket
    now = [100.0]
    n = SystemdNotifier(path, watchdog_s=10.0, clock=lambda: now[0])
    sup = FakeSupervisor()

    n(sup)  # alive, still loading: fed, not ready
    (msg,) = _received(sock)
    assert "WATCHDOG=1" in msg and "READY=1" not in msg and "STATUS=starting" in msg

    sup.reasons = []
    n(sup)  # ready: READY=1 once; the watchdog was fed < 5 s ago
    (msg,) = _received(sock)
    assert msg.splitlines() == ["READY=1", "STATUS=ready"]
    n(sup)
    assert _received(sock) == []  # nothing new to say

    now[0] += 5.0  # half the watchdog period
    n(sup)
    assert _received(sock) == ["WATCHDOG=1"]

    sup.live["detect"] = "exited with -9, restarting"  # a dead stage: stop feeding, say why
    now[0] += 5.0
    with caplog.at_level(logging.WARNING, logger="edgestream.sdnotify"):
        n(sup)
        now[0] += 5.0
        n(sup)
    (msg,) = _received(sock)
    assert "WATCHDOG=1" not in msg and "STATUS=unhealthy: detect exited with -9" in msg
    assert len([r for r in caplog.records if "watchdog not fed" in r.message]) == 1

    sup.live["detect"] = True  # recovered: fed again, READY=1 not repeated
    n(sup)
    (msg,) = _received(sock)
    assert "WATCHDOG=1" in msg and "READY=1" not in msg and "STATUS=ready" in msg


def test_environment_and_abstract_socket() -> None:
    assert SystemdNotifier.from_env({}) is None  # not under systemd: nothing at all
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"})
    assert n is not None and n.watchdog_s == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None

    name = f"edgestream-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert SystemdNotifier("@" + name).send("READY=1")
        assert sock.recv(100) == b"READY=1"
    assert not SystemdNotifier("/nonexistent/notify.sock").send("READY=1")  # never raises


@pytest.mark.timeout(240)
def test_edgestream_run_sends_ready_only_when_readyz_says_ready(
    tmp_path: Path, notify_socket: tuple[str, socket.socket]
) -> None:
    from pipeline.health import HealthServer
    from stages.demo.scenes import ensure_scenes

    path, sock = notify_socket
    probe = HealthServer(port=0).start()
    port = probe.port
    probe.stop()
    (video,) = ensure_scenes(tmp_path / "scenes", cameras=1, seconds=0.4)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"}
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - closed below
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": f"sdn{os.getpid()}",
        "cameras": [{"id": "cam", "url": str(video), "loop": True}],  # live until stopped
        "model": {"weights": str(REPO / "stages/detect/models/demo.onnx")},
        "sinks": {"jsonl": {"path": str(tmp_path / "out" / "{camera}.jsonl")}},
        "metrics": {"port": port},
    }))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "-c", str(config)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, messages
            before = len(messages)
            messages += _received(sock)
            for m in messages[before:]:
                if "READY=1" in m:  # at this instant /readyz must agree
                    url = f"http://127.0.0.1:{port}/readyz"
                    with urllib.request.urlopen(url, timeout=5) as r:
                        assert r.status == 200
        assert any("WATCHDOG=1" in m for m in messages)
        time.sleep(2.5)  # fed every WatchdogSec/2 = 2 s while healthy
        assert any("WATCHDOG=1" in m for m in _received(sock))
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0
