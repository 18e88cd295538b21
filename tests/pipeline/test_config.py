"""The pipeline config: key-path errors, bounds, ${VAR} secrets, *_file secrets, redaction,
per-camera overrides, conversions to the stage configs, the schema and every file in configs/."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import config_cli
from pipeline.config import (
    ARCH_NAMES,
    ConfigError,
    PipelineConfig,
    TrackerSection,
    load_config,
    parse_camera_arg,
    quick_config,
    validate_config,
)
from pipeline.procs import (
    camera_config,
    jsonl_sink_config,
    nms_params,
    redis_sink_config,
    track_stage_config,
    tracker_config,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
MEDIA = REPO.parent / "shared" / "data" / "media"
SECRET = "hunter2-s3cret"


def base(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"random_weights": True, "arch": "yolo_nas_s"},
        "cameras": [{"id": "cam1", "url": "rtsp://192.0.2.1/stream"}],
        "sinks": {"jsonl": {"path": "out/{camera}.jsonl"}},
    }
    data.update(extra)
    return data


def problems(data: dict[str, Any], **kw: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(data, **kw)
    return info.value.problems


def write(tmp_path: Path, data: dict[str, Any] | str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------------ errors and paths


def test_unknown_keys_name_their_path_and_the_closest_key() -> None:
    data = base()
    data["cameras"].append({"id": "cam2", "url": "rtsp://h/s", "stal_timeout_s": 3})
    data["logging"] = {"levle": "INFO"}
    data["batchng"] = {}
    found = problems(data)
    assert "cameras[1].stal_timeout_s: unknown key (did you mean 'stall_timeout_s'" in found[0]
    assert any(p.startswith("logging.levle: unknown key (did you mean 'level'?)") for p in found)
    assert any(p.startswith("batchng: unknown key (did you mean 'batching'?)") for p in found)
    assert len(found) == 3


def test_every_problem_is_listed_with_its_path() -> None:
    data = base(
        batching={"max_batch": 0, "max_wait_ms": 2000},
        sinks={"redis": {"maxlen": 0}},
        preprocess={"workers": 33},
        metrics={"port": 70000},
    )
    data["cameras"][0]["url"] = ""
    found = problems(data)
    assert "batching.max_batch: must be >= 1, got 0" in found
    assert "batching.max_wait_ms: must be <= 1000, got 2000" in found
    assert "sinks.redis.maxlen: must be >= 1, got 0" in found
    assert "preprocess.workers: must be <= 32, got 33" in found
    assert "metrics.port: must be <= 65535, got 70000" in found
    assert "cameras[0].url: must not be empty" in found
    assert len(found) == 6


def test_missing_model_and_bad_literals() -> None:
    data = base(model={"arch": "yolo_nas_xl", "weights": "w.pt", "backend": "tensorflow"})
    found = problems(data, check_files=False)
    assert any(
        p.startswith("model.arch: Input should be 'yolo_nas_n', 'yolo_nas_s'") for p in found
    )
    assert any(p.startswith("model.backend: Input should be 'auto'") for p in found)
    del data["model"]
    assert problems(data) == ["model: required key is missing"]


def test_cross_field_problems_have_their_own_paths() -> None:
    data = base()
    data["cameras"].append({"id": "cam1", "url": "rtsp://h/2"})
    data["camera_defaults"] = {"backoff_min_s": 60, "backoff_max_s": 120}
    data["cameras"][0]["backoff_max_s"] = 10
    found = problems(data)
    assert "cameras[1].id: duplicate id 'cam1' (also cameras[0])" in found
    assert any(
        p.startswith("cameras[0].backoff_max_s: must be >= backoff_min_s (60") for p in found
    )
    assert problems(base(model={"random_weights": True})) == [
        "model.arch: random_weights needs an arch (yolo_nas_s, _m or _l)"
    ]
    assert problems(base(model={"arch": "yolo_nas_s"})) == [
        "model.weights: required (or set random_weights: true for a demo)"
    ]


def test_camera_ids_are_validated() -> None:
    data = base()
    data["cameras"][0]["id"] = "front door"
    assert problems(data)[0].startswith("cameras[0].id: must match")


def test_weights_must_exist_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    data = base(model={"weights": "models/w.pt"})
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"model.weights: file not found: {tmp_path}/models/w.pt"]
    assert str(path) in str(info.value)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "w.pt").write_bytes(b"x")
    cfg = load_config(path)
    assert cfg.model.weights == tmp_path / "models" / "w.pt"
    assert jsonl_sink_config(cfg).path == tmp_path / "out" / "{camera}.jsonl"  # type: ignore[union-attr]


def test_yaml_syntax_duplicates_and_shape(tmp_path: Path) -> None:
    bad = write(tmp_path, "model:\n  arch: yolo_nas_s\n  arch: yolo_nas_m\n")
    with pytest.raises(ConfigError, match="duplicate key 'arch' at line 3"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: invalid YAML"):
        load_config(write(tmp_path, "model: [\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------ secrets


def test_env_substitution_and_defaults() -> None:
    data = base()
    data["cameras"][0]["url"] = "rtsp://admin:${CAM_PASS}@192.0.2.1/s"
    data["sinks"]["redis"] = {"url": "${REDIS_URL:-redis://localhost:6379/0}"}
    data["name"] = "literal$$dollar"  # a pattern error, not a substitution error
    env = {"CAM_PASS": SECRET}
    assert problems(data, env=env) == ["name: must match ^[A-Za-z0-9_.\\-]{1,32}$"]
    del data["name"]
    cfg = validate_config(data, env=env)
    assert cfg.cameras[0].url == f"rtsp://admin:{SECRET}@192.0.2.1/s"
    assert cfg.sinks.redis is not None and cfg.sinks.redis.url == "redis://localhost:6379/0"
    cfg = validate_config(data, env={**env, "REDIS_URL": "redis://r:6380/1"})
    assert cfg.sinks.redis is not None and cfg.sinks.redis.url == "redis://r:6380/1"


def test_missing_env_var_names_path_and_variable_never_a_value() -> None:
    data = base()
    data["cameras"][0]["url"] = "rtsp://admin:${CAM_PASS}@192.0.2.1/s"
    data["sinks"]["redis"] = {"url": "redis://:${REDIS_PASSWORD}@r:6379/0"}
    found = problems(data, env={"REDIS_PASSWORD_OTHER": SECRET})
    assert found == [
        "cameras[0].url: environment variable CAM_PASS is not set",
        "sinks.redis.url: environment variable REDIS_PASSWORD is not set",
    ]
    data["cameras"][0]["url"] = "rtsp://h/${BROKEN"
    assert problems(data, env={"REDIS_PASSWORD": "x"})[0].startswith("cameras[0].url: '${' without")


def test_substitution_only_in_string_fields() -> None:
    found = problems(base(metrics={"port": "${PORT}"}), env={"PORT": "9100"})
    assert found == [
        "metrics.port: Input should be a valid integer, unable to parse string as an integer "
        "(${VAR} is substituted in string fields only)"
    ]


def test_errors_never_quote_a_secret() -> None:
    data = base()
    data["cameras"][0]["url"] = "rtsp://admin:${CAM_PASS}@192.0.2.1/s"
    data["cameras"][0]["transport"] = "${CAM_PASS}"  # a Literal field fed a secret
    data["sinks"]["redis"] = {"url": "http://:${CAM_PASS}@r/"}  # wrong scheme
    with pytest.raises(ConfigError) as info:
        validate_config(data, env={"CAM_PASS": SECRET})
    assert SECRET not in str(info.value)
    assert "cameras[0].transport: Input should be 'tcp' or 'udp'" in info.value.problems
    assert "sinks.redis.url: must start with redis://, rediss:// (TLS) or unix://" in str(
        info.value
    )


def test_password_file_and_password_env(tmp_path: Path) -> None:
    secret_file = tmp_path / "cam-pass"
    secret_file.write_text(SECRET + "\n")
    data = base()
    data["cameras"][0] = {
        "id": "cam1",
        "url": "rtsp://viewer@192.0.2.1/s",
        "password_file": str(secret_file),
    }
    data["sinks"]["redis"] = {"url": "redis://r:6379/0", "password_env": "REDIS_PW"}
    assert problems(data, env={}) == [
        "sinks.redis.password_env: environment variable REDIS_PW is not set"
    ]
    cfg = validate_config(data, env={"REDIS_PW": "redis-pw-value"})
    cam = camera_config("cam1", cfg)
    assert cam.url == f"rtsp://viewer:{SECRET}@192.0.2.1/s"
    rs = redis_sink_config(cfg)
    assert rs is not None and rs.password_env == "REDIS_PW"
    dump = json.dumps(cfg.redacted_dump())
    assert SECRET not in dump and "redis-pw-value" not in dump
    assert SECRET in cfg.secrets() and "redis-pw-value" in cfg.secrets()
    # a password file needs a user in the url, and a missing file is an error
    data["cameras"][0]["url"] = "rtsp://192.0.2.1/s"
    data["cameras"][0]["password_file"] = str(tmp_path / "nope")
    found = problems(data, env={"REDIS_PW": "x"})
    assert found == [f"cameras[0].password_file: file not found: {tmp_path}/nope"]
    data["cameras"][0]["password_file"] = str(secret_file)
    assert problems(data, env={"REDIS_PW": "x"}) == [
        "cameras[0].password_file: needs a user name in the url (scheme://user@host/...)"
    ]


def test_redacted_dump_repr_and_redact_mask_credentials(caplog: pytest.LogCaptureFixture) -> None:
    data = base()
    data["cameras"][0]["url"] = "rtsp://admin:${CAM_PASS}@192.0.2.1/s?token=tok123456"
    data["cameras"][0]["options"] = {"headers": "Authorization: Bearer ${API_TOKEN}"}
    data["sinks"]["redis"] = {"url": "redis://user:${REDIS_PASSWORD}@r:6379/0"}
    env = {"CAM_PASS": SECRET, "REDIS_PASSWORD": "redis-secret-1", "API_TOKEN": "bearer-tok-9"}
    cfg = validate_config(data, env=env)
    dump = json.dumps(cfg.redacted_dump())
    for value in (SECRET, "redis-secret-1", "bearer-tok-9", "tok123456"):
        assert value not in dump
        assert value not in cfg.redact(f"failed to open {cfg.cameras[0].url}: {value}")
    # repr/str mask what is recognisable on its own: URL passwords and secret query values
    for value in (SECRET, "redis-secret-1", "tok123456"):
        assert value not in repr(cfg) and value not in str(cfg.camera("cam1"))
    assert "rtsp://admin:***@192.0.2.1/s" in dump
    assert "redis://user:***@r:6379/0" in dump
    # the live config still holds the real values
    assert SECRET in camera_config("cam1", cfg).url


# ------------------------------------------------------------------------ overrides, conversions


def test_per_camera_overrides_merge_over_defaults() -> None:
    data = base(realtime=True)
    data["camera_defaults"] = {
        "detect_fps": 10,
        "transport": "tcp",
        "options": {"rtsp_flags": "prefer_tcp", "buffer_size": "1024"},
    }
    data["cameras"] = [
        {"id": "a", "url": "rtsp://h/a", "transport": "udp", "options": {"buffer_size": "4096"}},
        {"id": "b", "url": "rtsp://h/b", "detect_fps": None, "realtime": False},
        {"id": "c", "url": "rtsp://h/c"},
    ]
    cfg = validate_config(data)
    a, b, c = (cfg.camera(i) for i in "abc")
    assert (a.transport, a.detect_fps, a.realtime) == ("udp", 10, True)
    assert a.options == {"rtsp_flags": "prefer_tcp", "buffer_size": "4096"}
    assert (b.transport, b.detect_fps, b.realtime) == ("tcp", None, False)  # explicit null wins
    assert (c.transport, c.detect_fps, c.options["buffer_size"]) == ("tcp", 10, "1024")
    cc = camera_config("a", cfg)
    assert (cc.url, cc.transport, cc.detect_fps, cc.realtime) == ("rtsp://h/a", "udp", 10, True)
    assert camera_config(cfg.cameras[1], cfg).realtime is False
    with pytest.raises(KeyError, match="no camera 'z'"):
        cfg.camera("z")


def test_conversions_to_stage_configs() -> None:
    from stages.track.config import TrackerConfig

    data = base(tracker={"min_hits": 1, "lost_track_seconds": 4, "state_dir": "/tmp/ids"})
    data["cameras"][0]["frame_rate_hz"] = 12.5
    data["model"]["conf_threshold"] = 0.4
    data["sinks"]["redis"] = {"url": "redis://r:6379/0", "maxlen": 100}
    cfg = validate_config(data)
    tc = tracker_config(cfg)
    assert (tc.min_hits, tc.lost_track_seconds) == (1, 4)
    ts = track_stage_config(cfg)
    assert ts.frame_rates_hz == {"cam1": 12.5} and ts.state_dir == Path("/tmp/ids")
    assert nms_params(cfg).conf == 0.4
    rs = redis_sink_config(cfg)
    assert rs is not None and rs.maxlen == 100
    # the tracker section carries exactly TrackerConfig's fields plus the stage's two
    stage_only = {"default_frame_rate_hz", "state_dir"}
    assert set(TrackerSection.model_fields) - stage_only == set(TrackerConfig.field_names())
    assert TrackerSection().model_dump(exclude=stage_only) == TrackerConfig().model_dump()


def test_arch_names_match_the_network_registry() -> None:
    from stages.detect.nn import ARCHS

    assert set(ARCH_NAMES) == set(ARCHS)


def test_transport_endpoints_and_remote_stages() -> None:
    data = base(transport={"stages": ["detect"]})
    data["cameras"] = []
    data["sinks"] = {}
    found = problems(data)
    assert len(found) == 2
    assert found[0].startswith(
        "transport.edges.items.endpoint: the preprocess stage runs elsewhere"
    )
    assert found[1].startswith("transport.edges.detections.endpoint: the track stage runs")
    data["transport"]["edges"] = {
        "items": {"endpoint": "bind:tcp://*:5701"},
        "detections": {"endpoint": "connect:tcp://*:5702"},
    }
    assert problems(data) == [
        "transport.edges.detections.endpoint: Value error, a connect endpoint needs a host "
        "name or address, not '*'"
    ] or problems(data)[0].endswith("not '*'")
    data["transport"]["edges"]["detections"] = {"endpoint": "bind:tcp://0.0.0.0:5702"}
    cfg = validate_config(data)
    assert cfg.runs("detect") and not cfg.runs("decode")
    data["transport"]["edges"]["items"] = {"endpoint": "udp://x"}
    assert problems(data)[0].startswith("transport.edges.items.endpoint: must be 'auto'")


def test_decode_needs_cameras_and_sink_needs_a_sink() -> None:
    assert problems(base(cameras=[], sinks={})) == [
        "cameras: at least one camera is needed to run the decode stage",
        "sinks: the sink stage runs here but no sink is configured",
    ]


def test_file_cameras_are_resolved_and_checked(tmp_path: Path) -> None:
    data = base()
    data["cameras"][0]["url"] = "clips/x.mp4"
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [f"cameras[0].url: video file not found: {tmp_path}/clips/x.mp4"]
    assert load_config(path, check_files=False).cameras[0].url == f"{tmp_path}/clips/x.mp4"


def test_quick_config_and_camera_flag() -> None:
    cfg = quick_config(
        {"door": str(MEDIA / "car-detection.mp4")},
        arch="yolo_nas_s",
        random_weights=True,
        redis_url="redis://localhost:6379/0",
        realtime=False,
        metrics_port=0,
    )
    assert cfg.camera("door").realtime is False and cfg.metrics.port == 0
    assert cfg.sinks.redis is not None and cfg.sinks.jsonl is None
    assert quick_config({"a": "rtsp://h/s"}, random_weights=True, arch="yolo_nas_s").sinks.jsonl
    with pytest.raises(ConfigError, match=r"model\.weights: file not found"):
        quick_config({"a": "rtsp://h/s"}, weights="/nonexistent/w.pt")
    assert parse_camera_arg("cam1=rtsp://u:p@h/s") == ("cam1", "rtsp://u:p@h/s")
    with pytest.raises(ValueError, match=r"ID=URL, got 'rtsp://u:\*\*\*@h/s'"):
        parse_camera_arg("rtsp://u:pw123@h/s")


# ------------------------------------------------------------------------ files and schema


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_example_config_loads(path: Path) -> None:
    cfg = load_config(path, env={})
    assert isinstance(cfg, PipelineConfig)
    json.dumps(cfg.redacted_dump())


def test_examples_cover_the_documented_shapes() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "default.yaml",
        "offline.yaml",
        "many-cameras-gpu.yaml",
        "detect-remote.yaml",
        "detect-remote-detector.yaml",
        "demo.yaml",
    } <= names
    offline = load_config(REPO / "configs" / "offline.yaml", env={})
    assert offline.realtime is False and offline.sinks.jsonl is not None
    gpu = load_config(REPO / "configs" / "many-cameras-gpu.yaml", env={})
    assert len(gpu.cameras) >= 8 and gpu.batching.max_batch == 16
    a = load_config(REPO / "configs" / "detect-remote.yaml", env={})
    b = load_config(REPO / "configs" / "detect-remote-detector.yaml", env={})
    assert set(a.transport.stages) | set(b.transport.stages) == {
        "decode",
        "preprocess",
        "detect",
        "track",
        "sink",
    }
    assert not set(a.transport.stages) & set(b.transport.stages)


def test_schema_formats() -> None:
    schema = json.loads(config_cli.render_schema("json"))
    assert schema["additionalProperties"] is False
    assert "cameras" in schema["properties"]
    reference = yaml.safe_load(config_cli.render_schema("yaml"))
    assert reference["batching"] == {
        "max_batch": 8,
        "max_wait_ms": 10.0,
        "slots_per_camera": 1,
        "max_frame_age_ms": 500.0,
        "calibrate": True,
    }
    md = config_cli.render_schema("markdown")
    assert "| `max_batch` | integer | `8` | >= 1, <= 64 |" in md


def test_every_field_has_a_description() -> None:
    for path, model in config_cli._sections(PipelineConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}.{name} has no description"


def test_committed_reference_is_up_to_date() -> None:
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == config_cli.render_schema("markdown"), (
        "docs/config-reference.md is stale: run "
        "`edgestream config schema --format markdown > docs/config-reference.md`"
    )


def test_config_check_command(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-c", _CLI, "check", str(REPO / "configs" / "offline.yaml"), "--print"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "offline.yaml: ok — 2 cameras" in ok.stdout
    assert yaml.safe_load(ok.stdout.split("\n", 1)[1])["realtime"] is False
    data = base(batching={"max_batch": 0})
    data["cameras"][0]["url"] = "rtsp://u:${CAM_PASS}@h/s"
    bad = subprocess.run(
        [sys.executable, "-c", _CLI, "check", str(write(tmp_path, data))],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == 2
    assert "cameras[0].url: environment variable CAM_PASS is not set" in bad.stderr
    assert "batching.max_batch: must be >= 1, got 0" in bad.stderr


_CLI = f"""
import argparse, sys
sys.path.insert(0, {str(REPO)!r})
from pipeline import config_cli
p = argparse.ArgumentParser(prog="edgestream")
config_cli.add_parsers(p.add_subparsers(dest="command"))
args = p.parse_args(["config", *sys.argv[1:]])
sys.exit(args.func(args))
"""


def test_logging_a_config_is_safe(caplog: pytest.LogCaptureFixture) -> None:
    data = base()
    data["cameras"][0]["url"] = "rtsp://admin:${CAM_PASS}@192.0.2.1/s"
    cfg = validate_config(data, env={"CAM_PASS": SECRET})
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("config %s / %r / %s", cfg, cfg.cameras[0], cfg.redacted_dump())
    assert SECRET not in caplog.text


def test_a_config_crosses_process_boundaries_intact() -> None:
    """Spawned children receive the config pickled: values and secrets survive."""
    import pickle

    data = base()
    data["cameras"][0]["url"] = "rtsp://admin:${CAM_PASS}@192.0.2.1/s"
    cfg = validate_config(data, env={"CAM_PASS": SECRET})
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg
    assert again.secrets() == cfg.secrets() and SECRET in again.secrets()
    assert camera_config("cam1", again).url == camera_config("cam1", cfg).url
