"""CURVE on tcp edges, on real loopback sockets: authorized clients pass, others are refused
and counted; `edgestream keys generate` writes usable key files."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest
import zmq

from pipeline import curve
from pipeline.cli import main
from pipeline.curve import CurveKeys
from pipeline.messages import EndMsg
from pipeline.transport import EndpointError, Receiver, Sender

pytestmark = [
    pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE"),
    pytest.mark.usefixtures("no_leaked_sockets"),  # tests/pipeline/conftest.py
]


def keys(folder: Path, client: str = "client") -> dict[str, Path]:
    assert main(["keys", "generate", str(folder), "--client", client]) == 0
    return _paths(folder, client)


def _paths(folder: Path, client: str) -> dict[str, Path]:
    return {
        "server_secret": folder / "server.key_secret",
        "server_public": folder / "server.key",
        "client_secret": folder / f"{client}.key_secret",
        "authorized": folder / "authorized_clients",
    }


def server_keys(k: dict[str, Path], domain: str) -> CurveKeys:
    return CurveKeys(
        server_secret_key_file=k["server_secret"], authorized_clients_dir=k["authorized"],
        domain=domain,
    )  # fmt: skip


def client_keys(k: dict[str, Path], server: dict[str, Path] | None = None) -> CurveKeys:
    return CurveKeys(
        client_secret_key_file=k["client_secret"],
        server_public_key_file=(server or k)["server_public"],
    )


def recv_all(rx: Receiver, n: int, timeout_s: float = 5.0) -> list[object]:
    got: list[object] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        msg = rx.recv(50)
        if msg is not None:
            got.append(msg)
    return got


def test_keys_generate_writes_pairs_with_private_secrets(tmp_path: Path) -> None:
    k = keys(tmp_path / "keys")
    for name in ("server.key_secret", "client.key_secret"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    public, secret = zmq.auth.load_certificate(k["server_secret"])
    assert secret is not None and len(public) == 40
    assert zmq.auth.load_certificate(k["server_public"]) == (public, None)
    client_public, _ = zmq.auth.load_certificate(k["client_secret"])
    assert set(zmq.auth.load_certificates(k["authorized"])) == {client_public}
    # never overwrites keys silently
    assert main(["keys", "generate", str(tmp_path / "keys")]) == 2


def test_authorized_client_gets_messages_through(tmp_path: Path) -> None:
    k = keys(tmp_path / "keys")
    with (
        Receiver("bind:tcp://127.0.0.1:0", curve=server_keys(k, "ok-edge")) as rx,
        Sender("connect:" + rx.address, curve=client_keys(k)) as tx,
    ):
        assert tx.wait_connected(5)
        for i in range(20):
            assert tx.send(EndMsg("cam", i), block=True, timeout_s=5)
        got = recv_all(rx, 20)
    assert got == [EndMsg("cam", i) for i in range(20)]
    assert curve.refused().get("ok-edge", 0) == 0


def test_binding_sender_is_the_server(tmp_path: Path) -> None:
    """A fan-out edge binds on the sender: the PUSH side is then the CURVE server."""
    k = keys(tmp_path / "keys")
    with (
        Sender("bind:tcp://127.0.0.1:0", curve=server_keys(k, "fanout")) as tx,
        Receiver(
            "connect:" + tx.socket.getsockopt_string(zmq.LAST_ENDPOINT), curve=client_keys(k)
        ) as rx,
    ):
        assert tx.wait_connected(5)
        assert tx.send(EndMsg("cam", 7), block=True, timeout_s=5)
        assert recv_all(rx, 1) == [EndMsg("cam", 7)]


def test_client_with_wrong_key_gets_nothing_through_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    k = keys(tmp_path / "keys")
    stranger = keys(tmp_path / "other", client="stranger")  # a pair not in authorized_clients
    before = curve.refused().get("items-test", 0)
    with (
        caplog.at_level(logging.WARNING, logger="pipeline.curve"),
        Receiver("bind:tcp://127.0.0.1:0", curve=server_keys(k, "items-test")) as rx,
        Sender("connect:" + rx.address, curve=client_keys(stranger, server=k)) as bad,
        Sender("connect:" + rx.address) as plain,  # no CURVE at all
    ):
        assert not bad.wait_connected(1.0)  # the handshake never completes
        assert not plain.wait_connected(0.2)
        for i in range(5):
            bad.send(EndMsg("bad", i), block=False)
            plain.send(EndMsg("plain", i), block=False)
        assert recv_all(rx, 1, timeout_s=1.0) == []
        deadline = time.monotonic() + 5
        while curve.refused().get("items-test", 0) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        # an authorized client on the same socket still gets through
        with Sender("connect:" + rx.address, curve=client_keys(k)) as good:
            assert good.wait_connected(5)
            assert good.send(EndMsg("good", 1), block=True, timeout_s=5)
            assert recv_all(rx, 1) == [EndMsg("good", 1)]
    assert curve.refused()["items-test"] > before
    stranger_public = zmq.auth.load_certificate(stranger["client_secret"])[0].decode()
    refusals = [r for r in caplog.records if "not authorized" in r.getMessage()]
    assert len(refusals) == 1  # logged once per key, however often it retries
    assert stranger_public in refusals[0].getMessage()
    assert "127.0.0.1" in refusals[0].getMessage()
    # the stage's stats carry the count, and /metrics has it per edge
    from prometheus_client import CollectorRegistry

    from pipeline.metrics import Metrics
    from pipeline.stats import Reporter

    registry = CollectorRegistry()
    reporter = Reporter("detect", None, metrics=Metrics(registry))
    reporter._sync_metrics({"transport": {"auth_refused": curve.refused()}})
    got = registry.get_sample_value("edgestream_edge_auth_refused_total", {"edge": "items-test"})
    assert got == curve.refused()["items-test"]


def test_curve_refused_on_ipc(tmp_path: Path) -> None:
    k = keys(tmp_path / "keys")
    with pytest.raises(EndpointError, match="not ipc"):
        Receiver(f"bind:ipc://{tmp_path}/x.sock", curve=server_keys(k, "ipc"))


def test_side_without_its_keys_is_refused(tmp_path: Path) -> None:
    k = keys(tmp_path / "keys")
    with pytest.raises(curve.CurveKeyError, match="server_secret_key_file"):
        Receiver("bind:tcp://127.0.0.1:0", curve=client_keys(k))
    with pytest.raises(curve.CurveKeyError, match="no secret key"):
        Sender(
            "connect:tcp://127.0.0.1:9",
            curve=CurveKeys(
                client_secret_key_file=k["server_public"],
                server_public_key_file=k["server_public"],
            ),
        )


# ------------------------------------------------------------------------------ config


def remote_config(transport: dict[str, object]) -> dict[str, object]:
    return {
        "version": 1,
        "name": "curvetest",
        "cameras": [],
        "model": {"random_weights": True, "arch": "yolo_nas_s"},
        "transport": transport,
    }


def test_config_gives_each_side_its_keys_and_plans_them(tmp_path: Path) -> None:
    from pipeline.config import validate_config
    from pipeline.edges import plan_edges

    k = keys(tmp_path / "keys")
    detector = validate_config(
        remote_config({
            "stages": ["detect"],
            "curve": {
                "server_secret_key_file": str(k["server_secret"]),
                "authorized_clients_dir": str(k["authorized"]),
            },
            "edges": {
                "items": {"endpoint": "bind:tcp://*:5701"},
                "detections": {"endpoint": "bind:tcp://*:5702"},
            },
        })
    )  # fmt: skip
    plan = plan_edges(detector, tmp_path)
    assert plan["items"].curve is not None and plan["items"].curve.domain == "items"
    assert plan["items"].curve.server_secret_key_file == k["server_secret"]
    assert plan["frames"].curve is None  # auto (ipc) edges stay as they are
    assert plan["tracked"].curve is None


def test_config_refuses_missing_key_files(tmp_path: Path) -> None:
    from pipeline.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as e:
        validate_config(
            remote_config({
                "stages": ["detect"],
                "edges": {
                    "items": {"endpoint": "bind:tcp://*:5701"},
                    "detections": {
                        "endpoint": "bind:tcp://*:5702",
                        "curve": {
                            "server_secret_key_file": str(tmp_path / "nope.key_secret"),
                            "authorized_clients_dir": str(tmp_path / "nope"),
                        },
                    },
                },
            })
        )  # fmt: skip
    text = str(e.value)
    assert "detections.curve.server_secret_key_file: file not found" in text
    assert "detections.curve.authorized_clients_dir: folder not found" in text


def test_config_refuses_curve_on_ipc_and_a_side_without_its_keys(tmp_path: Path) -> None:
    from pipeline.config import ConfigError, validate_config

    k = keys(tmp_path / "keys")
    with pytest.raises(ConfigError) as e:
        validate_config(
            remote_config({
                "stages": ["detect"],
                "curve": {"client_secret_key_file": str(k["client_secret"])},
                "edges": {
                    "frames": {"curve": {"server_public_key_file": str(k["server_public"])}},
                    "items": {"endpoint": "bind:tcp://*:5701"},
                    "detections": {"endpoint": "bind:tcp://*:5702"},
                },
            })
        )  # fmt: skip
    text = str(e.value)
    assert "transport.edges.frames.curve: CURVE is for tcp edges" in text
    # detect binds both edges here: the server side's keys are missing
    assert "the bind side of items runs here: needs server_secret_key_file" in text
