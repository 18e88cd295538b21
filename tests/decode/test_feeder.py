"""The decode feeder on a real ZeroMQ edge (ipc, shared-memory rings): live cameras' newest
frame wins (a frame not sent yet is replaced and counted ``superseded``; nothing is ever
refused as ``queue_full``, and every frame handed in is sent or counted), offline cameras
block and lose nothing, and an end marker follows its camera's last frame."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline import transport
from pipeline.messages import EndMsg, FrameMsg, Message
from pipeline.shm import ShmPool, ShmReader
from pipeline.transport import Receiver, Sender
from stages.decode import CameraConfig, CameraState, DecodedFrame
from stages.decode.feeder import DecodeFeeder

H, W = 24, 32


@pytest.fixture(autouse=True)
def _sockets() -> Iterator[None]:
    yield
    left = transport.open_sockets()
    for s in left:
        s.close(linger=0)
    transport.shutdown()
    assert not left, f"test leaked {len(left)} socket(s)"


def frame(cam: str, i: int) -> DecodedFrame:
    rgb = np.full((H, W, 3), i % 256, np.uint8)
    return DecodedFrame(cam, i, time.time(), "wallclock", None, W, H, rgb)


def edge(tmp_path: Path, capacity: int = 2) -> tuple[Sender, Receiver, ShmPool]:
    url = f"ipc://{tmp_path / 'frames.sock'}"
    rx = Receiver(f"bind:{url}", capacity, pixels="copy")
    pool = ShmPool(f"feed{id(tmp_path) % 100000}", "frames", slots=64)
    tx = Sender(f"connect:{url}", capacity, shm=pool)
    assert tx.wait_connected(5)
    return tx, rx, pool


def feeder_for(sender: Sender, cams: dict[str, bool]) -> DecodeFeeder:
    feeder = DecodeFeeder([], sender)
    for cam, realtime in cams.items():  # configs only: frames are handed in by the test
        feeder.configs[cam] = CameraConfig(url=f"/dev/null/{cam}", realtime=realtime)
    feeder.start()
    return feeder


def read_all(rx: Receiver, quiet_s: float = 0.5) -> list[Message]:
    out: list[Message] = []
    while (m := rx.recv(timeout_ms=int(quiet_s * 1000))) is not None:
        out.append(m)
    return out


def test_live_cameras_newest_frame_wins_nothing_refused_everything_counted(
    tmp_path: Path,
) -> None:
    tx, rx, pool = edge(tmp_path, capacity=2)
    feeder = feeder_for(tx, {"a": True, "b": True})
    try:
        n = 300
        for i in range(n):  # nobody reads: the edge is full after a few frames
            feeder.on_frame(frame("a", i))
            feeder.on_frame(frame("b", i))
        time.sleep(0.3)
        got = read_all(rx)  # the consumer catches up: the waiting newest frames go out
    finally:
        feeder.stop()
        tx.close()
        rx.close()
        pool.close()
    frames = [m for m in got if isinstance(m, FrameMsg)]
    assert len(frames) == len(got)  # no drop tombstones on this edge (seq stays contiguous)
    c = feeder.counters
    assert not [k for k in c.dropped if k[1] != "superseded"], c.dropped
    by_cam: dict[str, list[FrameMsg]] = {"a": [], "b": []}
    for m in frames:
        by_cam[m.camera_id].append(m)
    for cam, msgs in by_cam.items():
        # every frame handed in was sent or counted as superseded
        assert c.sent[cam] + c.dropped[(cam, "superseded")] == n
        assert c.sent[cam] == len(msgs) and c.dropped[(cam, "superseded")] > 0
        assert [m.seq for m in msgs] == list(range(len(msgs)))  # contiguous
        ids = [m.frame_id for m in msgs]
        assert ids == sorted(ids) and ids[-1] == n - 1  # the newest frame got through
        assert int(np.asarray(msgs[-1].pixels)[0, 0, 0]) == (n - 1) % 256


def test_a_slow_consumer_gets_each_cameras_newest_frame_round_robin(tmp_path: Path) -> None:
    """Cameras keep producing while the consumer reads one frame at a time: each read gets a
    fresh frame, the cameras take turns, and only superseded frames are lost."""
    tx, rx, pool = edge(tmp_path, capacity=2)
    feeder = feeder_for(tx, {"a": True, "b": True, "c": True})
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            for cam in "abc":
                feeder.on_frame(frame(cam, i))
            i += 1
            time.sleep(0.002)

    t = threading.Thread(target=produce)
    t.start()
    got: list[FrameMsg] = []
    try:
        time.sleep(0.3)
        while len(got) < 60:
            m = rx.recv(timeout_ms=2000)
            assert isinstance(m, FrameMsg)
            got.append(m)
            time.sleep(0.01)  # a consumer slower than the cameras
    finally:
        stop.set()
        t.join()
        feeder.stop()
        tx.close()
        rx.close()
        pool.close()
    per_cam = Counter(m.camera_id for m in got)
    assert min(per_cam.values()) >= 15, per_cam  # 60 reads shared by 3 cameras (~20 each)
    c = feeder.counters
    assert not [k for k in c.dropped if k[1] not in ("superseded", "shutdown")], c.dropped
    assert all(c.dropped[(cam, "superseded")] > 0 for cam in "abc")


def test_offline_cameras_block_and_lose_nothing_and_end_follows_the_last_frame(
    tmp_path: Path,
) -> None:
    tx, rx, pool = edge(tmp_path, capacity=2)
    feeder = feeder_for(tx, {"file": False, "live": True})
    got: list[Message] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set():
            m = rx.recv(timeout_ms=50)
            if m is not None:
                got.append(m)
                time.sleep(0.002)  # slower than the file: the feeder blocks

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        for i in range(80):  # blocks while the edge is full: never dropped
            feeder.on_frame(frame("file", i))
        feeder.on_frame(frame("live", 0))
        feeder.on_frame(frame("live", 1))
        stopped = CameraState.STOPPED
        feeder.on_state("file", CameraState.STREAMING, stopped, "end of file")
        feeder.on_state("live", CameraState.STREAMING, stopped, "end of file")
        deadline = time.monotonic() + 10
        while sum(isinstance(m, EndMsg) for m in got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        reader.join()
        feeder.stop()
        tx.close()
        rx.close()
        pool.close()
    files = [m for m in got if m.camera_id == "file"]
    assert [m.seq for m in files[:-1]] == list(range(80))
    assert isinstance(files[-1], EndMsg) and files[-1].last_seq == 79
    lives = [m for m in got if m.camera_id == "live"]
    assert isinstance(lives[-1], EndMsg) and len(lives) >= 2
    last = lives[-2]
    assert isinstance(last, FrameMsg) and last.frame_id == 1
    assert lives[-1].last_seq == last.seq
    assert feeder.counters.sent["file"] == 80
    assert not [k for k in feeder.counters.dropped if k[0] == "file"]


def test_shm_pixels_are_what_the_camera_decoded(tmp_path: Path) -> None:
    """Live frames travel as descriptors into the camera's ring; the consumer reads the
    pixels the camera handed in."""
    tx, rx_ref, pool = edge(tmp_path, capacity=4)
    rx_ref.pixels = "ref"
    reader = ShmReader()
    feeder = feeder_for(tx, {"a": True})
    try:
        feeder.on_frame(frame("a", 7))
        m = rx_ref.recv(timeout_ms=2000)
        assert isinstance(m, FrameMsg)
        arr = reader.read(m.pixels)  # type: ignore[arg-type]
        assert arr is not None and arr.shape == (H, W, 3) and int(arr[0, 0, 0]) == 7
    finally:
        feeder.stop()
        reader.close()
        tx.close()
        rx_ref.close()
        pool.close()


def test_a_capped_live_camera_is_shed_evenly_and_counted(tmp_path: Path) -> None:
    """`DecodeFeeder.set_caps` (shedding at the source): a capped live camera's frames are
    admitted at the cap, evenly by stream time, the rest counted as ``shed``; an uncapped or an
    offline camera is never shed; a new cap set replaces the old."""
    tx, rx, pool = edge(tmp_path)
    feeder = feeder_for(tx, {"live": True, "free": True, "offline": False})
    try:
        feeder.set_caps({"live": 5.0, "offline": 5.0})
        times = [i / 25 for i in range(100)]  # 4 s of a 25 frames/s camera
        admitted = [t for t in times if feeder.admit("live", t)]
        assert len(admitted) == 20  # 5 frames/s
        gaps = np.diff(admitted)
        assert gaps.min() >= 0.16 and gaps.max() <= 0.24  # spread, not bunched
        assert all(feeder.admit("free", t) for t in times)
        assert all(feeder.admit("offline", t) for t in times)  # offline never loses a frame
        assert feeder.counters.dropped == Counter({("live", "shed"): 80})
        feeder.set_caps({})  # uncapped again
        assert all(feeder.admit("live", 10 + t) for t in times)
        assert feeder.counters.dropped[("live", "shed")] == 80
    finally:
        feeder.stop()
        tx.close()
        rx.close()
        pool.close()
