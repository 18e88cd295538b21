"""``preprocess.where``: decode letterboxes and sends items straight to detect (CPU boxes), or
workers do (GPU boxes). The decode side on real sockets and a real shm pool; where it resolves; the
config refusing a split that cannot work. The whole pipeline in both modes is in
tests/runtime/test_nothing_lost.py (offline, equal to ``edgestream detect``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError, validate_config
from pipeline.messages import EndMsg, FrameMsg, ItemMsg, ShmRef
from pipeline.shm import ShmPool, ShmReader
from pipeline.transport import Receiver, Sender
from stages.detect.config import gpu_present, letterbox_in_decode
from stages.detect.preprocess import letterbox
from stages.preprocess import LetterboxSender

HW = (64, 64)


def frame(seq: int, img: np.ndarray) -> FrameMsg:
    h, w = img.shape[:2]
    return FrameMsg("cam", seq, seq, 1e9 + seq, "wallclock", w, h, img, {"decode": 1e9 + seq})


def images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(n)]


def send_live(tx: LetterboxSender, msg: FrameMsg, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not tx.send(msg, block=False):
        assert time.monotonic() < deadline, "edge never connected"
        time.sleep(0.01)


def test_live_frames_arrive_letterboxed_through_the_ring(tmp_path: Path, shm_pool: ShmPool) -> None:
    """Live sends letterbox straight into the next slot of the camera's ring (no second copy):
    each item read back is its own frame's letterbox, exactly, after all three were sent, each
    in its own slot of the one ring; the mapping and the ``preprocess`` mark travel with it."""
    imgs = images(3)
    ipc = f"ipc://{tmp_path}/items.sock"
    reader = ShmReader()
    with Receiver(ipc, pixels="ref") as rx, Sender(ipc, shm=shm_pool) as inner:
        tx = LetterboxSender(inner, HW)
        send_live(tx, frame(0, imgs[0]))
        for i in (1, 2):
            assert tx.send(frame(i, imgs[i]))
        got = [rx.recv(5000) for _ in range(3)]
        for i, item in enumerate(got):
            assert isinstance(item, ItemMsg) and item.seq == i
            assert isinstance(item.pixels, ShmRef)
            want, meta = letterbox(imgs[i], input_hw=HW, resize_to=60)
            assert item.letterbox == meta
            np.testing.assert_array_equal(reader.read(item.pixels), want)
            assert item.stage_ts["decode"] <= item.stage_ts["preprocess"]
        refs = [m.pixels for m in got]  # type: ignore[union-attr]
        assert len({r.ring for r in refs}) == 1 and len({r.slot for r in refs}) == 3
        end = EndMsg("cam", 2)
        assert tx.send(end, block=True, timeout_s=5)
        assert rx.recv(5000) == end
    reader.close()


def test_offline_frames_go_inline_each_in_its_own_array(tmp_path: Path, shm_pool: ShmPool) -> None:
    """A blocking send is zero-copy: its pixels must not be a buffer the next frame reuses."""
    imgs = images(2)
    ipc = f"ipc://{tmp_path}/items.sock"
    with Receiver(ipc, pixels="ref") as rx, Sender(ipc, shm=shm_pool) as inner:
        tx = LetterboxSender(inner, HW)
        for i in (0, 1):  # both queued before either is read
            assert tx.send(frame(i, imgs[i]), block=True, timeout_s=5)
        for i in (0, 1):
            item = rx.recv(5000)
            assert isinstance(item, ItemMsg) and isinstance(item.pixels, np.ndarray)
            np.testing.assert_array_equal(
                item.pixels, letterbox(imgs[i], input_hw=HW, resize_to=60)[0]
            )


def test_where_resolves_by_device_and_stages(tmp_path: Path) -> None:
    both = (True, True)
    assert letterbox_in_decode("auto", "cpu", *both)
    assert not letterbox_in_decode("auto", "cuda:0", *both)
    assert letterbox_in_decode("auto", "auto", *both, gpu=False)
    assert not letterbox_in_decode("auto", "auto", *both, gpu=True)
    assert letterbox_in_decode("decode", "cuda", *both)
    assert not letterbox_in_decode("workers", "cpu", *both)
    # decode and preprocess in different process trees: workers, whatever the device
    assert not letterbox_in_decode("auto", "cpu", True, False)
    assert not letterbox_in_decode("auto", "cpu", False, True)
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "nvidiactl").touch()
    assert not gpu_present(str(dev))  # the control node alone is no GPU
    (dev / "nvidia0").touch()
    assert gpu_present(str(dev))
    jetson = tmp_path / "jetson"
    jetson.mkdir()
    (jetson / "nvhost-ctrl-gpu").touch()
    assert gpu_present(str(jetson))


def _cfg(**over: object) -> dict[str, object]:
    return {"cameras": [{"id": "a", "url": "rtsp://cam/a"}],
            "model": {"weights": None, "arch": "yolo_nas_s", "random_weights": True,
                      "device": "cpu"},
            "sinks": {"jsonl": {"path": "out.jsonl"}}, **over}  # fmt: skip


def test_config_resolves_and_refuses_a_split_decode_letterbox() -> None:
    cfg = validate_config(_cfg(), check_files=False)
    assert cfg.letterbox_in_decode() and cfg.preprocess_workers() == 0
    cfg = validate_config(_cfg(preprocess={"where": "workers", "workers": 3}), check_files=False)
    assert not cfg.letterbox_in_decode() and cfg.preprocess_workers() == 3
    split = {"stages": ["decode", "track", "sink"], "edges": {
        "frames": {"endpoint": "bind:tcp://127.0.0.1:5555"},
        "detections": {"endpoint": "bind:tcp://127.0.0.1:5556"}}}  # fmt: skip
    cfg = validate_config(_cfg(transport=split), check_files=False)  # auto: workers elsewhere
    assert not cfg.letterbox_in_decode() and cfg.preprocess_workers() == 0
    with pytest.raises(ConfigError) as e:
        validate_config(_cfg(transport=split, preprocess={"where": "decode"}), check_files=False)
    assert "preprocess.where" in str(e.value)
    with pytest.raises(ConfigError) as e:
        validate_config(_cfg(preprocess={"where": "gpu"}), check_files=False)
    assert "preprocess.where" in str(e.value)
