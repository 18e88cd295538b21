"""The health endpoint: /healthz and /readyz 200/503 from injected callables, /metrics, errors."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.health import HealthServer, start_health_server
from pipeline.metrics import Metrics


def get(url: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            status, ctype, body = resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, ctype, body = exc.code, exc.headers["Content-Type"], exc.read().decode()
    return status, ctype, json.loads(body) if ctype == "application/json" else body


def test_healthz_and_readyz_follow_the_injected_callables() -> None:
    alive: dict[str, bool | str] = {"decode": True, "detect": True, "sink": True}
    reasons: list[str] = ["model not loaded", "redis sink not connected"]
    with HealthServer("127.0.0.1", 0, liveness=lambda: alive, readiness=lambda: reasons) as srv:
        status, ctype, body = get(f"{srv.url}/healthz")
        assert (status, ctype) == (200, "application/json")
        assert body == {"status": "ok", "stages": ["decode", "detect", "sink"]}

        status, _, body = get(f"{srv.url}/readyz")
        assert status == 503
        assert body == {"status": "not ready", "reasons": reasons}

        alive["detect"] = "exited with -9, restarting in 1.0 s"
        alive["sink"] = False
        status, _, body = get(f"{srv.url}/healthz")
        assert status == 503
        assert body["status"] == "down"
        assert body["down"] == {
            "detect": "exited with -9, restarting in 1.0 s",
            "sink": "not running",
        }

        reasons.clear()
        status, _, body = get(f"{srv.url}/readyz/")
        assert (status, body) == (200, {"status": "ready"})


def test_a_failing_check_is_503_without_its_message() -> None:
    def boom() -> dict[str, bool]:
        raise RuntimeError("redis://user:hunter2@host failed")

    def boom_ready() -> list[str]:
        raise ValueError("rtsp://admin:hunter2@cam")

    with HealthServer("127.0.0.1", 0, liveness=boom, readiness=boom_ready) as srv:
        for path, kind in (("/healthz", "RuntimeError"), ("/readyz", "ValueError")):
            status, _, body = get(f"{srv.url}{path}")
            assert status == 503
            assert kind in body["error"] and "hunter2" not in json.dumps(body)


def test_metrics_and_unknown_paths() -> None:
    registry = CollectorRegistry()
    Metrics(registry).frames("cam1", "sink", 2)
    with HealthServer("127.0.0.1", 0, registry=registry) as srv:
        status, ctype, text = get(f"{srv.url}/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert 'edgestream_frames_total{camera="cam1",stage="sink"} 2.0' in text
        assert get(f"{srv.url}/nope")[0] == 404
        # an empty tree is alive and ready by default
        assert get(f"{srv.url}/healthz")[0] == 200
        assert get(f"{srv.url}/readyz")[0] == 200


def test_port_zero_in_the_config_disables_the_server() -> None:
    assert start_health_server("127.0.0.1", 0, liveness=dict, readiness=tuple) is None


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}") as e:
            HealthServer("127.0.0.1", port).start()
    assert "--metrics-port" in str(e.value) and "metrics.port" in str(e.value)  # flag and key


def test_the_default_port_is_not_node_exporters() -> None:
    from pipeline.config import DEFAULT_METRICS_PORT, MetricsConfig

    assert MetricsConfig().port == HealthServer().requested_port == DEFAULT_METRICS_PORT
    assert DEFAULT_METRICS_PORT not in (9100, 9400, 9464)  # node_exporter, DCGM, OpenTelemetry


def test_stop_releases_the_port() -> None:
    srv = HealthServer("127.0.0.1", 0).start()
    port = srv.port
    srv.stop()
    again = HealthServer("127.0.0.1", port).start()
    try:
        assert get(f"{again.url}/healthz")[0] == 200
    finally:
        again.stop()
