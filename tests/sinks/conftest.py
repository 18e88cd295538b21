"""Fixtures for the sink tests: real redis-server processes, TLS material, frames, schemas."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import REDIS_SERVER, RedisServer

from pipeline.payloads import FrameResult, TrackedObject, TrackLifecycleEvent
from stages.sinks import schemas

CLASSES = ("person", "car", "bicycle", "dog")


def make_frame(
    camera: str,
    frame_id: int,
    capture_ts: float,
    n_objects: int = 3,
    events: bool = False,
) -> FrameResult:
    """A 1920x1080 frame with ``n_objects`` tracked objects (and a ``new`` event if asked)."""
    objects = [
        TrackedObject(
            track_id=k + 1,
            class_id=k % len(CLASSES),
            class_name=CLASSES[k % len(CLASSES)],
            score=0.5 + (k % 5) / 10,
            box=(10.0 * k, 20.0, 10.0 * k + 50.5, 120.25),
        )
        for k in range(n_objects)
    ]
    evs = (
        [TrackLifecycleEvent("new", frame_id + 1, 0, "person", capture_ts, capture_ts, capture_ts)]
        if events
        else []
    )
    stage_ts = {"decode": capture_ts + 0.005, "detect": capture_ts + 0.02}
    return FrameResult(camera, frame_id, capture_ts, 1920, 1080, objects, stage_ts, evs)


@pytest.fixture(scope="session")
def validators() -> dict[str, Any]:
    """``{"detections": validator, "track_event": validator}`` (jsonschema, draft 2020-12)."""
    jsonschema = pytest.importorskip("jsonschema")
    out = {}
    for kind, name in (
        ("detections", schemas.DETECTIONS_V1),
        ("track_event", schemas.TRACK_EVENT_V1),
    ):
        schema = schemas.load(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema)
    return out


@pytest.fixture
def redis_factory(tmp_path: Path, require: Callable[[str | None], None]) -> Iterator[Any]:
    """Starts servers on demand (``redis_factory(**kwargs)``); stops every one afterwards."""
    require(None if REDIS_SERVER else "redis-server not installed (apt-get install redis-server)")
    started: list[RedisServer] = []

    def start(**kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", **kwargs)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()
        assert all(s.proc is None for s in started)


@pytest.fixture
def redis_server(redis_factory: Any) -> RedisServer:
    server: RedisServer = redis_factory()
    return server


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by
    it, plus an unrelated CA (``wrong_ca``) that signed nothing here."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out_dir = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, key: Any, cert: x509.Certificate) -> None:
        (out_dir / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (out_dir / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def ca(cn: str) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key: Any, ca_cert: x509.Certificate, cn: str, server: bool) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("edgestream test CA")
    write("ca", ca_key, ca_cert)
    write("server", *leaf(ca_key, ca_cert, "localhost", server=True))
    write("client", *leaf(ca_key, ca_cert, "edgestream-sink", server=False))
    write("wrong_ca", *ca("some other CA"))
    return {
        "ca": out_dir / "ca.crt",
        "cert": out_dir / "server.crt",
        "key": out_dir / "server.key",
        "client_cert": out_dir / "client.crt",
        "client_key": out_dir / "client.key",
        "wrong_ca": out_dir / "wrong_ca.crt",
    }
