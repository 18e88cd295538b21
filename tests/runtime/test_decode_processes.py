"""Several decode processes (``decode.processes``): each camera runs in exactly one of them
(`stages.decode.config.decode_shard`), every preprocess worker takes frames from all of them.

* offline, two decode processes give exactly ``edgestream detect``'s detections: a case of
  tests/runtime/test_nothing_lost.py;
* live: four cameras over two decode processes all publish; SIGKILL of one decode process
  is followed by its restart with the same cameras while the other process's cameras keep
  publishing without a gap, and the supervisor survives.

Plus the parts: how many processes ``auto`` picks, the written-endpoint refusal, and the
assignment being stable when cameras come and go.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PIPELINE_TIMEOUT_S,
    STARTUP_S,
    VIDEO,
    alive,
    live_config,
    pipeline_config,
    read_jsonl,
    stage_pids,
    start_run,
    wait_for,
    write_config,
)

from pipeline.config import ConfigError, PipelineConfig
from stages.decode.config import DecodeStageConfig, decode_shard

pytestmark = pytest.mark.timeout(PIPELINE_TIMEOUT_S)


def _shards_in_log(text: str) -> dict[int, list[str]]:
    """``decode N of M: cameras a, b`` lines → {N - 1: [a, b]} (the last line of each)."""
    out: dict[int, list[str]] = {}
    for n, _, cams in re.findall(r"decode (\d+) of (\d+): cameras (.*)", text):
        out[int(n) - 1] = [] if cams.startswith("none") else cams.strip().split(", ")
    return out


def test_auto_picks_one_per_16_cameras() -> None:
    auto = DecodeStageConfig()
    assert [auto.resolve(n) for n in (0, 1, 16, 17, 32, 33, 300)] == [1, 1, 1, 2, 2, 3, 16]
    assert DecodeStageConfig(processes=3).resolve(1) == 3


def test_more_than_one_needs_the_frames_edge_on_auto(tmp_path: Path, tiny_onnx: Path,
                                                     shared_data: Path) -> None:  # fmt: skip
    video = str(shared_data / "media" / VIDEO)
    cfg = pipeline_config(tmp_path, tiny_onnx, {"a": video}, decode={"processes": 2})
    assert PipelineConfig.model_validate(cfg).decode_processes() == 2
    cfg["transport"] = {"edges": {"frames": {"endpoint": "tcp://127.0.0.1:5999"}}}
    with pytest.raises((ConfigError, ValueError), match=r"decode\.processes"):
        PipelineConfig.model_validate(cfg)
    cfg["decode"] = {"processes": "auto"}  # auto with a written endpoint: one process
    assert PipelineConfig.model_validate(cfg).decode_processes() == 1


def test_a_camera_stays_in_its_process_when_others_come_and_go() -> None:
    ids = [f"cam{i}" for i in range(40)]
    before = {c: decode_shard(c, 3) for c in ids}
    after = {c: decode_shard(c, 3) for c in [*ids[5:], "new-a", "new-b"]}  # 5 gone, 2 added
    assert all(after[c] == before[c] for c in ids[5:])
    counts = [list(before.values()).count(k) for k in range(3)]
    assert min(counts) >= 10, counts  # spread, not all in one
    assert all(decode_shard(c, 1) == 0 for c in ids)


def test_live_a_killed_decode_process_comes_back_and_the_other_keeps_going(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any]
) -> None:
    cfg = live_config(
        tmp_path, tiny_onnx, str(shared_data / "media" / VIDEO), n=6, decode={"processes": 2}
    )
    cfg["camera_defaults"]["detect_fps"] = 2
    cams = [c["id"] for c in cfg["cameras"]]
    shard = {c: decode_shard(c, 2) for c in cams}
    assert set(shard.values()) == {0, 1}
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    out = tmp_path / "out"

    def frames(cam: str) -> list[int]:
        docs = read_jsonl(out / f"{cam}.jsonl")
        return [d["frame_id"] for d in docs if d["type"] == "detections"]

    wait_for(lambda: all(len(frames(c)) >= 3 for c in cams), STARTUP_S, "every camera publishing")
    victim = stage_pids(log)["decode1"]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: not alive(victim), 5, "the killed decode process to be gone")
    wait_for(lambda: stage_pids(log).get("decode1") not in (None, victim), 15, "a restart")
    moved = [c for c in cams if shard[c] == 1]
    kept = [c for c in cams if shard[c] == 0]
    counts = {c: len(frames(c)) for c in cams}
    wait_for(lambda: all(len(frames(c)) > counts[c] + 2 for c in cams), 60,
             "every camera publishing again")  # fmt: skip
    text = log.read_text()
    assert _shards_in_log(text)[1] == moved, text[-3000:]  # restarted with the same cameras
    # the other process's cameras went on through the kill: no gap in what they published
    # around it beyond the newest-frame-wins drops the pipeline counts
    for c in kept:
        docs = [d for d in read_jsonl(out / f"{c}.jsonl") if d["type"] == "detections"]
        around = [d for d in docs if killed_at - 2 <= d["publish_ts"] <= killed_at + 5]
        assert len(around) >= 6, (c, len(around))  # ~2 frames/s kept flowing through it
    assert proc.poll() is None, "the supervisor must survive"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]


def test_cameras_added_and_removed_over_the_api_reach_their_decode_process(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any]
) -> None:
    """Two decode processes: cameras added over the API open in the process their id hashes
    to (one each here) and publish; a removed one stops; the camera left alone is never
    reopened."""
    import json
    import urllib.request

    from redis_server import free_port

    token = "decode-processes-test-token-0123456789"
    video = str(shared_data / "media" / VIDEO)
    cfg = pipeline_config(tmp_path, tiny_onnx, {"cam0": video, "cam4": video}, realtime=True,
                          camera_defaults={"loop": True, "detect_fps": 2},
                          decode={"processes": 2})  # fmt: skip
    cfg["sinks"]["jsonl"]["flush_each_line"] = True
    (tmp_path / "token").write_text(token + "\n")
    port = free_port()
    cfg["metrics"] = {"host": "127.0.0.1", "port": port}
    cfg["control"] = {"token_file": "token"}
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    out = tmp_path / "out"

    def published(cam: str) -> int:
        return sum(1 for d in read_jsonl(out / f"{cam}.jsonl") if d["type"] == "detections")

    def call(method: str, path: str, body: Any = None) -> int:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
        req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status

    wait_for(lambda: published("cam0") >= 3 and published("cam4") >= 3, STARTUP_S, "cameras")
    assert {decode_shard(c, 2) for c in ("cam1", "cam5")} == {0, 1}
    for cam in ("cam1", "cam5"):
        assert call("POST", "/cameras", {"id": cam, "url": video}) in (200, 201)
    wait_for(lambda: published("cam1") >= 3 and published("cam5") >= 3, 10 + 20,
             "the added cameras publishing")  # fmt: skip
    assert call("DELETE", "/cameras/cam4") == 200
    time.sleep(2.0)
    gone = published("cam4")
    time.sleep(3.0)
    assert published("cam4") == gone, "a removed camera kept publishing"
    kept = published("cam0")
    wait_for(lambda: published("cam0") > kept + 3, 20, "the untouched camera going on")
    text = log.read_text()
    assert len(re.findall(r"camera cam0 .*connecting -> streaming", text)) == 1, text[-3000:]
    pids = stage_pids(log)
    for cam in ("cam1", "cam5"):  # opened by the decode process its id hashes to
        opened = re.findall(rf"\[(\d+)\] \S+: camera {cam} .*connecting -> streaming", text)
        assert opened and {int(p) for p in opened} == {pids[f"decode{decode_shard(cam, 2)}"]}, (
            cam,
            opened,
            pids,
        )
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, log.read_text()[-3000:]
