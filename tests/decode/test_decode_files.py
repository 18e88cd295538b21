"""File sources: codecs, RGB output, loop, realtime vs offline pacing, damaged H.264."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MEDIA

from stages.decode import CameraState

S = CameraState


@pytest.mark.parametrize("name", ["h264", "hevc", "mjpeg"])
def test_decodes_codecs_to_rgb(camera, clips, name: str) -> None:
    src, sink = camera(str(clips[name]), realtime=False)
    assert sink.wait_state(S.STOPPED, 20)
    n = 100 if name == "h264" else 50
    assert len(sink.frames) == n
    f = sink.frames[0]
    assert f.rgb.shape == (240, 320, 3) and f.rgb.dtype == np.uint8
    # the clip's first frame: red ramps with x, green with y (RGB order, not BGR)
    row = f.rgb[120, :, :].astype(int)
    assert np.corrcoef(row[:200, 0], np.arange(200))[0, 1] > 0.9
    col = f.rgb[:, 10, :].astype(int)
    assert np.corrcoef(col[:30, 1], np.arange(30))[0, 1] > 0.9
    assert [x.frame_id for x in sink.frames] == list(range(n))
    assert all(x.capture_ts_source == "file" for x in sink.frames)
    assert src.stats().state == S.STOPPED and src.stats().frames_forwarded == n
    assert sink.reasons(S.STOPPED) == ["end of file"]


def test_offline_is_fast_and_realtime_is_paced(camera, clips) -> None:
    t0 = time.monotonic()
    _, fast = camera(str(clips["h264"]), camera_id="fast", realtime=False)
    assert fast.wait_state(S.STOPPED, 20)
    offline_s = time.monotonic() - t0
    t0 = time.monotonic()
    _, paced = camera(str(clips["h264"]), camera_id="paced", realtime=True)
    assert paced.wait_state(S.STOPPED, 20)
    realtime_s = time.monotonic() - t0
    assert offline_s < 2.0
    assert 3.6 < realtime_s < 5.5  # 100 frames at 25 fps
    ts = [f.capture_ts for f in paced.frames]
    assert np.allclose(np.diff(ts), 0.04, atol=1e-6)
    # each frame is captured when due and handed over right after: no start-up offset
    late = np.array(paced.arrivals_wall) - np.array(ts)
    assert late.min() >= -0.001 and np.median(late) < 0.02, late


def test_loop_keeps_frame_ids_and_media_time_continuous(camera, clips) -> None:
    src, sink = camera(str(clips["h264"]), loop=True, realtime=False)
    assert sink.wait_frames(350, 20)
    src.stop()
    ids = [f.frame_id for f in sink.frames]
    assert ids == list(range(len(ids)))
    ts = np.array([f.capture_ts for f in sink.frames])
    assert np.allclose(np.diff(ts), 0.04, atol=1e-6)  # no jump back at the wrap
    assert src.stats().reconnects == 0


def test_detect_fps_on_file(camera, clips) -> None:
    src, sink = camera(str(clips["h264"]), realtime=False, detect_fps=5)
    assert sink.wait_state(S.STOPPED, 20)
    st = src.stats()
    assert st.frames_decoded == 100
    assert st.frames_forwarded == 20 and st.frames_skipped == 80
    pts = [f.pts for f in sink.frames]
    assert np.allclose(np.diff(pts), 0.2, atol=1e-6)


def test_real_clip_looped(camera, require) -> None:
    clip = MEDIA / "car-detection.mp4"
    require(None if clip.exists() else f"{clip} not found")
    src, sink = camera(str(clip), loop=True, realtime=False, detect_fps=50)
    assert sink.wait_frames(400, 30)  # 377 frames per pass
    assert sink.frames[0].rgb.shape == (432, 768, 3)
    assert src.stats().state == S.STREAMING


def test_truncated_h264_ends_cleanly(camera, clips) -> None:
    src, sink = camera(str(clips["truncated"]), realtime=False)
    assert sink.wait_state(S.STOPPED, 20)
    assert 0 < len(sink.frames) < 150
    assert not src.is_alive()


def test_truncated_mp4_is_a_clear_error(camera, clips) -> None:
    src, sink = camera(str(clips["truncated_mp4"]), realtime=False)
    assert sink.wait_state(S.STOPPED, 20)
    assert sink.frames == []
    reason = sink.reasons(S.STOPPED)[0]
    assert "no valid media" in reason
    assert src.stats().last_error == reason


def test_bit_flipped_h264_counts_errors_and_goes_on(camera, clips) -> None:
    src, sink = camera(str(clips["flipped"]), realtime=False, loop=True)
    assert sink.wait_frames(300, 30)  # loops twice through the damage without dying
    st = src.stats()
    assert st.corrupt_packets + st.corrupt_frames > 0
    assert st.state == S.STREAMING


def test_missing_file_stops_with_reason(camera, tmp_path: Path) -> None:
    src, sink = camera(str(tmp_path / "nope.mp4"))
    assert sink.wait_state(S.STOPPED, 10)
    assert "no such file" in sink.reasons(S.STOPPED)[0]
    assert src.stats().reconnects == 0


def test_stop_interrupts_realtime_file(camera, clips) -> None:
    src, sink = camera(str(clips["h264"]), loop=True, realtime=True)
    assert sink.wait_frames(5, 10)
    t0 = time.monotonic()
    assert src.stop(timeout_s=5)
    assert time.monotonic() - t0 < 1.0
    assert src.state == S.STOPPED


def test_hwaccel_falls_back_to_cpu_when_unavailable(camera, clips, caplog) -> None:
    from stages.decode.opener import hwaccel_usable

    if hwaccel_usable("cuda") is None:
        pytest.skip("a CUDA device is present: the fallback path is not reachable")
    src, sink = camera(str(clips["h264"]), realtime=False, hwaccel="cuda")
    assert sink.wait_state(S.STOPPED, 20)
    assert len(sink.frames) == 100
    assert src.stats().hwaccel_active is False
    assert "hwaccel 'cuda' unavailable" in caplog.text


@pytest.mark.gpu
def test_hwaccel_cuda_decodes_on_gpu(camera, clips) -> None:
    from stages.decode.opener import hwaccel_usable

    problem = hwaccel_usable("cuda")
    if problem is not None:
        pytest.skip(f"CUDA decode unavailable: {problem}")
    src, sink = camera(str(clips["h264"]), realtime=False, hwaccel="cuda")
    assert sink.wait_state(S.STOPPED, 20)
    assert len(sink.frames) == 100
    assert sink.frames[0].rgb.shape == (240, 320, 3)
    assert src.stats().hwaccel_active is True
