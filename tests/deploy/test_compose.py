"""deploy/compose: the files parse, the pipeline config validates with the example env file, and
the Redis ACL that compose.yaml starts Redis with lets the real Redis sink publish (and only
touch edgestream:* keys): redis-server started with compose's own command line."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"


def _env_example() -> dict[str, str]:
    out = {}
    for line in (COMPOSE / "edgestream.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def test_compose_file_and_config() -> None:
    from pipeline.config import load_config

    spec = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    assert set(spec["services"]) == {"redis", "edgestream", "prometheus", "grafana"}
    es = spec["services"]["edgestream"]
    assert es["build"]["dockerfile"] == "deploy/docker/Dockerfile.cpu" and es["shm_size"]
    assert spec["services"]["prometheus"]["profiles"] == ["monitoring"]
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["edgestream:9752"]
    env = {**_env_example(), **es["environment"]}
    cfg = load_config(COMPOSE / "edgestream.yaml", env=env, check_files=False)
    assert cfg.sinks.redis is not None and cfg.sinks.redis.username == "edgestream"
    assert "change-me" not in cfg.redact(cfg.cameras[0].url)


@pytest.mark.redis
@pytest.mark.timeout(240)
def test_the_compose_redis_acl_lets_the_sink_publish(
    tmp_path: Path, require: Callable[[str | None], None]
) -> None:
    sys.path.insert(0, str(REPO / "tests" / "sinks"))
    from redis_server import REDIS_SERVER, free_port

    require(None if REDIS_SERVER else "redis-server not installed (apt-get install redis-server)")
    import redis

    from stages.demo.scenes import ensure_scenes

    command = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace("$$", "$").replace("exec redis-server", 'exec "$REDIS_SERVER"')
    port = free_port()
    script += f" --port {port} --bind 127.0.0.1 --dir {shlex.quote(str(tmp_path))} --save ''"
    password = "pw-" + os.urandom(6).hex()
    env = {**os.environ, "EDGESTREAM_REDIS_PASSWORD": password, "REDIS_SERVER": str(REDIS_SERVER)}
    server = subprocess.Popen(["sh", "-c", script], env=env, stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, username="edgestream", password=password)
        deadline = time.monotonic() + 20
        while True:
            try:
                assert client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        with pytest.raises(redis.AuthenticationError):  # the default user is off
            redis.Redis.from_url(url).ping()
        with pytest.raises(redis.exceptions.NoPermissionError):  # other keys are not ours
            client.set("other", "1")

        (video,) = ensure_scenes(tmp_path / "scenes", cameras=1, seconds=0.4)
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({
            "name": f"compose{os.getpid()}", "realtime": False,
            "cameras": [{"id": "cam", "url": str(video)}],
            "model": {"weights": str(REPO / "stages/detect/models/demo.onnx")},
            "sinks": {"redis": {"url": url, "username": "edgestream",
                                "password_env": "EDGESTREAM_REDIS_PASSWORD"}},
            "metrics": {"port": 0},
        }))  # fmt: skip
        argv = [sys.executable, "-m", "pipeline.cli", "run", "-c", str(config)]
        run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        assert client.xlen("edgestream:cam:detections") == 10
        assert password not in run.stderr
    finally:
        server.terminate()
        server.wait(10)
