"""ACL users, TLS, and the failures an operator will hit: wrong password, unreachable host,
wrong CA. Each gives a clear logged error, retries, never crashes, never logs the password."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_frame
from redis_server import RedisServer, free_port

from stages.sinks.redis import RedisSink, RedisSinkConfig

pytestmark = pytest.mark.redis

PASSWORD = "s3cr3t-Pa55-xyzzy"
WRONG = "not-the-Pa55-plugh"
LOGGER = "edgestream.sinks.redis"


def _acl_user(server: RedisServer) -> None:
    server.admin().execute_command(
        "ACL", "SETUSER", "edge", "on", f">{PASSWORD}", "~edgestream:*", "&*", "+@all"
    )


def _publish(sink: RedisSink, n: int) -> None:
    t0 = time.time() - 1
    for i in range(n):
        sink.process(make_frame("cam", i, t0 + i / 30))


def _wait_errors(sink: RedisSink, n: int, timeout_s: float = 5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while sink.stats()["connection_errors"] < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return sink.stats()


def _fast(**kwargs: Any) -> RedisSinkConfig:
    return RedisSinkConfig(
        reconnect_backoff_min_s=0.05,
        reconnect_backoff_max_s=0.1,
        connect_timeout_s=1,
        socket_timeout_s=1,
        close_timeout_s=0.2,
        flush_interval_ms=1,
        **kwargs,
    )


def test_acl_user_with_password_from_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    _acl_user(redis_server)
    monkeypatch.setenv("ES_REDIS_PW", PASSWORD)
    sink = RedisSink(_fast(url=redis_server.url, username="edge", password_env="ES_REDIS_PW"))
    sink.setup()
    _publish(sink, 10)
    assert sink.wait_idle(5)
    sink.close()
    assert redis_server.admin().xlen("edgestream:cam:detections") == 10
    assert sink.stats()["published"] == 10
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("where", ["env", "url"])
def test_wrong_password_is_a_clear_retried_error(
    where: str,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    _acl_user(redis_server)
    if where == "env":
        monkeypatch.setenv("ES_REDIS_PW", WRONG)
        cfg = _fast(url=redis_server.url, username="edge", password_env="ES_REDIS_PW")
    else:
        cfg = _fast(url=f"redis://edge:{WRONG}@127.0.0.1:{redis_server.port}/0")
    sink = RedisSink(cfg)
    sink.setup()
    _publish(sink, 5)
    stats = _wait_errors(sink, 3)
    sink.close()
    assert stats["connection_errors"] >= 3  # it keeps retrying
    assert "authentication failed" in caplog.text and "'edge'" in caplog.text
    assert WRONG not in caplog.text and PASSWORD not in caplog.text
    assert WRONG not in str(sink.stats())  # last_error is redacted too
    assert sink.stats()["dropped"]["shutdown"] == 5  # counted, not silently lost


def test_unreachable_host_never_blocks_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    port = free_port()  # nothing listens there
    sink = RedisSink(_fast(url=f"redis://127.0.0.1:{port}/0", max_buffer_messages=20))
    sink.setup()
    t = time.perf_counter()
    _publish(sink, 50)
    assert time.perf_counter() - t < 0.5
    stats = _wait_errors(sink, 3)
    t = time.perf_counter()
    sink.close()
    assert time.perf_counter() - t < 3
    assert stats["connection_errors"] >= 3 and not stats["connected"]
    assert f"cannot reach redis://127.0.0.1:{port}/0" in caplog.text
    final = sink.stats()
    assert final["dropped"]["buffer_full"] == 30 and final["dropped"]["shutdown"] == 20
    assert "buffer full" in caplog.text


def test_missing_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="ES_REDIS_UNSET_VARIABLE"):
        RedisSink(RedisSinkConfig(password_env="ES_REDIS_UNSET_VARIABLE")).setup()
    with pytest.raises(ValueError, match="tls_ca_file"):
        RedisSink(RedisSinkConfig(url="rediss://h:1", tls_ca_file=Path("/nonexistent"))).setup()


def _tls_server(redis_factory: Any, tls_files: dict[str, Path]) -> RedisServer:
    tls = {k: tls_files[k] for k in ("ca", "cert", "key")}
    server: RedisServer = redis_factory(tls=tls)
    return server


def test_tls_with_client_certificate_and_acl(
    redis_factory: Any,
    tls_files: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = _tls_server(redis_factory, tls_files)
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD + "\n")
    common: dict[str, Any] = {
        "url": server.url,
        "tls_ca_file": tls_files["ca"],
        "tls_cert_file": tls_files["client_cert"],
        "tls_key_file": tls_files["client_key"],
    }
    admin = RedisSink(_fast(**common))
    admin.setup()
    conn = admin._connection()
    conn.client.execute_command(
        "ACL", "SETUSER", "edge", "on", f">{PASSWORD}", "~edgestream:*", "&*", "+@all"
    )
    sink = RedisSink(_fast(**common, username="edge", password_file=password_file))
    sink.setup()
    _publish(sink, 10)
    assert sink.wait_idle(5), sink.stats()
    sink.close()
    assert conn.client.xlen("edgestream:cam:detections") == 10
    admin.close()
    assert sink.stats()["published"] == 10
    assert PASSWORD not in caplog.text


def test_wrong_ca_is_a_clear_retried_error(
    redis_factory: Any, tls_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = _tls_server(redis_factory, tls_files)
    sink = RedisSink(_fast(url=server.url, tls_ca_file=tls_files["wrong_ca"]))
    sink.setup()
    _publish(sink, 3)
    stats = _wait_errors(sink, 3)
    sink.close()
    assert stats["connection_errors"] >= 3
    assert "TLS certificate verification failed" in caplog.text
    assert "tls_ca_file" in caplog.text
