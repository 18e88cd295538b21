"""`edgestream models` and `models pull`, against a local HTTP server (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import models_registry as reg
from pipeline.cli import main
from pipeline.config import quick_config

PAYLOAD = b"not really a checkpoint, but bytes to hash " * 1000


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/good.pth":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/forbidden.pth":
            self.send_error(403, "Forbidden")
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "edgestream" / "models"


def _pin(monkeypatch: pytest.MonkeyPatch, name: str, sha256: str | None) -> None:
    models = tuple(
        dataclasses.replace(m, sha256=sha256) if m.name == name else m for m in reg.MODELS
    )
    monkeypatch.setattr(reg, "MODELS", models)


def test_cache_honours_xdg(cache: Path) -> None:
    assert reg.models_dir() == cache


def test_list_names_licences_and_unknown_checksums(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("yolo_nas_s_coco", "yolo_nas_m_coco", "yolo_nas_l_coco", "demo"):
        assert name in out
    assert "non-commercial" in out and "LICENSE.YOLONAS.md" in out
    assert "unknown" in out  # no invented checksums for Deci's files
    assert reg.find("demo").sha256 in out  # type: ignore[union-attr]
    assert str(cache) in out


def test_pull_good_file_checksum_checked_then_found_by_name(
    server: str, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _pin(monkeypatch, "yolo_nas_s_coco", hashlib.sha256(PAYLOAD).hexdigest())
    code = main(
        ["models", "pull", "yolo_nas_s_coco", "--url", f"{server}/good.pth", "--accept-license"]
    )
    assert code == 0
    target = cache / "yolo_nas_s_coco.pth"
    assert target.read_bytes() == PAYLOAD
    assert list(cache.glob("*.part")) == []
    assert "checked" in capsys.readouterr().out
    # --weights NAME (and the file name) finds the cached file: config and detect's argument
    assert reg.resolve_weights("yolo_nas_s_coco") == target
    assert reg.weights_arg("yolo_nas_s_coco.pth") == target
    # `run --weights NAME` goes through the config: the same resolution
    cfg = quick_config({"a": str(cache / "yolo_nas_s_coco.pth")}, weights="yolo_nas_s_coco")
    assert cfg.model.weights == target


def test_pull_wrong_checksum_refused_nothing_cached(
    server: str, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pin(monkeypatch, "yolo_nas_m_coco", "0" * 64)
    with pytest.raises(reg.PullError, match=r"checksum mismatch.*nothing was cached"):
        reg.pull("yolo_nas_m_coco", url=f"{server}/good.pth", accept_license=True, progress=False)
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.parametrize("path", ["/forbidden.pth", "/missing.pth"])
def test_pull_refused_says_so_and_how_to_use_url(
    server: str, cache: Path, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["models", "pull", "yolo_nas_l_coco", "--url", server + path, "--accept-license"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "download refused: HTTP 40" in err[0] and "--url" in err[0] and "file://" in err[0]
    assert list(cache.glob("*")) == []


def test_pull_connection_refused(cache: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(reg.PullError, match=r"could not reach the host.*--url"):
        reg.pull("yolo_nas_s_coco", url=f"http://127.0.0.1:{port}/x.pth", accept_license=True)


def test_pull_official_host_refusal_names_the_known_problem(
    cache: Path, monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    # the official address, served here by the local server's 403
    models = tuple(
        dataclasses.replace(m, url=f"{server}/forbidden.pth") if m.name == "yolo_nas_s_coco" else m
        for m in reg.MODELS
    )
    monkeypatch.setattr(reg, "MODELS", models)
    with pytest.raises(reg.PullError, match=r"HTTP 403.*#2057.*--url"):
        reg.pull("yolo_nas_s_coco", accept_license=True, progress=False)


def test_pull_needs_accept_license_for_non_commercial(
    server: str, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["models", "pull", "yolo_nas_s_coco", "--url", f"{server}/good.pth"])
    assert code == 2
    err = capsys.readouterr().err
    assert "non-commercial" in err and "--accept-license" in err
    assert not cache.exists()


def test_pull_from_a_local_file_url(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "copy.pth"
    src.write_bytes(PAYLOAD)
    got = reg.pull("yolo_nas_s_coco", url=src.as_uri(), accept_license=True, progress=False)
    assert got.read_bytes() == PAYLOAD


def test_known_but_not_pulled_says_how(cache: Path) -> None:
    with pytest.raises(reg.PullError, match="models pull yolo_nas_m_coco --accept-license"):
        reg.resolve_weights("yolo_nas_m_coco")
    assert reg.resolve_weights("demo") == reg.find("demo").shipped  # type: ignore[union-attr]
    assert reg.resolve_weights("no_such_model.pth") == Path("no_such_model.pth")
