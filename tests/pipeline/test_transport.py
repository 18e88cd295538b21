"""ZeroMQ edges on real sockets: ipc in a temp dir, tcp on 127.0.0.1, and across processes."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq

from pipeline import transport
from pipeline.messages import DropMsg, EndMsg, FrameMsg, MessageError, ShmRef
from pipeline.shm import ShmPool, list_segments
from pipeline.transport import Endpoint, EndpointError, Receiver, Sender

SPAWN = mp.get_context("spawn")


pytestmark = pytest.mark.usefixtures("no_leaked_sockets")  # tests/pipeline/conftest.py


@pytest.fixture
def ipc(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/edge.sock"


def send_when_connected(tx: Sender, msg: object, timeout_s: float = 5.0) -> None:
    """A non-blocking (realtime) send, retried until the connection is up."""
    deadline = time.monotonic() + timeout_s
    while not tx.send(msg, block=False):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, "edge never connected"
        time.sleep(0.01)


def frame(seq: int, h: int = 120, w: int = 160) -> FrameMsg:
    px = np.full((h, w, 3), seq % 256, np.uint8)
    return FrameMsg("cam", seq, seq, 1e9 + seq, "wallclock", w, h, px, {"decode": 1e9 + seq})


# ------------------------------------------------------------------ endpoints


def test_endpoint_parse_modes_and_defaults() -> None:
    assert Endpoint.parse("bind:ipc:///tmp/a", "connect") == Endpoint("bind", "ipc:///tmp/a")
    assert Endpoint.parse("ipc:///tmp/a", "connect").mode == "connect"
    assert Endpoint.parse("ipc:///tmp/a", "bind").mode == "bind"
    ep = Endpoint.parse("connect:tcp://10.0.0.2:5555", "bind")
    assert (ep.mode, ep.url, ep.is_ipc) == ("connect", "tcp://10.0.0.2:5555", False)
    assert str(ep) == "connect:tcp://10.0.0.2:5555"
    assert Endpoint.parse("bind:tcp://*:5555", "connect").peer() == Endpoint(
        "connect", "tcp://127.0.0.1:5555"
    )
    assert Endpoint.parse("connect:ipc:///x", "bind").peer() == Endpoint("bind", "ipc:///x")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("udp://1.2.3.4:5", "must be"),
        ("bind:ipc://", "needs a path"),
        ("ipc:///" + "x" * 120, "OS limit"),
        ("tcp://host", "tcp://HOST:PORT"),
        ("connect:tcp://*:5555", "cannot connect to"),
        ("sideways:tcp://a:1", "must be"),
    ],
)
def test_endpoint_errors(text: str, error: str) -> None:
    with pytest.raises(EndpointError, match=error):
        Endpoint.parse(text, "connect")


def test_socket_options(ipc: str) -> None:
    with Receiver(ipc, capacity=9) as rx, Sender(ipc, capacity=9) as tx:
        assert (tx.socket.getsockopt(zmq.SNDHWM), rx.socket.getsockopt(zmq.RCVHWM)) == (5, 4)
        assert tx.socket.getsockopt(zmq.LINGER) == 0 and rx.socket.getsockopt(zmq.LINGER) == 0
        assert tx.socket.getsockopt(zmq.IMMEDIATE) == 1
    with pytest.raises(ValueError, match="capacity"):
        transport.split_capacity(0)


def test_shutdown_never_blocks_on_sockets_opened_directly() -> None:
    raw = transport.context().socket(zmq.PUSH)
    raw.connect("tcp://127.0.0.1:1")
    raw.send(b"x")  # queued for a peer that never comes; linger would be forever by default
    transport.shutdown()
    assert raw.closed
    assert not transport.context().closed  # a fresh one


# ------------------------------------------------------------------ one process, real sockets


def test_ipc_inline_roundtrip(ipc: str) -> None:
    with Receiver(ipc) as rx, Sender(ipc) as tx:
        msg = frame(3)
        assert tx.send(msg, block=True, timeout_s=5)
        got = rx.recv(5000)
        assert isinstance(got, FrameMsg) and got == msg
        assert np.array_equal(got.pixels, msg.pixels)  # type: ignore[arg-type]
    assert not Path(ipc[len("ipc://") :]).exists()  # the bound side removed its socket file


def test_ipc_shm_roundtrip_copy_and_ref(ipc: str, shm_pool: ShmPool) -> None:
    with Receiver(ipc, pixels="ref") as rx, Sender(ipc, shm=shm_pool) as tx:
        send_when_connected(tx, frame(1))
        got = rx.recv(5000)
        assert isinstance(got, FrameMsg) and isinstance(got.pixels, ShmRef)
        arr = rx.reader.read(got.pixels)
        assert arr is not None and (arr == 1).all()
    with Receiver(ipc) as rx, Sender(ipc, shm=shm_pool) as tx:
        send_when_connected(tx, frame(2))
        got = rx.recv(5000)
        assert isinstance(got, FrameMsg) and isinstance(got.pixels, np.ndarray)
        assert (got.pixels == 2).all() and got.pixels.shape == (120, 160, 3)
        assert tx.send(frame(3), block=True, timeout_s=5)  # blocking (offline): pixels inline
        got = rx.recv(5000)
        assert isinstance(got, FrameMsg) and (got.pixels == 3).all()  # type: ignore[union-attr]
    with Receiver(ipc, pixels="ref") as rx, Sender(ipc, shm=shm_pool) as tx:
        assert tx.send(frame(4), block=True, timeout_s=5)
        got = rx.recv(5000)
        assert isinstance(got, FrameMsg) and isinstance(got.pixels, np.ndarray)


def test_overwritten_slot_becomes_drop_tombstone(ipc: str, shm_pool: ShmPool) -> None:
    with Receiver(ipc, capacity=64, name="preprocess") as rx, Sender(ipc, 64, shm=shm_pool) as tx:
        send_when_connected(tx, frame(0))
        for i in range(1, 10):  # 10 realtime frames into 4 slots before the consumer reads
            assert tx.send(frame(i))
        got = [rx.recv(5000) for _ in range(10)]
        drops = [m for m in got if isinstance(m, DropMsg)]
        frames = [m for m in got if isinstance(m, FrameMsg)]
        assert [m.seq for m in drops] == list(range(6))
        assert {(m.stage, m.reason) for m in drops} == {("preprocess", "shm_overwritten")}
        assert [m.seq for m in frames] == [6, 7, 8, 9]
        assert all((m.pixels == m.seq).all() for m in frames)  # type: ignore[union-attr]


def test_tcp_inline_and_shm_ref_resolved_for_remote_edge(shm_pool: ShmPool) -> None:
    with Receiver("bind:tcp://127.0.0.1:0") as rx, Sender(rx.address) as tx:
        assert rx.address.startswith("tcp://127.0.0.1:") and not rx.address.endswith(":0")
        ref = shm_pool.write("cam", np.full((120, 160, 3), 7, np.uint8))
        msg = frame(7)
        assert tx.send(FrameMsg(**{**_fields(msg), "pixels": ref}), block=True, timeout_s=5)
        got = rx.recv(5000)
        assert isinstance(got, FrameMsg) and isinstance(got.pixels, np.ndarray)
        assert (got.pixels == 7).all()


def _fields(msg: FrameMsg) -> dict:
    return {k: getattr(msg, k) for k in msg.__dataclass_fields__}


def test_nonblocking_send_refuses_without_peer_and_when_full(ipc: str) -> None:
    with Sender(ipc) as tx:  # nobody bound: IMMEDIATE means nothing is queued
        assert tx.send(frame(0)) is False
        assert tx.refused == 1
    with Receiver(ipc, capacity=2) as rx, Sender(ipc, capacity=2) as tx:
        send_when_connected(tx, frame(0, 1080, 1920))
        before = tx.refused
        results = [tx.send(frame(i, 1080, 1920)) for i in range(200)]
        assert not all(results)  # nobody reads, 6 MB frames: the queue fills fast
        assert tx.refused - before == results.count(False)
        del rx


def test_nonblocking_sends_one_at_a_time_are_never_refused(ipc: str) -> None:
    """libzmq's send() learns that the peer drained the queue only every ~1 ms; without the
    ZMQ_EVENTS check a realtime edge would drop frames with an empty queue."""
    with Receiver(ipc, capacity=2) as rx, Sender(ipc, capacity=2) as tx:
        send_when_connected(tx, EndMsg("c", 0))
        rx.recv(5000)
        for i in range(300):
            assert tx.send(EndMsg("c", i)), f"refused at {i} with an empty queue"
            assert rx.recv(5000) == EndMsg("c", i)


def test_shm_ref_passes_through_ipc_and_is_inlined_when_blocking(
    ipc: str, shm_pool: ShmPool
) -> None:
    ref = shm_pool.write("cam", np.full((120, 160, 3), 9, np.uint8))  # a stage's own slab
    msg = FrameMsg(**{**_fields(frame(9)), "pixels": ref})
    with Receiver(ipc, pixels="ref") as rx, Sender(ipc) as tx:
        send_when_connected(tx, msg)
        assert rx.recv(5000).pixels == ref  # type: ignore[union-attr]
        assert tx.send(msg, block=True, timeout_s=5)
        got = rx.recv(5000)
        assert isinstance(got, FrameMsg) and isinstance(got.pixels, np.ndarray)
        assert (got.pixels == 9).all()
    with pytest.raises(ValueError, match="inline edge"):
        Sender("tcp://127.0.0.1:1", shm=shm_pool)


def test_blocking_send_honours_stop_and_timeout(ipc: str) -> None:
    stop = threading.Event()
    with Sender(ipc, stop=stop) as tx:
        t0 = time.monotonic()
        assert tx.send(frame(0), block=True, timeout_s=0.3) is False
        assert time.monotonic() - t0 >= 0.25
        threading.Timer(0.3, stop.set).start()
        assert tx.send(frame(0), block=True) is False  # returns once stop is set
        stop.set()
        assert tx.send(frame(0), block=True, timeout_s=0.2, check_stop=False) is False


def test_blocking_send_loses_nothing_with_a_slow_consumer(ipc: str, shm_pool: ShmPool) -> None:
    n = 60
    got: list[int] = []

    def consume() -> None:
        with Receiver(ipc, capacity=2) as rx:
            while len(got) < n:
                m = rx.recv(5000)
                if m is None:
                    return
                assert isinstance(m, FrameMsg)
                got.append(m.seq)
                time.sleep(0.002)

    t = threading.Thread(target=consume)
    t.start()
    with Sender(ipc, capacity=2) as tx:
        for i in range(n):
            assert tx.send(frame(i), block=True, timeout_s=10)
        t.join(30)
    assert got == list(range(n))


def test_malformed_message_raises_then_stream_continues(ipc: str) -> None:
    with Receiver(ipc) as rx, Sender(ipc) as tx:
        tx.socket.send_multipart([b'{"v": 1, "type": "nope"}'])
        tx.send(EndMsg("cam", 3), block=True, timeout_s=5)
        with pytest.raises(MessageError, match="unknown message type"):
            rx.recv(5000)
        assert rx.recv(5000) == EndMsg("cam", 3)
        assert rx.recv(0) is None


def test_stale_ipc_file_is_replaced_but_live_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    path.write_bytes(b"")  # left by a killed process
    ep = f"bind:ipc://{path}"
    with Receiver(ep) as rx:
        with pytest.raises(EndpointError, match="in use"):
            Receiver(ep)
        with Sender(f"connect:ipc://{path}") as tx:
            assert tx.send(EndMsg("c", 1), block=True, timeout_s=5)
            assert rx.recv(5000) == EndMsg("c", 1)


def test_oversized_part_disconnects_the_peer() -> None:
    with Receiver("tcp://127.0.0.1:0", max_part_bytes=1 << 20) as rx, Sender(rx.address) as tx:
        assert rx.socket.getsockopt(zmq.MAXMSGSIZE) == 1 << 20
        assert tx.send(frame(1, 1080, 1920), block=True, timeout_s=5)  # 6 MB pixels
        assert rx.recv(500) is None


def test_bind_failure_is_clear() -> None:
    with Receiver("bind:tcp://127.0.0.1:0") as rx, pytest.raises(EndpointError, match="bind"):
        Receiver(f"bind:{rx.address}")


# ------------------------------------------------------------------ across processes


def _produce(endpoint: str, pipeline: str | None, n: int, go: object) -> None:
    stop = threading.Event()
    pool = ShmPool(pipeline, "frames", slots=8) if pipeline else None
    with Sender(endpoint, capacity=4, shm=pool, stop=stop) as tx:
        go.wait(30)  # type: ignore[attr-defined]
        for i in range(n):
            # offline: blocking; with a ring, frames 1-2 as realtime sends (through the ring)
            realtime = pool is not None and i in (1, 2)
            assert tx.send(frame(i, 720, 1280), block=not realtime, timeout_s=30)
        tx.send(EndMsg("cam", n - 1), block=True, timeout_s=30)
        time.sleep(1.0)  # keep the ring until the consumer copied the last frames
    if pool is not None:
        pool.close()
    transport.shutdown()


def _produce_offline_shm(endpoint: str, pipeline: str, n: int) -> None:
    pool = ShmPool(pipeline, "frames", slots=3)
    with Sender(endpoint, capacity=8, shm=pool, offline_wait_s=30.0) as tx:
        for i in range(n):
            assert tx.send(frame(i, 360, 640), block=True, timeout_s=30)
        tx.send(EndMsg("cam", n - 1), block=True, timeout_s=30)
        time.sleep(0.5)
    pool.close()
    transport.shutdown()


def test_offline_edge_through_shm_loses_nothing_with_a_slow_consumer(tmp_path: Path) -> None:
    """3 ring slots, 40 frames, a consumer slower than the producer: every frame arrives as a
    descriptor, none overwritten, because the producer waits for each slot's release."""
    pipeline = f"test{uuid.uuid4().hex[:10]}"
    rx = Receiver(f"ipc://{tmp_path}/x.sock", capacity=16, pixels="ref")
    p = SPAWN.Process(target=_produce_offline_shm, args=(rx.address, pipeline, 40))
    p.start()
    try:
        seqs = []
        while True:
            m = rx.recv(30_000)
            assert m is not None, "producer went silent"
            if isinstance(m, EndMsg):
                break
            assert isinstance(m, FrameMsg) and isinstance(m.pixels, ShmRef), m
            time.sleep(0.01)  # slow consumer: the producer must wait, not overwrite
            px = rx.reader.read(m.pixels)  # copies out and releases the slot
            assert px is not None, f"frame {m.seq} was overwritten"
            assert (px == m.seq % 256).all()
            seqs.append(m.seq)
        assert seqs == list(range(40))
    finally:
        rx.close()
        p.join(30)
    assert p.exitcode == 0
    assert not list_segments(f"edgestream-{pipeline}-")


@pytest.mark.parametrize("kind", ["ipc+shm", "tcp inline"])
def test_cross_process_edge_loses_nothing_when_blocking(kind: str, tmp_path: Path) -> None:
    pipeline = f"test{uuid.uuid4().hex[:10]}" if kind == "ipc+shm" else None
    rx = Receiver(f"ipc://{tmp_path}/x.sock" if pipeline else "tcp://127.0.0.1:0", capacity=16)
    go = SPAWN.Event()
    p = SPAWN.Process(target=_produce, args=(rx.address, pipeline, 20, go))
    p.start()
    try:
        go.set()
        seqs = []
        while True:
            m = rx.recv(30_000)
            assert m is not None, "producer went silent"
            if isinstance(m, EndMsg):
                break
            assert isinstance(m, FrameMsg) and isinstance(m.pixels, np.ndarray)
            assert m.pixels.shape == (720, 1280, 3) and m.pixels[5, 5, 0] == m.seq
            seqs.append(m.seq)
        assert seqs == list(range(20))
    finally:
        rx.close()
        p.join(30)
    assert p.exitcode == 0
    if pipeline:
        assert not list_segments(f"edgestream-{pipeline}-")
