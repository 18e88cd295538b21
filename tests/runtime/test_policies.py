"""The pure policies of the runtime, in memory: batching (deadline, fairness, newest frame wins) and
per-camera reordering (in-order release, tombstones, gap timeout, restarts, end markers)."""

from __future__ import annotations

import pytest

from pipeline.batching import BatchPolicy
from pipeline.reorder import Reorderer


def test_batch_leaves_when_full_or_at_deadline() -> None:
    p: BatchPolicy[int] = BatchPolicy(max_batch=3, max_wait_ms=10)
    p.add("a", 1, now_s=0.0, capture_ts=100.0)
    p.add("b", 2, now_s=0.001, capture_ts=100.0)
    assert p.take(0.005, 100.0).batch == []  # neither full nor due
    assert p.deadline() == pytest.approx(0.010)
    assert p.take(0.0101, 100.0).batch == [1, 2]  # due: 10 ms after the first item
    assert len(p) == 0 and p.deadline() is None
    for i in range(3):
        p.add(f"c{i}", 10 + i, now_s=1.0, capture_ts=100.0)
    assert p.take(1.0, 100.0).batch == [10, 11, 12]  # full: leaves at once


def test_one_item_per_camera_unless_behind() -> None:
    p: BatchPolicy[str] = BatchPolicy(max_batch=4, max_wait_ms=0)
    for i in range(6):  # camera a is far behind
        p.add("a", f"a{i}", now_s=i * 0.001, capture_ts=1.0)
    p.add("b", "b0", now_s=0.010, capture_ts=1.0)
    p.add("c", "c0", now_s=0.011, capture_ts=1.0)
    batch = p.take(1.0, 1.0).batch
    assert set(batch) == {"a0", "b0", "c0", "a1"}  # b and c are not starved by a's backlog
    assert p.take(1.0, 1.0).batch == ["a2", "a3", "a4", "a5"]  # a alone: fills the batch


def test_newest_frame_wins_per_camera_offline_kept() -> None:
    p: BatchPolicy[str] = BatchPolicy(max_batch=8, max_wait_ms=50)
    assert p.add("live", "f0", now_s=0.0, capture_ts=10.0, droppable=True) == []
    assert p.add("live", "f1", now_s=0.02, capture_ts=10.1, droppable=True) == ["f0"]
    assert p.add("live", "f2", now_s=0.04, capture_ts=10.2, droppable=True) == ["f1"]
    for i in range(3):  # offline items are never replaced
        assert p.add("file", f"o{i}", now_s=0.0, capture_ts=1.0, droppable=False) == []
    assert len(p) == 4
    # the slot has waited since f0 filled it: replacements do not move the deadline
    assert p.deadline() == pytest.approx(0.05)
    taken = p.take(0.05, wall_now=1e9)  # the newest is never dropped for age
    assert set(taken.batch[:2]) == {"o0", "f2"} and taken.batch[2:] == ["o1", "o2"]
    assert taken.superseded == []


def test_more_slots_supersede_by_age_only_behind_a_newer_frame() -> None:
    p: BatchPolicy[str] = BatchPolicy(max_batch=8, max_wait_ms=50, slots_per_camera=3,
                                      max_frame_age_ms=100)  # fmt: skip
    p.add("a", "old", now_s=0.0, capture_ts=10.0, droppable=True)
    p.add("a", "mid", now_s=0.0, capture_ts=10.15, droppable=True)
    p.add("b", "lone", now_s=0.0, capture_ts=9.0, droppable=True)  # old, but b's newest
    taken = p.take(0.001, wall_now=10.2)
    assert taken.superseded == ["old"] and taken.batch == []
    assert p.take(0.06, wall_now=10.2).batch == ["mid", "lone"]
    for i in range(5):
        p.add("a", i, now_s=1.0, capture_ts=20.0, droppable=True)  # type: ignore[arg-type]
    assert len(p) == 3  # three slots: 0 and 1 were superseded on arrival


def test_cameras_are_served_round_robin() -> None:
    """More cameras than max_batch: the ones left out go first next time, even though the
    ones served refill their slot with newer frames at once."""
    p: BatchPolicy[str] = BatchPolicy(max_batch=2, max_wait_ms=0)
    served: list[str] = []
    for k in range(6):
        for cam in "abc":
            p.add(cam, f"{cam}{k}", now_s=float(k), capture_ts=1.0, droppable=True)
        served += [item[0] for item in p.take(k + 0.5, 1.0).batch]
    assert sorted(served) == sorted("abc" * 4)  # 12 slots served, 4 per camera


def test_a_full_batch_is_due_at_once() -> None:
    p: BatchPolicy[int] = BatchPolicy(max_batch=2, max_wait_ms=1000)
    p.add("a", 1, now_s=5.0, capture_ts=1.0)
    assert p.deadline() == pytest.approx(6.0)
    p.add("a", 2, now_s=5.1, capture_ts=1.0)
    assert p.deadline() == pytest.approx(5.0) and p.ready(5.1)


def test_a_batch_that_cannot_grow_leaves_at_once() -> None:
    """Every camera seen has its one slot filled with a live frame: waiting max_wait_ms cannot
    add a frame (a newer one would only replace a waiting one), so the batch is due now. A
    camera seen before but not waiting, or an offline item, can still add: it waits."""
    p: BatchPolicy[str] = BatchPolicy(max_batch=8, max_wait_ms=1000)
    p.add("a", "a0", now_s=5.0, capture_ts=1.0, droppable=True)
    assert p.deadline() == pytest.approx(5.0)  # the only camera seen: due at once
    assert p.take(5.0, 1.0).batch == ["a0"]
    p.add("b", "b0", now_s=6.0, capture_ts=1.0, droppable=True)
    assert p.deadline() == pytest.approx(7.0)  # a was seen and may send one more
    p.add("a", "a1", now_s=6.5, capture_ts=1.0, droppable=True)
    assert p.deadline() == pytest.approx(6.0)  # a and b both waiting: due now
    assert sorted(p.take(6.0, 1.0).batch) == ["a1", "b0"]
    p.forget("b")
    p.add("a", "a2", now_s=8.0, capture_ts=1.0, droppable=True)
    assert p.deadline() == pytest.approx(8.0)  # b is gone: a alone again
    p.add("f", "f0", now_s=8.1, capture_ts=1.0, droppable=False)
    assert p.deadline() == pytest.approx(9.0)  # an offline camera can add more: wait
    two: BatchPolicy[str] = BatchPolicy(max_batch=8, max_wait_ms=1000, slots_per_camera=2)
    two.add("a", "x", now_s=1.0, capture_ts=1.0, droppable=True)
    assert two.deadline() == pytest.approx(2.0)  # a second slot is free
    two.add("a", "y", now_s=1.1, capture_ts=1.0, droppable=True)
    assert two.deadline() == pytest.approx(1.0)


def test_force_and_drain() -> None:
    p: BatchPolicy[int] = BatchPolicy(max_batch=2, max_wait_ms=1000)
    for i in range(3):
        p.add("a", i, now_s=float(i), capture_ts=1.0)
    assert p.take(0.0, 1.0, force=True).batch == [0, 1]
    assert p.drain() == [2] and len(p) == 0


def test_bad_policy_arguments() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchPolicy(0, 10)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchPolicy(1, -1)
    with pytest.raises(ValueError, match="slots_per_camera"):
        BatchPolicy(1, 0, slots_per_camera=0)


def test_reorder_in_order_with_tombstones() -> None:
    r: Reorderer[str] = Reorderer(timeout_s=None)
    assert r.push("a", 0, "f0", 0.0) == ["f0"]
    assert r.push("a", 2, "f2", 0.0) == []  # waits for 1
    assert r.push("b", 0, "b0", 0.0) == ["b0"]  # other cameras unaffected
    assert r.push("a", 3, "f3", 0.0) == []
    assert r.push("a", 1, None, 0.0) == ["f2", "f3"]  # a tombstone fills the gap at once
    assert r.expire(1e9) == []  # offline: never skips
    assert r.stats.tombstones == 1 and r.stats.released == 4


def test_reorder_gap_timeout_and_late_arrival() -> None:
    r: Reorderer[str] = Reorderer(timeout_s=0.1)
    r.push("a", 0, "f0", 0.0)
    assert r.push("a", 2, "f2", 1.0) == []
    assert r.expire(1.05) == []
    assert r.expire(1.11) == ["f2"]  # gap at 1 skipped
    assert r.stats.skipped == 1
    assert r.push("a", 1, "f1", 1.2) == []  # too late: not sent out of order
    assert r.stats.late == 1
    assert r.push("a", 3, "f3", 1.3) == ["f3"]


def test_reorder_restart_and_end() -> None:
    r: Reorderer[str] = Reorderer(timeout_s=None)
    r.push("a", 0, "x0", 0.0)
    r.push("a", 1, "x1", 0.0)
    assert r.push("a", 3, "x3", 0.0) == []
    assert r.push("a", 0, "y0", 0.0) == ["x3", "y0"]  # decode restarted: start over
    assert r.stats.restarts == 1
    r.end("a", 2)
    assert not r.finished("a")
    r.push("a", 2, "y2", 0.0)
    r.push("a", 1, None, 0.0)
    assert r.finished("a")


def test_reorder_first_frames_out_of_order() -> None:
    r: Reorderer[str] = Reorderer(timeout_s=None)
    assert r.push("a", 1, "f1", 0.0) == []  # seq 0 is still on its way (another worker)
    assert r.push("a", 0, "f0", 0.0) == ["f0", "f1"]
    assert r.stats.restarts == 0
    r2: Reorderer[str] = Reorderer(timeout_s=None, start_window=10)
    assert r2.push("b", 500, "x", 0.0) == ["x"]  # joined mid-stream (this stage restarted)


def test_reorder_drain_releases_everything_held_in_order() -> None:
    r: Reorderer[str] = Reorderer(timeout_s=None)
    r.push("a", 0, "f0", 0.0)
    r.push("a", 3, "f3", 0.0)
    r.push("a", 2, "f2", 0.0)
    assert r.drain() == ["f2", "f3"] and r.held() == 0
    assert r.push("a", 4, "f4", 0.0) == ["f4"]
