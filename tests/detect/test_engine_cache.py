"""Engine cache: key, file names, rebuild decisions, atomic writes, TensorRT API choice.

All of it is pure Python and runs without TensorRT. The only stand-ins are plain namespaces
describing what a ``tensorrt`` module offers (10.x vs 11.x), for the version-branch choice:
TensorRT itself cannot be installed on a CPU machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_detector import TinyDetector

from stages.detect.backends.tensorrt_backend import TensorRTError, resolve_max_batch
from stages.detect.engine_cache import (
    PrecisionError,
    atomic_write_bytes,
    batch_profile,
    build_lock,
    compatibility_problems,
    detect_trt_api,
    lookup,
    parse_major,
    plan_build,
    store_engine,
    tuning_mismatch,
)
from stages.detect.engine_sidecar import (
    MIN_ENGINE_BYTES,
    EngineKey,
    EngineSidecar,
    read_sidecar,
    sidecar_path,
)
from stages.detect.onnx_facts import EngineCacheError, inspect_onnx
from stages.detect.postprocess_np import output_layout

REPO = Path(__file__).resolve().parents[2]


def make_key(**changes: object) -> EngineKey:
    base = EngineKey(
        gpu_name="NVIDIA L4",
        compute_capability="8.9",
        trt_version="10.13.0.35",
        onnx_sha256="ab" * 32,
        precision="fp16",
        min_batch=1,
        opt_batch=4,
        max_batch=8,
        input_hw=(640, 640),
        workspace_mb=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def fake_engine(n: int = 4096, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def store(cache: Path, key: EngineKey, data: bytes, stem: str = "model") -> Path:
    path = cache / key.file_name(stem)
    sidecar = EngineSidecar(key=key, engine_bytes=0, engine_sha256="", class_names=["a", "b"])
    store_engine(path, data, sidecar)
    return path


# -- key ---------------------------------------------------------------------------------


def test_key_digest_is_deterministic_and_readable() -> None:
    a, b = make_key(), make_key()
    assert a.digest() == b.digest()
    name = a.file_name("yolo_nas_s")
    assert name.startswith("yolo_nas_s.fp16.") and name.endswith(".engine")
    assert len(name.split(".")[2]) == 12
    # Pinned: the digest must not drift between Python versions or runs.
    assert a.digest() == EngineKey.from_json(json.loads(json.dumps(a.to_json()))).digest()


@pytest.mark.parametrize(
    "change",
    [
        {"gpu_name": "NVIDIA RTX 4090"},
        {"compute_capability": "9.0"},
        {"trt_version": "11.4.0.1"},
        {"onnx_sha256": "cd" * 32},
        {"precision": "int8"},
        {"min_batch": 2},
        {"opt_batch": 8},
        {"max_batch": 16},
        {"input_hw": (480, 640)},
        {"workspace_mb": 2048},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_field_changes_the_file_name(change: dict[str, object]) -> None:
    key, other = make_key(), make_key(**change)
    assert key.file_name("m") != other.file_name("m")
    (field,) = change
    assert [d.split(":")[0] for d in key.differences(other)] == [field]


@pytest.mark.parametrize(
    "bad",
    [
        {"precision": "fp8"},
        {"min_batch": 0},
        {"min_batch": 4, "opt_batch": 2},
        {"opt_batch": 16},
        {"input_hw": (0, 640)},
        {"workspace_mb": 0},
    ],
)
def test_key_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make_key(**bad)


def test_key_json_roundtrip_and_unknown_fields() -> None:
    key = make_key(workspace_mb=1024)
    assert EngineKey.from_json(key.to_json()) == key
    with pytest.raises(ValueError, match="unknown"):
        EngineKey.from_json({**key.to_json(), "cuda": "12.4"})


# -- lookup / rebuild decisions ------------------------------------------------------------


def test_miss_then_hit(tmp_path: Path) -> None:
    key = make_key()
    found = lookup(tmp_path, "model", key)
    assert not found.hit and found.reason == "no cached engine"
    path = store(tmp_path, key, fake_engine())
    found = lookup(tmp_path, "model", key)
    assert found.hit and found.engine_path == path
    sc = read_sidecar(path)
    assert sc.key == key and sc.engine_bytes == 4096 and sc.class_names == ["a", "b"]
    assert sidecar_path(path).name == path.name + ".json"


def test_other_key_misses(tmp_path: Path) -> None:
    store(tmp_path, make_key(), fake_engine())
    assert not lookup(tmp_path, "model", make_key(trt_version="11.4.0.1")).hit
    assert not lookup(tmp_path, "other-stem", make_key()).hit


def test_sidecar_missing_means_rebuild(tmp_path: Path) -> None:
    key = make_key()
    path = store(tmp_path, key, fake_engine())
    sidecar_path(path).unlink()
    found = lookup(tmp_path, "model", key)
    assert not found.hit and "sidecar missing" in found.reason


@pytest.mark.parametrize(
    "corrupt",
    [
        "{not json",
        "",
        '{"schema": 1}',
        '{"schema": 99, "key": {}}',
        "[1, 2, 3]",
    ],
    ids=["garbage", "empty", "no-key", "future-schema", "wrong-type"],
)
def test_corrupt_sidecar_means_rebuild(tmp_path: Path, corrupt: str) -> None:
    key = make_key()
    path = store(tmp_path, key, fake_engine())
    sidecar_path(path).write_text(corrupt)
    found = lookup(tmp_path, "model", key)
    assert not found.hit and "sidecar unreadable" in found.reason


def test_sidecar_with_another_key_means_rebuild(tmp_path: Path) -> None:
    key = make_key()
    path = store(tmp_path, key, fake_engine())
    doc = json.loads(sidecar_path(path).read_text())
    doc["key"]["trt_version"] = "10.0.0"  # e.g. a file copied in by hand
    sidecar_path(path).write_text(json.dumps(doc))
    found = lookup(tmp_path, "model", key)
    assert not found.hit and "trt_version" in found.reason


def test_truncated_engine_means_rebuild(tmp_path: Path) -> None:
    key = make_key()
    path = store(tmp_path, key, fake_engine())
    path.write_bytes(path.read_bytes()[:1500])
    found = lookup(tmp_path, "model", key)
    assert not found.hit and "truncated" in found.reason


def test_same_size_corruption_is_caught_by_hash(tmp_path: Path) -> None:
    key = make_key()
    path = store(tmp_path, key, fake_engine())
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "sha256" in lookup(tmp_path, "model", key).reason
    assert lookup(tmp_path, "model", key, verify_hash=False).hit  # size-only check


def test_tiny_file_is_never_an_engine(tmp_path: Path) -> None:
    key = make_key()
    store(tmp_path, key, b"x" * (MIN_ENGINE_BYTES - 1))
    assert not lookup(tmp_path, "model", key).hit


# -- atomic writes -------------------------------------------------------------------------


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_failed_write_keeps_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def interrupted(fd: int) -> None:  # an interruption right before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_interrupted_restore_never_pairs_old_sidecar_with_new_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key()
    store(tmp_path, key, fake_engine(seed=1))
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store(tmp_path, key, fake_engine(seed=2))
    monkeypatch.undo()
    found = lookup(tmp_path, "model", key)
    assert not found.hit and "sidecar missing" in found.reason


KILL_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from stages.detect.engine_cache import atomic_write_bytes
atomic_write_bytes({target!r}, bytes(400 * 1024 * 1024))
"""


def test_sigkilled_write_leaves_no_partial_file(tmp_path: Path) -> None:
    """A real process killed mid-write: the destination never exists half-written."""
    target = tmp_path / "big.engine"
    code = KILL_CHILD.format(repo=str(REPO), target=str(target))
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
                break
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    if target.exists():  # the child won the race: then the file must be complete
        assert target.stat().st_size == 400 * 1024 * 1024
    else:
        assert not lookup(tmp_path, "big", make_key()).hit


def test_build_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
        "from stages.detect.engine_cache import build_lock\n"
        f"with build_lock({str(engine)!r}):\n"
        "    print('locked', flush=True); time.sleep(1.0)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with build_lock(engine):  # waits for the child's build to finish
            waited = time.monotonic() - t0
    finally:
        child.wait()
    assert waited > 0.5


# -- batch profile -------------------------------------------------------------------------


def test_batch_profile() -> None:
    assert batch_profile(None) == (1, 8, 8)
    assert batch_profile(None, 1, 2, 16) == (1, 2, 16)
    assert batch_profile(4) == (4, 4, 4)  # fixed-batch ONNX: its own size
    assert batch_profile(4, max_batch=4) == (4, 4, 4)
    with pytest.raises(EngineCacheError, match="fixed batch of 1"):
        batch_profile(1, max_batch=8)
    with pytest.raises(EngineCacheError, match="min_batch <= opt_batch"):
        batch_profile(None, 4, 2, 8)


# -- compatibility -------------------------------------------------------------------------


def test_compatibility_problems() -> None:
    key = make_key()
    same = {"gpu_name": "NVIDIA L4", "compute_capability": "8.9", "trt_version": "10.13.0.35"}
    assert compatibility_problems(key, **same) == []
    p = compatibility_problems(key, **{**same, "compute_capability": "9.0", "gpu_name": "H100"})
    assert len(p) == 1 and "compute capability 8.9" in p[0]
    assert compatibility_problems(key, **{**same, "gpu_name": "NVIDIA RTX 4090"}) == []
    assert "tuned on a NVIDIA L4" in str(tuning_mismatch(key, gpu_name="NVIDIA RTX 4090"))
    assert tuning_mismatch(key, gpu_name="NVIDIA L4") is None
    p = compatibility_problems(key, **{**same, "trt_version": "11.4.0.1"})
    assert len(p) == 1 and "TensorRT 10.13.0.35" in p[0]


# -- which TensorRT API --------------------------------------------------------------------


def fake_trt(version: str, *, fp16_flag: bool, strongly_typed: bool, monitor: bool) -> object:
    """A namespace with the attributes `detect_trt_api` looks at, nothing more."""
    flags = SimpleNamespace(TF32=0, **({"FP16": 1, "INT8": 2} if fp16_flag else {}))
    creation = SimpleNamespace(**({"STRONGLY_TYPED": 1} if strongly_typed else {}))
    ns = SimpleNamespace(
        __version__=version, BuilderFlag=flags, NetworkDefinitionCreationFlag=creation
    )
    if monitor:
        ns.IProgressMonitor = object
    return ns


TRT10 = detect_trt_api(fake_trt("10.13.0.35", fp16_flag=True, strongly_typed=True, monitor=True))
TRT11 = detect_trt_api(fake_trt("11.4.0.1", fp16_flag=False, strongly_typed=True, monitor=True))
TRT86 = detect_trt_api(fake_trt("8.6.1", fp16_flag=True, strongly_typed=False, monitor=False))


def test_detect_trt_api() -> None:
    assert (TRT10.major, TRT10.has_precision_flags, TRT10.strongly_typed_by_default) == (
        10,
        True,
        False,
    )
    assert (TRT11.major, TRT11.has_precision_flags, TRT11.strongly_typed_by_default) == (
        11,
        False,
        True,
    )
    assert TRT10.has_progress_monitor and not TRT86.has_progress_monitor
    assert parse_major("11.0.0.3") == 11
    with pytest.raises(ValueError):
        parse_major("dev")


@pytest.mark.parametrize(
    ("requested", "onnx", "api", "precision", "strong", "flags", "net_flags"),
    [
        ("fp32", "fp32", TRT10, "fp32", False, (), []),
        ("fp32", "fp32", TRT11, "fp32", False, (), []),
        ("fp16", "fp32", TRT10, "fp16", False, ("FP16",), []),  # 10.x weak-typing fallback
        ("best", "fp32", TRT10, "fp16", False, ("FP16",), []),
        ("best", "fp32", TRT11, "fp32", False, (), []),
        ("fp16", "fp16", TRT10, "fp16", True, (), ["STRONGLY_TYPED"]),
        ("fp16", "fp16", TRT11, "fp16", True, (), []),  # flag deprecated/ignored on 11
        ("best", "fp16", TRT11, "fp16", True, (), []),
        ("int8", "int8", TRT10, "int8", True, (), ["STRONGLY_TYPED"]),
        ("int8", "int8", TRT11, "int8", True, (), []),
        ("best", "int8", TRT10, "int8", True, (), ["STRONGLY_TYPED"]),
    ],
)
def test_plan_build(
    requested: str,
    onnx: str,
    api: object,
    precision: str,
    strong: bool,
    flags: tuple[str, ...],
    net_flags: list[str],
) -> None:
    plan = plan_build(requested, onnx, api)  # type: ignore[arg-type]
    assert (plan.precision, plan.strongly_typed, plan.builder_flags) == (precision, strong, flags)
    assert plan.network_flags(api) == net_flags  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("requested", "onnx", "api", "match"),
    [
        ("fp16", "fp32", TRT11, "AutoCast|quantize_onnx"),  # 11 removed BuilderFlag.FP16
        ("int8", "fp32", TRT10, "Q/DQ"),  # no implicit INT8 calibration here
        ("int8", "fp32", TRT11, "Q/DQ"),
        ("fp32", "int8", TRT11, "INT8-quantized"),
        ("fp16", "int8", TRT10, "INT8-quantized"),
        ("fp32", "fp16", TRT10, "FP16"),
        ("int8", "fp16", TRT11, "Q/DQ"),
    ],
)
def test_plan_build_refuses_impossible_precisions(
    requested: str, onnx: str, api: object, match: str
) -> None:
    with pytest.raises(PrecisionError, match=match):
        plan_build(requested, onnx, api)  # type: ignore[arg-type]


def test_plan_build_rejects_old_tensorrt() -> None:
    with pytest.raises(EngineCacheError, match="too old"):
        plan_build("fp32", "fp32", TRT86)


# -- ONNX inspection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "dtype", "shape0", "nms"),
    [
        ({"input_dtype": "float"}, "float32", 1, "none"),
        ({"input_dtype": "uint8", "dynamic_batch": True}, "uint8", "batch", "none"),
        ({"nms": "tensorrt"}, "float32", 1, "tensorrt"),
        ({"nms": "onnx", "dynamic_batch": True}, "float32", "batch", "onnx"),
    ],
)
def test_inspect_onnx(tmp_path: Path, kwargs: dict, dtype: str, shape0: object, nms: str) -> None:
    from stages.detect.export import export_onnx

    path = export_onnx(
        TinyDetector(),
        tmp_path / "t.onnx",
        input_hw=(64, 64),
        class_names=["a", "b", "c"],
        **kwargs,
    )
    facts = inspect_onnx(path)
    assert facts.input_name == "images" and facts.input_dtype == dtype
    assert facts.input_shape == (shape0, 3, 64, 64) and facts.input_hw == (64, 64)
    assert facts.dynamic_batch == isinstance(shape0, str)
    assert facts.precision == "fp32" and facts.nms == nms
    assert facts.class_names == ["a", "b", "c"]


def test_inspect_onnx_rejects_non_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\xff\x00 definitely not protobuf" * 10)
    with pytest.raises(EngineCacheError, match="not a readable ONNX"):
        inspect_onnx(bad)


# -- pure parts of the TensorRT backend ---------------------------------------------------


def test_output_layout() -> None:
    assert output_layout(["scores", "boxes"]) == "raw"
    assert output_layout(["num_dets", "det_boxes", "det_scores", "det_classes"]) == "nms"
    with pytest.raises(ValueError, match="unrecognised"):
        output_layout(["output0"])
    with pytest.raises(TensorRTError, match="unrecognised"):  # each backend names its error
        output_layout(["output0"], TensorRTError)


def test_resolve_max_batch() -> None:
    assert resolve_max_batch(None, 1, 8) == 8
    assert resolve_max_batch(4, 1, 8) == 4
    with pytest.raises(TensorRTError, match="rebuild"):
        resolve_max_batch(16, 1, 8)
