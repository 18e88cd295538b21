"""Nothing lost, nothing changed: with ``realtime: false`` a video through ``edgestream run``
yields exactly the detections ``edgestream detect VIDEO --json`` gives, frame for frame (same
backend and model), with 1, 3 and 8 cameras sharing one batcher.

Every camera reads the same file; ``detect_fps`` thins the frames so each run stays short
(the decoder still decodes every frame, so frame ids are the file's frame indices). The
camera's `EndMsg` says how many frames decode forwarded; every one of them must be published.
Both places a frame is letterboxed (``preprocess.where``): in the decode processes (what a CPU
box resolves ``auto`` to) and in preprocess workers (a GPU box's).
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PIPELINE_TIMEOUT_S,
    STARTUP_S,
    VIDEO,
    assert_equals_detect,
    box_key,
    pipeline_config,
    read_jsonl,
    stage_pids,
    start_run,
    write_config,
)

pytestmark = pytest.mark.timeout(PIPELINE_TIMEOUT_S)

CASES = [
    pytest.param(1, 2.0, 1, "auto", id="1-camera"),
    pytest.param(3, 0.5, 1, "auto", id="3-cameras"),
    pytest.param(3, 0.5, 1, "workers", id="3-cameras-workers"),
    pytest.param(8, 0.5, 1, "auto", id="8-cameras", marks=pytest.mark.slow),
    # two decode processes (`decode.processes`): cam0 runs in the first, cam4 and cam5 in the
    # second (`stages.decode.config.decode_shard`); every preprocess worker reads from both,
    # or each decode process sends its items to detect
    pytest.param(["cam0", "cam4", "cam5"], 0.5, 2, "workers", id="3-cameras-2-decode-workers"),
    pytest.param(["cam0", "cam4", "cam5"], 0.5, 2, "auto", id="3-cameras-2-decode-processes"),
]


@pytest.mark.parametrize(("cams", "detect_fps", "decode_processes", "where"), CASES)
def test_run_equals_detect(
    cams: int | list[str],
    detect_fps: float,
    decode_processes: int,
    where: str,
    tmp_path: Path,
    shared_data: Path,
    tiny_onnx: Path,
    reference: dict[int, list[tuple[Any, ...]]],
    reap: list[Any],
) -> None:
    from stages.decode.config import decode_shard

    video = str(shared_data / "media" / VIDEO)
    ids = cams if isinstance(cams, list) else [f"cam{i}" for i in range(cams)]
    cameras = dict.fromkeys(ids, video)
    cfg = pipeline_config(tmp_path, tiny_onnx, cameras, camera_defaults={"detect_fps": detect_fps},
                          decode={"processes": decode_processes},
                          preprocess={"where": where, "workers": 2})  # fmt: skip
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    rc = proc.wait(timeout=STARTUP_S + 120)
    text = log.read_text()
    assert rc == 0, text[-3000:]

    assert_equals_detect(text, tmp_path / "out", ids, reference)
    workers = {k for k in stage_pids(log) if k.startswith("preprocess")}
    if where == "workers":
        assert "letterbox: in 2 preprocess worker(s)" in text
        assert workers == {"preprocess0", "preprocess1"}, workers
    else:  # a CPU model: decode letterboxes, no workers
        assert "letterbox: in the decode processes (preprocess.where: auto)" in text
        assert workers == set(), workers
    if decode_processes > 1:
        shards = {k: sorted(c for c in ids if decode_shard(c, decode_processes) == k)
                  for k in range(decode_processes)}  # fmt: skip
        assert all(shards.values()), shards  # every decode process had cameras
        for k, want in shards.items():
            assert f"decode {k + 1} of {decode_processes}: cameras {', '.join(want)}" in text
        pids = stage_pids(log)
        assert {f"decode{k}" for k in shards} <= set(pids) and "decode" not in pids, pids
    assert "dropped 0 (none)" in text.strip().splitlines()[-1] or "dropped 0" in text


@pytest.mark.slow
@pytest.mark.parametrize("curve", [False, True], ids=["plain", "curve"])
def test_detect_on_another_process_tree_over_tcp(
    tmp_path: Path,
    shared_data: Path,
    tiny_onnx: Path,
    reference: dict[int, list[tuple[Any, ...]]],
    reap: list[Any],
    curve: bool,
) -> None:
    """Two process trees, as on two hosts: the detect stage alone in one (binding tcp), the
    rest in the other; pixels travel inline over tcp. Still exactly `detect`'s output. With
    ``curve`` both tcp edges are CURVE-authenticated (keys from `edgestream keys generate`)."""
    from redis_server import free_port

    from pipeline.curve import generate

    client_keys: dict[str, Any] = {}
    server_keys: dict[str, Any] = {}
    if curve:
        keys = generate(tmp_path / "keys")
        client_keys = {
            "curve": {
                "client_secret_key_file": str(keys["client_secret_key_file"]),
                "server_public_key_file": str(keys["server_public_key_file"]),
            }
        }
        server_keys = {
            "curve": {
                "server_secret_key_file": str(keys["server_secret_key_file"]),
                "authorized_clients_dir": str(tmp_path / "keys" / "authorized_clients"),
            }
        }
    items, dets = free_port(), free_port()
    video = str(shared_data / "media" / VIDEO)
    edge = {"frames": {"endpoint": "auto"}, "tracked": {"endpoint": "auto"}}
    here = pipeline_config(
        tmp_path, tiny_onnx, {"cam0": video}, camera_defaults={"detect_fps": 1.0},
        transport={**client_keys, "stages": ["decode", "preprocess", "track", "sink"], "edges": {
            **edge, "items": {"endpoint": f"connect:tcp://127.0.0.1:{items}"},
            "detections": {"endpoint": f"connect:tcp://127.0.0.1:{dets}"}}},
    )  # fmt: skip
    there = pipeline_config(
        tmp_path, tiny_onnx, {}, name=here["name"] + "d",
        transport={**server_keys, "stages": ["detect"], "edges": {
            "items": {"endpoint": f"bind:tcp://127.0.0.1:{items}"},
            "detections": {"endpoint": f"bind:tcp://127.0.0.1:{dets}"}}},
    )  # fmt: skip
    del there["sinks"]
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    detector = start_run(write_config(remote_dir, there), remote_dir / "run.log")
    reap.append(detector)
    proc = start_run(write_config(tmp_path, here), tmp_path / "run.log")
    reap.append(proc)
    rc = proc.wait(timeout=STARTUP_S + 120)
    text = (tmp_path / "run.log").read_text()
    assert rc == 0, text[-3000:]
    detector.send_signal(signal.SIGTERM)
    assert detector.wait(15) == 0
    if curve:
        remote = (remote_dir / "run.log").read_text()
        assert "items: CURVE server, 1 authorized client key(s)" in remote, remote[-3000:]
        assert "detections: CURVE server" in remote and "items: CURVE client" in text
        assert "not authorized" not in remote
    (last,) = re.findall(r"camera cam0: end of file \(last seq (\d+)\)", text)
    docs = [d for d in read_jsonl(tmp_path / "out" / "cam0.jsonl") if d["type"] == "detections"]
    assert len(docs) == int(last) + 1
    for d in docs:
        assert sorted(box_key(o) for o in d["objects"]) == reference.get(d["frame_id"], [])
