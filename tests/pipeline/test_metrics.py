"""Metrics: the families and helpers in one process (a registry per test), and prometheus_client's
multiprocess mode across two spawned processes, scraped over real HTTP."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, values
from prometheus_client.parser import text_string_to_metric_families

from pipeline import metrics as pm
from pipeline.health import HealthServer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_families_and_helpers_on_a_private_registry() -> None:
    registry = CollectorRegistry()
    m = pm.Metrics(registry)
    m.frames("cam1", "decode", 3)
    m.frames("cam1", "decode")
    m.dropped("cam1", "preprocess", "queue_full", 2)
    m.camera_state("cam1", "streaming")
    m.batch(8)
    m.batch(3)
    m.stage_latency("detect", 0.02)
    m.published("cam1", capture_ts=100.0, publish_ts=100.25)
    m.restart("detect")
    assert value(registry, "edgestream_frames_total", camera="cam1", stage="decode") == 4
    assert value(registry, "edgestream_frames_total", camera="cam1", stage="sink") == 1
    labels = {"camera": "cam1", "stage": "preprocess", "reason": "queue_full"}
    assert value(registry, "edgestream_frames_dropped_total", **labels) == 2
    assert value(registry, "edgestream_camera_up", camera="cam1") == 1
    assert value(registry, "edgestream_batch_size_count") == 2
    assert value(registry, "edgestream_batch_size_sum") == 11
    assert value(registry, "edgestream_batch_size_bucket", le="4.0") == 1
    assert value(registry, "edgestream_stage_latency_seconds_count", stage="detect") == 1
    e2e = value(registry, "edgestream_e2e_latency_seconds_bucket", camera="cam1", le="0.3")
    assert e2e == 1
    assert value(registry, "edgestream_e2e_latency_seconds_bucket", camera="cam1", le="0.2") == 0
    assert value(registry, "edgestream_process_restarts_total", stage="detect") == 1
    m.camera_state("cam1", "stalled")
    assert value(registry, "edgestream_camera_up", camera="cam1") == 0
    state = {"camera": "cam1", "state": "stalled"}
    assert value(registry, "edgestream_camera_state_changes_total", **state) == 1
    # a second instance on its own registry does not collide with the first
    other = CollectorRegistry()
    pm.Metrics(other).frames("cam1", "decode")
    assert value(other, "edgestream_frames_total", camera="cam1", stage="decode") == 1


def test_redis_stats_are_applied_as_increments() -> None:
    registry = CollectorRegistry()
    m = pm.Metrics(registry)
    stats = {
        "published": 10,
        "events_published": 2,
        "dropped": {"buffer_full": 0, "shutdown": 0},
        "reconnects": 0,
        "connected": True,
    }
    m.sync_redis(stats)
    m.sync_redis(stats)  # nothing new: nothing added
    assert value(registry, "edgestream_redis_published_total") == 10
    assert value(registry, "edgestream_redis_connected") == 1
    m.sync_redis({**stats, "published": 15, "dropped": {"buffer_full": 4}, "connected": False})
    assert value(registry, "edgestream_redis_published_total") == 15
    assert value(registry, "edgestream_redis_dropped_total", reason="buffer_full") == 4
    assert value(registry, "edgestream_redis_connected") == 0
    # the sink restarted: its totals start again from zero and are added, not subtracted
    m.sync_redis({**stats, "published": 3})
    assert value(registry, "edgestream_redis_published_total") == 18


# ------------------------------------------------------------------------ multiprocess mode


def _child(camera: str, frames: int, up: int, ready: mp.synchronize.Event, hold: bool) -> None:
    """A stage process: counts into the shared folder named by the inherited environment."""
    assert os.environ.get(pm.ENV_DIR), "the child must inherit PROMETHEUS_MULTIPROC_DIR"
    m = pm.process_metrics()
    assert m.registry is None  # multiprocess: values live in the files
    m.frames(camera, "decode", frames)
    m.dropped(camera, "decode", "queue_full", 1)
    m.camera_state(camera, "streaming" if up else "backoff")
    m.batch(frames)
    m.e2e_latency(camera, 0.04)
    ready.set()
    if hold:  # stay alive until terminated (a live process)
        import time

        time.sleep(60)


@pytest.fixture
def multiproc_dir(tmp_path: Path) -> Iterator[Path]:
    folder = pm.setup_multiprocess(tmp_path / "prom")
    try:
        yield folder
    finally:
        pm.teardown_multiprocess(folder)
        assert values.ValueClass is values.MutexValue
        assert not folder.exists()


def test_multiprocess_exposition_across_two_spawned_processes(multiproc_dir: Path) -> None:
    ctx = mp.get_context("spawn")
    ready_a, ready_b = ctx.Event(), ctx.Event()
    a = ctx.Process(target=_child, args=("cam-a", 5, 1, ready_a, False))
    b = ctx.Process(target=_child, args=("cam-b", 7, 1, ready_b, True))
    a.start()
    b.start()
    try:
        assert ready_a.wait(60) and ready_b.wait(60)
        a.join(30)
        assert a.exitcode == 0
        # the supervisor itself counts a restart into the same folder
        supervisor = pm.Metrics()
        supervisor.restart("decode")
        with HealthServer("127.0.0.1", 0) as server:  # default: multiprocess aggregation
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                got = samples(resp.read().decode())
            fr = "edgestream_frames_total"
            assert got[(fr, (("camera", "cam-a"), ("stage", "decode")))] == 5
            assert got[(fr, (("camera", "cam-b"), ("stage", "decode")))] == 7
            drop = (("camera", "cam-a"), ("reason", "queue_full"), ("stage", "decode"))
            assert got[("edgestream_frames_dropped_total", drop)] == 1
            assert got[("edgestream_batch_size_count", ())] == 2
            assert got[("edgestream_batch_size_sum", ())] == 12
            assert got[("edgestream_process_restarts_total", (("stage", "decode"),))] == 1
            assert got[("edgestream_camera_up", (("camera", "cam-b"),))] == 1
            assert got[("edgestream_camera_up", (("camera", "cam-a"),))] == 1

            # process a exited: the supervisor marks it dead; its gauge goes, its counts stay
            assert a.pid is not None
            pm.mark_process_dead(a.pid)
            with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
                got = samples(resp.read().decode())
            assert ("edgestream_camera_up", (("camera", "cam-a"),)) not in got
            assert got[("edgestream_camera_up", (("camera", "cam-b"),))] == 1
            assert got[(fr, (("camera", "cam-a"), ("stage", "decode")))] == 5
    finally:
        for p in (a, b):
            if p.is_alive():
                p.terminate()
            p.join(10)


def test_multiprocess_registry_needs_the_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pm.ENV_DIR, raising=False)
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR is not set"):
        pm.multiprocess_registry()


def test_setup_removes_stale_files(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_12345.db").write_bytes(b"stale")
    try:
        assert pm.setup_multiprocess(folder) == folder
        assert not list(folder.glob("*.db"))
        assert os.environ[pm.ENV_DIR] == str(folder)
    finally:
        pm.teardown_multiprocess(folder)
    assert pm.ENV_DIR not in os.environ


def test_stats_snapshots_cross_processes_as_plain_data_and_are_read_typed() -> None:
    """A real Reporter puts a snapshot on a multiprocessing queue; the board reads it typed
    (issue 12: the supervisor no longer digs dicts), and a restarted process's counters carry."""
    from pipeline.stats import ProcSnapshot, Reporter, StatsBoard

    q = mp.get_context("spawn").Queue()
    rep = Reporter("sink", q)
    rep.source(lambda: {"stage": {"received": {"a": 3}, "dropped": {("a", "queue_full"): 2}}})
    rep.source(lambda: {"sinks": {"RedisSink": {"connected": True}, "unwritten": {"redis": 1}}})
    rep.source(lambda: {"analytics": {"line_crossings": 4}})
    rep.published_frame("a", 0.05, {})
    rep.maybe_send(force=True)
    board = StatsBoard()
    deadline = time.monotonic() + 10
    while not board.procs and time.monotonic() < deadline:
        board.drain(q)
        time.sleep(0.05)
    snap = board.procs["sink"].snap
    assert isinstance(snap, ProcSnapshot)
    assert snap.stage.received == {"a": 3} and snap.stage.dropped == {"a|queue_full": 2}
    assert snap.sinks.redis == {"connected": True} and snap.sinks.unwritten == {"redis": 1}
    assert snap.published == {"a": 1} and snap.extra == {"analytics": {"line_crossings": 4}}
    assert board.total("dropped") == {"sink:a|queue_full": 2}
    # the process restarts (new pid) and counts from zero: the board's totals go on
    board.update({**rep.snapshot(), "pid": snap.pid + 1, "stage": {"dropped": {"a|queue_full": 1}}})
    assert board.total("dropped") == {"sink:a|queue_full": 3}
    # what the dead incarnation still buffered is lost, plus what the new one buffers
    assert board.unwritten() == {"redis": {"results": 2, "offline": 0}}
    q.close()
