"""Live camera changes without processes: the token rules, the validation of one camera as a
config entry, what can and cannot change live, reload of a file, shards, and the CLI's answers.

The supervisor is a stand-in that records each config it is asked to run (what the real one
does with it is tests/runtime/test_live_cameras.py); the HTTP server is the real one.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cameras_api import CameraManager, diff, needs_restart
from pipeline.config import ConfigError, PipelineConfig, validate_config
from pipeline.control import (
    WRITES_OFF,
    ControlConfig,
    TokenError,
    check_bearer,
    load_token,
)
from pipeline.health import HealthServer
from pipeline.logs import setup_logging
from pipeline.shard import Shard, owner
from pipeline.stats import StatsBoard

TOKEN = "unit-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeSupervisor:
    """What `CameraManager` uses of `pipeline.supervisor.Supervisor`."""

    def __init__(self, cfg: PipelineConfig, config_path: Path | None = None) -> None:
        self.cfg = self.start_cfg = cfg
        self.config_path = config_path
        self.shard: Shard | None = None
        self.board = StatsBoard()
        self.control_generation = 0
        self.model = None
        self.applied: list[PipelineConfig] = []

    def apply_cameras(self, new: PipelineConfig) -> bool:
        self.cfg = new
        self.control_generation += 1
        self.applied.append(new)
        return True

    def decode_cameras(self) -> dict[str, dict[str, Any]]:
        return {}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "m.onnx").write_bytes(b"\0")
    (tmp_path / "a.mp4").write_bytes(b"\0")
    (tmp_path / "token").write_text(TOKEN + "\n")
    data = {
        "model": {"weights": "m.onnx", "backend": "onnxruntime"},
        "camera_defaults": {"loop": True, "detect_fps": 5},
        "cameras": [{"id": "a", "url": "a.mp4"}, {"id": "b", "url": "rtsp://cam/b"}],
        "sinks": {"jsonl": {"path": "out/{camera}.jsonl"}},
        "control": {"token_file": "token"},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return {"dir": tmp_path, "data": data, "path": path}


def manager(files: dict[str, Any]) -> tuple[CameraManager, FakeSupervisor]:
    from pipeline.config import load_config

    sup = FakeSupervisor(load_config(files["path"]), files["path"])
    return CameraManager(sup), sup  # type: ignore[arg-type]


def call(m: CameraManager, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    raw = b"" if body is None else json.dumps(body).encode()
    answer = m.handle(method, path, AUTH if headers is None else headers, raw)
    assert answer is not None
    return answer


# ------------------------------------------------------------------------------ the token


def test_bearer_rules() -> None:
    assert check_bearer(f"Bearer {TOKEN}", TOKEN) is None
    assert check_bearer(f"bearer   {TOKEN} ", TOKEN) is None
    assert check_bearer(None, TOKEN) == (401, check_bearer("", TOKEN)[1])  # type: ignore[index]
    assert check_bearer(f"Basic {TOKEN}", TOKEN)[0] == 401  # type: ignore[index]
    assert check_bearer("Bearer " + TOKEN[:-1] + "x", TOKEN) == (403, "wrong token")
    status, reason = check_bearer(f"Bearer {TOKEN}", None)  # type: ignore[misc]
    assert status == 403 and reason == WRITES_OFF
    assert "control.token_file" in reason and "control.token_env" in reason


def test_token_sources_and_their_errors(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN + "\n")
    (tmp_path / "short").write_text("abc\n")
    assert load_token(ControlConfig()) is None  # nothing configured: writes off
    ctx = {"base_dir": tmp_path}
    assert load_token(ControlConfig.model_validate({"token_file": "t"}, context=ctx)) == TOKEN
    assert load_token(ControlConfig(token_env="ES_TOKEN"), env={"ES_TOKEN": TOKEN}) == TOKEN
    with pytest.raises(TokenError, match=r"\$ES_TOKEN is not set"):
        load_token(ControlConfig(token_env="ES_TOKEN"), env={})
    with pytest.raises(TokenError, match="3 characters; use at least 16"):
        load_token(ControlConfig.model_validate({"token_file": "short"}, context=ctx))
    with pytest.raises(ConfigError) as err:
        validate_config({"model": {"random_weights": True, "arch": "yolo_nas_s"},
                         "control": {"token_file": "nope", "token_envv": "X"}},
                        base_dir=tmp_path, check_files=True)  # fmt: skip
    problems = "\n".join(err.value.problems)
    assert f"control.token_file: token file not found: {tmp_path / 'nope'}" in problems
    assert "control.token_envv: unknown key (did you mean 'token_env'" in problems


def test_the_token_is_masked_in_log_lines(tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN)
    out = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        setup_logging("INFO", "text", "test", stream=out)
        load_token(
            ControlConfig.model_validate({"token_file": "t"}, context={"base_dir": tmp_path})
        )
        logging.getLogger("edgestream.x").warning("header was Bearer %s", TOKEN)
    finally:
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)
    assert "header was Bearer ***" in out.getvalue() and TOKEN not in out.getvalue()


# ------------------------------------------------------------------------------ writes


def test_no_or_wrong_token_changes_nothing(files: dict[str, Any]) -> None:
    m, sup = manager(files)
    cam = {"id": "c", "url": "rtsp://cam/c"}
    assert call(m, "POST", "/cameras", cam, headers={})[0] == 401
    assert call(m, "POST", "/cameras", cam, headers={"Authorization": "Bearer x" * 3})[0] == 403
    assert call(m, "DELETE", "/cameras/a", headers={})[0] == 401
    assert call(m, "POST", "/reload", headers={"authorization": "Bearer nope"})[0] == 403
    assert sup.applied == [] and sup.cfg.camera_ids == ["a", "b"]


def test_writes_are_off_without_a_token(files: dict[str, Any]) -> None:
    data = {**files["data"], "control": {}}
    sup = FakeSupervisor(validate_config(data, base_dir=files["dir"]))
    m = CameraManager(sup)  # type: ignore[arg-type]
    status, body = call(m, "DELETE", "/cameras/a")
    assert status == 403 and body["error"] == WRITES_OFF
    assert call(m, "GET", "/cameras", headers={})[1]["writes"] == "off"
    assert sup.applied == []


def test_an_added_camera_is_a_config_entry_merged_with_the_running_defaults(
    files: dict[str, Any],
) -> None:
    m, sup = manager(files)
    status, body = call(m, "POST", "/cameras", {"id": "c", "url": "a.mp4", "loop": False})
    assert status == 201 and body["added"] == ["c"], body
    c = sup.cfg.camera("c")
    assert c.url == str(files["dir"] / "a.mp4")  # relative to the config file, like YAML
    assert (c.detect_fps, c.loop) == (5, False)  # camera_defaults, then the entry
    status, body = call(m, "POST", "/cameras", {"id": "d", "url": "rtsp://u:pw-secret@cam/x"})
    assert status == 201
    assert "pw-secret" in sup.cfg.secrets()  # redacted in every line from now on
    listed = call(m, "GET", "/cameras", headers={})[1]["cameras"]
    assert [x["id"] for x in listed] == ["a", "b", "c", "d"]
    assert listed[3]["url"] == "rtsp://u:***@cam/x"


def test_bad_entries_are_422_with_key_paths_and_change_nothing(files: dict[str, Any]) -> None:
    m, sup = manager(files)
    status, body = call(m, "POST", "/cameras",
                        {"id": "bad id!", "url": "ftp://x/y", "open_timeout_s": 0})  # fmt: skip
    assert status == 422
    assert sorted(body["errors"]) == [
        "id: must match ^[A-Za-z0-9_.\\-]{1,64}$",
        "open_timeout_s: must be > 0, got 0",
        "url: unsupported URL scheme in ftp://x/y (rtsp, rtsps, http, https, file, v4l2 or a "
        "file path)",
    ]
    status, body = call(m, "PATCH", "/cameras/a", {"detect_fsp": 2})
    assert status == 422
    assert body["errors"] == ["detect_fsp: unknown key (did you mean 'detect_fps'?)"]
    assert call(m, "POST", "/cameras", {"id": "a", "url": "a.mp4"})[0] == 409  # exists
    assert call(m, "PATCH", "/cameras/a", {"id": "z"})[0] == 422
    assert call(m, "PATCH", "/cameras/zz", {"loop": False})[0] == 404
    assert m.handle("POST", "/cameras", AUTH, b"{not json")[0] == 400  # type: ignore[index]
    assert sup.applied == []


def test_patch_and_delete(files: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PW", "pa$$w0rd")
    m, sup = manager(files)
    assert call(m, "PATCH", "/cameras/b", {"url": "rtsp://u:${CAM_PW}@cam/b"})[0] == 200
    assert sup.cfg.camera("b").url == "rtsp://u:pa$$w0rd@cam/b"
    status, body = call(m, "PATCH", "/cameras/b", {"detect_fps": 2})
    assert status == 200 and body["changed"] == ["b"]
    assert sup.cfg.camera("b").url == "rtsp://u:pa$$w0rd@cam/b"  # not substituted twice
    assert sup.cfg.camera("b").detect_fps == 2
    status, body = call(m, "DELETE", "/cameras/a")
    assert status == 200 and body["removed"] == ["a"] and sup.cfg.camera_ids == ["b"]
    status, body = call(m, "DELETE", "/cameras/b")  # the config's own rule: one camera at least
    assert status == 409 and "at least one camera" in body["errors"][0]
    assert sup.cfg.camera_ids == ["b"]


def test_what_the_running_stages_fixed_at_start_is_refused(files: dict[str, Any]) -> None:
    m, sup = manager(files)
    status, body = call(m, "PATCH", "/cameras/a", {"realtime": False})
    assert status == 409 and "changing that needs a restart" in body["errors"][0]
    assert sup.applied == []


def test_a_replica_takes_only_its_own_cameras(files: dict[str, Any]) -> None:
    m, sup = manager(files)
    sup.shard = Shard(0, 2)
    mine = next(f"cam{i}" for i in range(100) if owner(f"cam{i}", 2) == 0)
    theirs = next(f"cam{i}" for i in range(100) if owner(f"cam{i}", 2) == 1)
    assert call(m, "POST", "/cameras", {"id": mine, "url": "a.mp4"})[0] == 201
    status, body = call(m, "POST", "/cameras", {"id": theirs, "url": "a.mp4"})
    assert status == 409 and "belongs to replica 1 of 2, this is replica 0" in body["errors"][0]


# ------------------------------------------------------------------------------ reload


def test_reload_applies_the_camera_difference_and_reports_the_rest(files: dict[str, Any]) -> None:
    m, sup = manager(files)
    data = json.loads(json.dumps(files["data"]))
    data["cameras"] = [{"id": "b", "url": "rtsp://cam/b2"}, {"id": "n", "url": "a.mp4"}]
    data["camera_defaults"]["detect_fps"] = 3
    data["batching"] = {"max_wait_ms": 7}
    files["path"].write_text(yaml.safe_dump(data))
    status, body = call(m, "POST", "/reload")
    assert status == 200, body
    assert (body["added"], body["removed"], body["changed"]) == (["n"], ["a"], ["b"])
    assert body["needs_restart"] == ["batching.max_wait_ms"]
    assert sup.cfg.batching == sup.start_cfg.batching  # kept: the stages run with it
    assert sup.cfg.camera("n").detect_fps == 3  # the new defaults apply


def test_an_invalid_file_is_refused_and_the_running_config_kept(files: dict[str, Any]) -> None:
    m, sup = manager(files)
    data = json.loads(json.dumps(files["data"]))
    data["cameras"].append({"id": "a", "url": "a.mp4"})
    files["path"].write_text(yaml.safe_dump(data))
    status, body = call(m, "POST", "/reload")
    assert status == 422
    assert body["errors"] == ["cameras[2].id: duplicate id 'a' (also cameras[0])"]
    files["path"].write_text("model: [")
    status, body = call(m, "POST", "/reload")
    assert status == 422 and "invalid YAML" in body["errors"][0]
    assert sup.applied == [] and sup.cfg.camera_ids == ["a", "b"]


def test_diff_and_needs_restart_compare_effective_settings(files: dict[str, Any]) -> None:
    from pipeline.config import load_config

    old = load_config(files["path"])
    data = json.loads(json.dumps(files["data"]))
    data["camera_defaults"]["detect_fps"] = 9  # every camera's effective settings change
    data["metrics"] = {"port": 1234}
    path = files["dir"] / "other.yaml"
    path.write_text(yaml.safe_dump(data))
    new = load_config(path)
    assert diff(old, new) == {"added": [], "removed": [], "changed": ["a", "b"]}
    assert needs_restart(old, new) == ["metrics.port"]


# ------------------------------------------------------------------------------ HTTP


def test_the_http_server_routes_methods_bodies_and_headers() -> None:
    seen: list[tuple[str, str, str | None, bytes]] = []

    def api(method: str, path: str, headers: Any, body: bytes) -> Any:
        if path == "/boom":
            raise RuntimeError(f"leaks {TOKEN}")
        if not path.startswith("/cameras"):
            return None
        seen.append((method, path, headers.get("Authorization"), body))
        return 200, {"ok": method}

    import urllib.error
    import urllib.request

    with HealthServer("127.0.0.1", 0, api=api) as srv:

        def send(method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
            req = urllib.request.Request(srv.url + path, data=body, method=method,
                                         headers={"Authorization": "Bearer t"})  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        assert send("GET", "/cameras") == (200, {"ok": "GET"})
        assert send("POST", "/cameras", b'{"id": 1}') == (200, {"ok": "POST"})
        assert send("PATCH", "/cameras/x/", b"{}") == (200, {"ok": "PATCH"})
        assert send("DELETE", "/cameras/x") == (200, {"ok": "DELETE"})
        assert seen[1] == ("POST", "/cameras", "Bearer t", b'{"id": 1}')
        assert seen[2][1] == "/cameras/x"
        assert send("POST", "/elsewhere")[0] == 404
        assert send("GET", "/elsewhere")[0] == 404
        status, text = send("POST", "/boom", b"{}")
        assert status == 500 and "RuntimeError" in text and TOKEN not in text
        status, _ = send("POST", "/cameras", b"x" * (64 * 1024 + 1))
        assert status == 413
        assert len(seen) == 4


def test_the_cli_prints_refusals_and_exits_1(files: dict[str, Any], capsys: Any) -> None:
    from pipeline.cli import main

    m, sup = manager(files)

    def api(method: str, path: str, headers: Any, body: bytes) -> Any:
        return m.handle(method, path, headers, body)

    with HealthServer("127.0.0.1", 0, api=api) as srv:
        assert main(["cameras", "list", "--url", srv.url]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].split()[:3] == ["id", "state", "fps"]
        assert "(2 camera(s); writes on;" in out
        assert main(["cameras", "add", "c", "rtsp://cam/c", "--url", srv.url]) == 1
        assert "refused (401)" in capsys.readouterr().err
        token = files["dir"] / "token"
        args = ["--url", srv.url, "--token-file", str(token)]
        assert main(["cameras", "add", "c", "rtsp://cam/c", "--set", "detect_fps=0", *args]) == 1
        assert "detect_fps: must be > 0, got 0" in capsys.readouterr().err
        assert main(["cameras", "add", "c", "rtsp://cam/c", "--set", "detect_fps=2", *args]) == 0
        assert "added: c" in capsys.readouterr().out
        assert sup.cfg.camera("c").detect_fps == 2
        assert main(["cameras", "remove", "a", *args]) == 0
        assert main(["reload", *args]) == 0  # the file still has a and b: back to them
        assert "added: a" in capsys.readouterr().out
        assert sup.cfg.camera_ids == ["a", "b"]


def test_an_unusable_token_stops_the_start_and_a_reload_rotates_it(files: dict[str, Any]) -> None:
    from pipeline.config import load_config

    (files["dir"] / "token").write_text("short\n")
    with pytest.raises(TokenError, match="use at least 16"):  # exit 2 before any process
        CameraManager(FakeSupervisor(load_config(files["path"]), files["path"]))  # type: ignore[arg-type]
    (files["dir"] / "token").write_text(TOKEN)
    m, sup = manager(files)
    (files["dir"] / "token").write_text("short")
    status, body = call(m, "POST", "/reload")
    assert status == 422 and "use at least 16" in body["errors"][0]
    assert m.token == TOKEN and sup.applied == []
    new = "rotated-token-rotated-token-0123"
    (files["dir"] / "token").write_text(new)
    assert call(m, "POST", "/reload")[0] == 200
    assert call(m, "DELETE", "/cameras/a")[0] == 403  # the old token no longer works
    assert call(m, "DELETE", "/cameras/a", headers={"Authorization": f"Bearer {new}"})[0] == 200


def test_an_unknown_class_is_422_naming_the_camera(files: dict[str, Any]) -> None:
    m, sup = manager(files)
    status, body = call(m, "POST", "/cameras", {"id": "c", "url": "a.mp4", "classes": ["unicorn"]})
    assert status == 422
    assert body["errors"][0].startswith("cameras.c.classes: the model has no class 'unicorn'")
    assert call(m, "POST", "/cameras", {"id": "c", "url": "a.mp4", "classes": ["person"]})[0] == 201
    assert sup.cfg.camera("c").classes == ["person"]
