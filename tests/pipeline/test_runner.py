"""run_stage between real ipc sockets: routing, errors, ticks, drops, stop and drain."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.messages import DetectionsMsg, DropMsg, EndMsg, FrameMsg, Message
from pipeline.runner import FatalStageError, Stage, StageCounters, run_stage
from pipeline.shm import ShmPool
from pipeline.transport import Receiver, Sender

pytestmark = pytest.mark.usefixtures("no_leaked_sockets")  # tests/pipeline/conftest.py


def det(cam: str, seq: int) -> DetectionsMsg:
    z = np.zeros((0, 4), np.float32)
    return DetectionsMsg(cam, seq, seq, 1e9, 64, 48, z, np.zeros(0, np.float32),
                         np.zeros(0, np.int64))  # fmt: skip


class Echo:
    """Forwards everything; fails on seq 3 (or always with ``fail_all``); holds the last one
    back until close() when ``hold``."""

    def __init__(self, fail_on: int | None = 3, hold: bool = False) -> None:
        self.fail_on, self.hold = fail_on, hold
        self.events: list[str] = []
        self.held: list[Message] = []

    def setup(self) -> None:
        self.events.append("setup")

    def process(self, msg: Message) -> Iterable[Message]:
        if isinstance(msg, DetectionsMsg) and msg.seq == self.fail_on:
            raise RuntimeError("boom")
        if self.hold:
            self.held.append(msg)
            return []
        return [msg]

    def close(self) -> Iterable[Message]:
        self.events.append("close")
        out, self.held = self.held, []
        return out


class Ticker(Echo):
    poll_interval_ms = 10

    def __init__(self) -> None:
        super().__init__(fail_on=None)
        self.ticks = 0

    def tick(self, now: float) -> Iterable[Message]:
        self.ticks += 1
        return [det("tick", self.ticks)] if self.ticks <= 3 else []


def wait_connected(tx: Sender, timeout_s: float = 5.0) -> None:
    assert tx.wait_connected(timeout_s), f"{tx.name} never connected"


class Edges:
    """in → stage → out, on ipc sockets in a temp dir; the test talks to both ends."""

    def __init__(self, tmp: Path, capacity: int = 8) -> None:
        self.stop = threading.Event()
        self.src = Sender(f"ipc://{tmp}/in.sock", capacity)
        self.rx = Receiver(f"ipc://{tmp}/in.sock", capacity, name="stage")
        self.out = Sender(f"ipc://{tmp}/out.sock", capacity, stop=self.stop)
        self.sink = Receiver(f"ipc://{tmp}/out.sock", capacity)
        wait_connected(self.out)  # realtime sends to an edge not connected yet are refused

    def run(self, stage: Stage, **kw: object) -> threading.Thread:
        self.counters = StageCounters()
        self.error: BaseException | None = None

        def target() -> None:
            try:
                run_stage(stage, self.rx, self.out, self.stop, name="stage",
                          counters=self.counters, **kw)  # type: ignore[arg-type]  # fmt: skip
            except BaseException as e:
                self.error = e

        t = threading.Thread(target=target)
        t.start()
        return t

    def collect(self, n: int, timeout_ms: int = 5000) -> list[Message]:
        out = []
        for _ in range(n):
            m = self.sink.recv(timeout_ms)
            assert m is not None, f"got {len(out)} of {n} messages"
            out.append(m)
        return out

    def close(self) -> None:
        for s in (self.src, self.rx, self.out, self.sink):
            s.close()


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[Edges]:
    e = Edges(tmp_path)
    yield e
    e.stop.set()
    e.close()


def test_forwards_and_turns_a_failing_message_into_a_tombstone(
    edges: Edges, caplog: pytest.LogCaptureFixture
) -> None:
    stage = Echo()
    # outputs wait for room: this test is about routing and tombstones. A realtime (dropping)
    # output may refuse part of a burst of 6 when its send pipe (SNDHWM 4) has not been
    # drained yet by ZeroMQ's I/O thread on a loaded CPU -- a counted queue_full drop, which
    # test_realtime_output_full_counts_queue_full_drops covers.
    t = edges.run(stage, block=True)
    with caplog.at_level(logging.ERROR):
        for i in range(6):
            assert edges.src.send(det("cam", i), block=True, timeout_s=5)
        got = edges.collect(6)
    edges.stop.set()
    t.join(10)
    assert not t.is_alive() and edges.error is None
    assert [type(m).__name__ for m in got] == ["DetectionsMsg"] * 3 + ["DropMsg"] + [
        "DetectionsMsg"
    ] * 2
    assert got[3] == DropMsg("cam", 3, "stage", "error", 3)
    assert stage.events == ["setup", "close"]
    c = edges.counters
    assert c.received["cam"] == 6 and c.sent["cam"] == 6 and c.errors["cam"] == 1
    assert c.dropped[("cam", "error")] == 1
    snap = c.snapshot()
    assert snap["dropped"] == {("cam", "error"): 1} and snap["received"] == {"cam": 6}
    assert "process() failed on detections camera=cam seq=3" in caplog.text


def test_consecutive_failures_become_fatal(edges: Edges) -> None:
    class AlwaysFails(Echo):
        def process(self, msg: Message) -> Iterable[Message]:
            raise ValueError("bad")

    t = edges.run(AlwaysFails(), max_consecutive_errors=3)
    for i in range(3):
        edges.src.send(det("cam", i), block=True, timeout_s=5)
    t.join(10)
    assert isinstance(edges.error, FatalStageError)


def test_fatal_error_propagates_and_close_still_runs(edges: Edges) -> None:
    class Fatal(Echo):
        def process(self, msg: Message) -> Iterable[Message]:
            raise FatalStageError("model file vanished")

    stage = Fatal()
    t = edges.run(stage)
    edges.src.send(det("cam", 0), block=True, timeout_s=5)
    t.join(10)
    assert isinstance(edges.error, FatalStageError) and stage.events == ["setup", "close"]


def test_stop_flushes_what_the_stage_holds(edges: Edges) -> None:
    stage = Echo(fail_on=None, hold=True)
    t = edges.run(stage, block=True)
    for i in range(4):
        edges.src.send(det("cam", i), block=True, timeout_s=5)
    deadline = time.monotonic() + 5
    while edges.counters.received["cam"] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    edges.stop.set()  # the stage still holds 4 messages
    t.join(10)
    assert not t.is_alive()
    assert [m.seq for m in edges.collect(4)] == [0, 1, 2, 3]  # type: ignore[union-attr]


def test_stop_exits_promptly_when_idle(edges: Edges) -> None:
    t = edges.run(Echo())
    time.sleep(0.1)
    edges.stop.set()
    t.join(5)
    assert not t.is_alive()


def test_tick_output_and_source_stage_without_receiver(edges: Edges) -> None:
    stage = Ticker()
    t = threading.Thread(
        target=run_stage, args=(stage, None, edges.out, edges.stop), kwargs={"block": True}
    )
    t.start()
    got = edges.collect(3)
    edges.stop.set()
    t.join(5)
    assert [m.seq for m in got] == [1, 2, 3]  # type: ignore[union-attr]


def test_tick_failure_is_logged_and_counted_not_fatal(edges: Edges) -> None:
    class BadTicker(Ticker):
        def tick(self, now: float) -> Iterable[Message]:
            self.ticks += 1
            if self.ticks == 2:
                raise RuntimeError("tick boom")
            return [det("tick", self.ticks)] if self.ticks <= 3 else []

    t = threading.Thread(
        target=run_stage,
        args=(BadTicker(), None, edges.out, edges.stop),
        kwargs={"block": True, "counters": (c := StageCounters())},
    )
    t.start()
    got = edges.collect(2)
    edges.stop.set()
    t.join(5)
    assert [m.seq for m in got] == [1, 3] and c.errors[""] == 1  # type: ignore[union-attr]


def test_realtime_output_full_counts_queue_full_drops(tmp_path: Path) -> None:
    e = Edges(tmp_path, capacity=2)
    try:
        e.sink.close()  # nobody reads the output: it fills
        t = e.run(Echo(fail_on=None), block=False)
        for i in range(200):
            e.src.send(det("cam", i), block=True, timeout_s=5)
        e.src.send(EndMsg("cam", 199), block=True, timeout_s=5)
        deadline = time.monotonic() + 10
        while e.counters.received["cam"] < 201:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        e.stop.set()
        t.join(10)
        c = e.counters
        assert c.dropped[("cam", "queue_full")] > 0
        assert c.sent["cam"] + c.dropped[("cam", "queue_full")] == 201
    finally:
        e.stop.set()
        e.close()


def test_overwritten_input_frames_are_counted_and_forwarded_as_tombstones(tmp_path: Path) -> None:
    pool = ShmPool(f"test{uuid.uuid4().hex[:10]}", "frames", slots=4)
    e = Edges(tmp_path, capacity=64)
    src = Sender(f"ipc://{tmp_path}/in2.sock", 64, shm=pool)
    rx = Receiver(f"ipc://{tmp_path}/in2.sock", 64, name="stage")
    try:
        wait_connected(src)
        for i in range(10):  # realtime frames into 4 slots, before the stage reads any
            px = np.full((8, 8, 3), i, np.uint8)
            assert src.send(FrameMsg("cam", i, i, 1e9, "wallclock", 8, 8, px))
        e.rx.close()
        e.rx = rx
        t = e.run(Echo(fail_on=None))
        got = e.collect(10)
        e.stop.set()
        t.join(10)
        assert [type(m).__name__ for m in got] == ["DropMsg"] * 6 + ["FrameMsg"] * 4
        assert e.counters.dropped[("cam", "shm_overwritten")] == 6
    finally:
        e.stop.set()
        src.close()
        e.close()
        pool.close()


def test_block_policy_per_message_and_route_function(tmp_path: Path) -> None:
    stop = threading.Event()
    a = Receiver(f"ipc://{tmp_path}/a.sock")
    b = Receiver(f"ipc://{tmp_path}/b.sock")
    to_a, to_b = Sender(a.address), Sender(b.address)
    src = Sender(f"ipc://{tmp_path}/in.sock")
    rx = Receiver(f"ipc://{tmp_path}/in.sock")
    try:
        route = {"cam-a": to_a, "cam-b": to_b}
        wait_connected(to_b)  # cam-b is realtime (non-blocking)
        t = threading.Thread(
            target=run_stage,
            args=(Echo(fail_on=None), rx, lambda m: route.get(m.camera_id), stop),
            kwargs={"block": lambda m: m.camera_id == "cam-a"},
        )
        t.start()
        for cam in ("cam-a", "cam-b", "cam-c"):
            src.send(det(cam, 0), block=True, timeout_s=5)
        assert a.recv(5000).camera_id == "cam-a"  # type: ignore[union-attr]
        assert b.recv(5000).camera_id == "cam-b"  # type: ignore[union-attr]
        assert a.recv(100) is None and b.recv(100) is None  # cam-c routed nowhere
        stop.set()
        t.join(5)
    finally:
        stop.set()
        for s in (a, b, to_a, to_b, src, rx):
            s.close()


class NewestWins:
    """A batching stage (`pipeline.batching.BatchPolicy`, one slot per camera, no wait) whose
    setup is slow, as a model load or a long batch is: messages pile up in the socket."""

    def __init__(self, gate: threading.Event) -> None:
        from pipeline.batching import BatchPolicy

        self.gate = gate
        self.policy: BatchPolicy[Message] = BatchPolicy(max_batch=8, max_wait_ms=0)

    def setup(self) -> None:
        assert self.gate.wait(5)

    def process(self, msg: Message) -> Iterable[Message]:
        old = self.policy.add(msg.camera_id, msg, time.monotonic(), 0.0, droppable=True)
        return [DropMsg(m.camera_id, m.seq, "stage", "superseded") for m in old]

    def next_deadline(self) -> float | None:
        return self.policy.deadline()

    def tick(self, now: float) -> Iterable[Message]:
        return self.policy.take(now, time.time()).batch

    def close(self) -> Iterable[Message]:
        return []


def test_a_deadline_stage_reads_the_socket_empty_before_its_batch(edges: Edges) -> None:
    """Even with max_wait 0 (due as soon as one frame waits), the batch that runs holds the
    newest frame of the camera, not the first one in the socket; the rest are superseded."""
    gate = threading.Event()
    t = edges.run(NewestWins(gate), block=True)  # outputs wait: only superseding may drop
    try:
        for i in range(6):
            assert edges.src.send(det("cam", i), block=True, timeout_s=5)
        time.sleep(1.0)  # all six reach the socket (ipc: ms; 1 s leaves room on a loaded CPU)
        gate.set()
        got = edges.collect(6)
    finally:
        edges.stop.set()
        t.join(5)
    assert edges.error is None
    assert [(type(m).__name__, m.seq) for m in got] == [("DropMsg", i) for i in range(5)] + [
        ("DetectionsMsg", 5)
    ]
    assert edges.counters.dropped == {("cam", "superseded"): 5}


class Worker(Echo):
    """Hands each message to a background thread that finishes it 50 ms later; its output
    leaves through tick(). It never asks for a tick (no deadline, a 10 s poll): only the
    runner's waker can bring the result out promptly."""

    poll_interval_ms = 10_000

    def __init__(self) -> None:
        super().__init__(fail_on=None)
        self.done: list[Message] = []
        self.lock = threading.Lock()
        self.wake = lambda: None
        self.wakes = 0

    def set_waker(self, wake: Any) -> None:
        self.wake = wake

    def next_deadline(self) -> float | None:
        return None

    def process(self, msg: Message) -> Iterable[Message]:
        def later() -> None:
            time.sleep(0.05)
            with self.lock:
                self.done.append(msg)
            self.wakes += 1
            self.wake()

        threading.Thread(target=later).start()
        return []

    def tick(self, now: float) -> Iterable[Message]:
        with self.lock:
            out, self.done = self.done, []
        return out


def test_a_stage_thread_wakes_the_runner_to_send_its_output(edges: Edges) -> None:
    stage = Worker()
    t = edges.run(stage)
    wait_connected(edges.src)
    t0 = time.monotonic()
    for seq in range(3):
        assert edges.src.send(det("a", seq), block=True)
    got = edges.collect(3, timeout_ms=3000)
    took = time.monotonic() - t0
    edges.stop.set()
    t.join(5)
    assert edges.error is None
    assert sorted(m.seq for m in got) == [0, 1, 2]  # type: ignore[union-attr]
    # without the wake-up the first tick would come only after the 10 s poll interval
    assert took < 3.0 and stage.wakes == 3, took
