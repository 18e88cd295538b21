"""Shared-memory rings in /dev/shm: seqlock reads, overwrites, cleanup, across processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.messages import ShmRef
from pipeline.shm import (
    SHM_DIR,
    ShmError,
    ShmPool,
    ShmReader,
    ShmRing,
    cleanup_stale,
    list_segments,
    ring_name,
)

SPAWN = mp.get_context("spawn")


@pytest.fixture
def pipeline_name() -> Iterator[str]:
    """A pipeline name of its own; fails the test if any of its segments is left behind."""
    name = f"test{uuid.uuid4().hex[:10]}"
    yield name
    left = list_segments(f"edgestream-{name}-")
    for p in left:
        p.unlink()
    assert not left, f"leaked shared-memory segments: {[p.name for p in left]}"


def test_write_read_roundtrip_variable_shapes(pipeline_name: str) -> None:
    with ShmRing.create(ring_name(pipeline_name, "frames"), 3, 64 * 48 * 3) as ring:
        assert ring.slot_bytes % 4096 == 0 and ring.slot_bytes >= 64 * 48 * 3
        small = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
        big = np.full((48, 64, 3), 9, np.uint8)
        r1, r2 = ring.write(small), ring.write(big)
        assert (r1.slot, r2.slot) == (0, 1) and r1.shape == (5, 7, 3)
        got = ring.read(r1)
        assert got is not None and np.array_equal(got, small)
        out = np.empty((48, 64, 3), np.uint8)
        assert ring.read(r2, out) is out and np.array_equal(out, big)
        floats = np.linspace(0, 1, 10, dtype=np.float32)
        got_f = ring.read(ring.write(floats))
        assert got_f is not None and got_f.dtype == np.float32 and np.array_equal(got_f, floats)


def test_overwritten_slot_reads_none(pipeline_name: str) -> None:
    with ShmRing.create(ring_name(pipeline_name, "frames"), 2, 4096) as ring:
        a = np.ones(100, np.uint8)
        ref = ring.write(a)
        ring.write(a * 2)
        assert ring.read(ref) is not None  # two slots: still there
        ring.write(a * 3)  # wraps onto slot 0
        assert ring.read(ref) is None
        assert ring.view(ref) is None and not ring.valid(ref)


def test_view_then_valid_detects_concurrent_overwrite(pipeline_name: str) -> None:
    with ShmRing.create(ring_name(pipeline_name, "frames"), 1, 4096) as ring:
        ref = ring.write(np.zeros(64, np.uint8))
        view = ring.view(ref)
        assert view is not None and not view.flags.writeable
        ring.write(np.ones(64, np.uint8))  # the producer overwrites while we "use" the view
        assert not ring.valid(ref)
        del view


def test_generation_is_odd_while_writing(pipeline_name: str) -> None:
    with ShmRing.create(ring_name(pipeline_name, "slab"), 2, 3 * 8 * 8) as ring:
        consumer = ShmRing.attach(ring.name)
        try:
            with ring.writing((3, 8, 8)) as w:
                w.array[:] = 7
                probe = ShmRef(ring.name, w.ref.slot, w.ref.generation - 1, (3, 8, 8))
                assert w.ref.generation % 2 == 0
                assert consumer.view(w.ref) is None  # not complete yet
                assert consumer.view(probe) is not None  # the odd "writing" generation
            got = consumer.read(w.ref)
            assert got is not None and (got == 7).all()
        finally:
            consumer.close()


def test_errors_are_clear(pipeline_name: str) -> None:
    name = ring_name(pipeline_name, "frames")
    with ShmRing.create(name, 2, 4096) as ring:
        with pytest.raises(ShmError, match="already exists"):
            ShmRing.create(name, 2, 4096)
        with pytest.raises(ShmError, match="does not fit a slot"):
            ring.write(np.zeros(5000, np.uint8))
        with pytest.raises(ShmError, match="used with ring"):
            ring.read(ShmRef("other", 0, 2, (1,)))
        with pytest.raises(ShmError, match="does not fit ring"):
            ring.read(ShmRef(name, 9, 2, (1,)))
        attached = ShmRing.attach(name)
        with pytest.raises(ShmError, match="not owned"):
            attached.write(np.zeros(1, np.uint8))
        attached.close()
    with pytest.raises(ShmError, match="owner gone"):
        ShmRing.attach(name)
    with pytest.raises(ShmError, match="bad segment name"):
        ShmRing.create("bad/name", 1, 1)
    not_a_ring = SHM_DIR / f"edgestream-{pipeline_name}-1-junk"
    not_a_ring.write_bytes(b"x" * 100)
    try:
        with pytest.raises(ShmError, match="not an edgestream ring"):
            ShmRing.attach(not_a_ring.name)
    finally:
        not_a_ring.unlink()


def test_offline_writes_wait_for_release(
    pipeline_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with ShmRing.create(ring_name(pipeline_name, "frames"), 2, 4096) as ring:
        consumer = ShmRing.attach(ring.name)
        try:
            a, b = ring.write(np.zeros(8, np.uint8), 5.0), ring.write(np.ones(8, np.uint8), 5.0)
            got = consumer.read(a)  # releases slot 0
            assert got is not None
            t0 = time.monotonic()
            c = ring.write(np.full(8, 2, np.uint8), wait_s=5.0)  # slot 0: released, no wait
            assert c.slot == 0 and time.monotonic() - t0 < 1.0
            view = consumer.view(b)
            assert view is not None
            consumer.release(b)  # after a view, by hand
            del view
            ring.write(np.full(8, 3, np.uint8), wait_s=5.0)  # slot 1: released
            t0 = time.monotonic()
            with caplog.at_level("WARNING"):  # slot 0 (c) never released: gives up after wait_s
                ring.write(np.full(8, 4, np.uint8), wait_s=0.3)
            assert time.monotonic() - t0 >= 0.25 and "not released by its consumer" in caplog.text
            assert consumer.read(c) is None  # overwritten: the reader still sees it
            stop = threading.Event()
            stop.set()
            t0 = time.monotonic()
            ring.write(np.full(8, 5, np.uint8), wait_s=30.0, stop=stop)  # stopping: no wait
            assert time.monotonic() - t0 < 1.0
        finally:
            consumer.close()


def test_too_big_for_shm_dir_fails_at_create(pipeline_name: str) -> None:
    free = os.statvfs(SHM_DIR).f_bavail * os.statvfs(SHM_DIR).f_frsize
    with pytest.raises(ShmError, match="cannot reserve"):
        ShmRing.create(ring_name(pipeline_name, "huge"), 4, free // 2 + 4096)


def test_close_is_idempotent_and_unlinks(pipeline_name: str) -> None:
    ring = ShmRing.create(ring_name(pipeline_name, "frames"), 2, 4096)
    assert ring.path.exists()
    ring.close()
    ring.close()
    ring.unlink()
    assert not ring.path.exists() and ring.closed


def test_consumer_close_does_not_unlink(pipeline_name: str) -> None:
    with ShmRing.create(ring_name(pipeline_name, "frames"), 2, 4096) as ring:
        c = ShmRing.attach(ring.name)
        c.close()
        c.close()
        assert ring.path.exists()


def test_pool_rings_per_key_and_regrow(pipeline_name: str) -> None:
    pool = ShmPool(pipeline_name, "frames", slots=2)
    reader = ShmReader()
    try:
        r1 = pool.write("cam-a", np.zeros((4, 4, 3), np.uint8))
        r2 = pool.write("cam-b", np.ones((4, 4, 3), np.uint8))
        assert r1.ring != r2.ring and "cam_a" in r1.ring  # "-" ends the pid field
        big = np.full((100, 100, 3), 5, np.uint8)
        r3 = pool.write("cam-a", big)  # bigger frame: a new ring, the old one unlinked
        assert r3.ring != r1.ring
        assert reader.read(r1) is None  # its ring is gone: a drop, not an error
        got = reader.read(r3)
        assert got is not None and np.array_equal(got, big)
        assert len(list_segments(f"edgestream-{pipeline_name}-")) == 2
    finally:
        reader.close()
        pool.close()


def test_reader_lru_bound(pipeline_name: str) -> None:
    rings = [ShmRing.create(ring_name(pipeline_name, f"r{i}"), 1, 4096) for i in range(4)]
    reader = ShmReader(max_rings=2)
    try:
        refs = [r.write(np.full(8, i, np.uint8)) for i, r in enumerate(rings)]
        for i, ref in enumerate(refs):
            got = reader.read(ref)
            assert got is not None and got[0] == i
        assert len(reader._rings) == 2
    finally:
        reader.close()
        for r in rings:
            r.close()


def test_reader_detaches_unlinked_rings(pipeline_name: str) -> None:
    old = ShmRing.create(ring_name(pipeline_name, "gen1"), 1, 4096)
    reader = ShmReader()
    try:
        assert reader.read(old.write(np.zeros(8, np.uint8))) is not None
        old.close()  # the producer restarts: its old ring is unlinked...
        with ShmRing.create(ring_name(pipeline_name, "gen2"), 1, 4096) as new:
            assert reader.read(new.write(np.ones(8, np.uint8))) is not None
            assert list(reader._rings) == [new.name]  # ...and no longer kept mapped
    finally:
        reader.close()


# ------------------------------------------------------------------ across processes


def _producer(name: str, frames: int, ready: object, go: object, out: object) -> None:
    ring = ShmRing.create(name, 4, 1080 * 1920 * 3)
    refs = []
    for i in range(frames):
        a = np.full((1080, 1920, 3), i % 256, np.uint8)
        a[0, 0, 0] = i % 7
        refs.append(ring.write(a))
    out.put([(r.slot, r.generation, r.shape) for r in refs])  # type: ignore[attr-defined]
    ready.set()  # type: ignore[attr-defined]
    go.wait(30)  # type: ignore[attr-defined]
    ring.close()


def test_cross_process_read_and_overwrite(pipeline_name: str) -> None:
    name = ring_name(pipeline_name, "frames")
    ready, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    p = SPAWN.Process(target=_producer, args=(name, 6, ready, go, out))
    p.start()
    try:
        assert ready.wait(60), "producer did not start"
        refs = [ShmRef(name, s, g, tuple(shape)) for s, g, shape in out.get(timeout=10)]
        ring = ShmRing.attach(name)
        try:
            # 6 writes into 4 slots: the first two were overwritten, the last four are intact
            assert [ring.read(r) is None for r in refs] == [True, True, False, False, False, False]
            got = ring.read(refs[5])
            assert got is not None and got[0, 0, 0] == 5 and got[1, 1, 1] == 5
        finally:
            ring.close()
    finally:
        go.set()
        p.join(30)
    assert p.exitcode == 0
    assert not list_segments(f"edgestream-{pipeline_name}-")  # the owner unlinked it


def _hammer(name: str, ready: object, stop: object) -> None:
    """Rewrites the single slot of ``name`` as fast as it can: write i is filled with i % 251."""
    ring = ShmRing.create(name, 1, 1 << 20)
    ready.set()  # type: ignore[attr-defined]
    i = 0
    while not stop.is_set():  # type: ignore[attr-defined]
        with ring.writing((1 << 20,)) as w:
            w.array.fill(i % 251)
        i += 1
    ring.close()


def test_seqlock_never_returns_a_torn_frame_across_processes(pipeline_name: str) -> None:
    name = ring_name(pipeline_name, "hammer")
    ready, stop = SPAWN.Event(), SPAWN.Event()
    p = SPAWN.Process(target=_hammer, args=(name, ready, stop))
    p.start()
    try:
        assert ready.wait(60)
        ring = ShmRing.attach(name)
        ok = overwritten = 0
        out = np.empty(1 << 20, np.uint8)
        t0 = time.monotonic()
        # 2 s of reads, longer (up to 30 s) until one is clean: on a loaded CPU the writer can
        # lap every read for a while, and "no torn read" means little without a clean one
        while (now := time.monotonic()) < t0 + 2.0 or (ok == 0 and now < t0 + 30.0):
            gen = int(ring._gen[0])
            if gen == 0 or gen % 2:
                continue  # nothing written yet, or being written
            got = ring.read(ShmRef(name, 0, gen, (1 << 20,)), out)
            if got is None:
                overwritten += 1
                continue
            expect = (gen // 2 - 1) % 251
            assert got.min() == got.max() == expect, f"torn read at generation {gen}"
            ok += 1
        ring.close()
    finally:
        stop.set()
        p.join(30)
    assert p.exitcode == 0
    assert ok > 0
    print(f"seqlock: {ok} clean reads, {overwritten} detected overwrites")


def _owner_then_hang(pipeline: str, ready: object) -> None:
    rings = [ShmRing.create(ring_name(pipeline, p), 2, 4096) for p in ("frames", "slab")]
    ready.set()  # type: ignore[attr-defined]
    time.sleep(60)
    del rings


def test_sigkilled_owner_leaves_segments_that_cleanup_stale_removes(pipeline_name: str) -> None:
    ready = SPAWN.Event()
    p = SPAWN.Process(target=_owner_then_hang, args=(pipeline_name, ready))
    p.start()
    assert ready.wait(60)
    prefix = f"edgestream-{pipeline_name}-"
    mine = ShmRing.create(ring_name(pipeline_name, "mine"), 1, 4096)  # live owner: kept
    try:
        assert cleanup_stale(prefix) == []  # owner alive: nothing removed
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        left = {s.name for s in list_segments(prefix)}
        assert len(left) == 3  # SIGKILL skips every cleanup
        removed = cleanup_stale(prefix)
        assert sorted(removed) == sorted(n for n in left if n != mine.name)
        assert [s.name for s in list_segments(prefix)] == [mine.name]
    finally:
        mine.close()


def test_cleanup_stale_reused_pid_and_headerless(pipeline_name: str) -> None:
    prefix = f"edgestream-{pipeline_name}-"
    ring = ShmRing.create(ring_name(pipeline_name, "frames"), 1, 4096)
    # pretend the owner was a process with our pid but another start time (pid reused)
    ring._maps[0][40:48] = (123).to_bytes(8, "little")  # type: ignore[index]
    headerless = SHM_DIR / f"{prefix}999999999-partial"
    headerless.write_bytes(b"")
    old = time.time() - 60
    os.utime(headerless, (old, old))
    young = SHM_DIR / f"{prefix}999999998-partial"
    young.write_bytes(b"")
    folder = SHM_DIR / f"{prefix}999999997-metrics"
    folder.mkdir()
    try:
        removed = cleanup_stale(prefix)
        assert sorted(removed) == sorted([ring.name, headerless.name])
        assert young.exists() and folder.is_dir()  # too young / not a segment
    finally:
        young.unlink()
        folder.rmdir()
        ring.close()


def test_unclosed_owner_ring_is_unlinked_at_exit(pipeline_name: str, tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(
        "import sys\nfrom pipeline.shm import ShmRing, ring_name\n"
        f"r = ShmRing.create(ring_name({pipeline_name!r}, 'frames'), 1, 4096)\n"
        "print(r.name)\n"
    )
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, str(script)], cwd=repo, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith(f"edgestream-{pipeline_name}-")
    # the fixture fails the test if the segment is still there
