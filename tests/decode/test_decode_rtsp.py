"""Against a real RTSP server (GStreamer's gst-rtsp-server, started per test): reconnects,
stalls, refusals, timestamps, pacing and isolation between cameras.

Timeouts are shortened (``conftest.FAST``: open 3 s, read 1 s, stall 2 s, backoff 0.2-1 s).
Each test prints what it measured (run with ``-s`` to see the figures).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from conftest import FAST
from rtsp_harness import blackhole_listener, make_clip

from stages.decode import CameraState

S = CameraState
pytestmark = pytest.mark.rtsp


def test_live_stream_frames_rgb_and_rtcp_capture_time(rtsp_factory, camera) -> None:
    server = rtsp_factory("/live=live:320x240@25")
    src, sink = camera(server.url("/live"))
    assert sink.wait_frames(1, 10), sink.states
    # GStreamer sends its first RTCP sender report a few seconds after PLAY.
    assert sink.wait_for(lambda: any(f.capture_ts_source == "rtcp" for f in sink.frames), 10)
    t0 = time.monotonic()  # (the first second after PLAY comes in a burst: pre-roll)
    time.sleep(1.5)
    frames, walls = list(sink.frames), list(sink.arrivals_wall)
    assert frames[0].rgb.shape == (240, 320, 3)
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    rtcp = [
        (f.capture_ts, w)
        for f, w in zip(frames, walls, strict=True)
        if f.capture_ts_source == "rtcp"
    ]
    lag = np.array([w - c for c, w in rtcp])
    print(f"\nrtcp frames {len(rtcp)}; receive - capture: median {np.median(lag) * 1e3:.1f} ms, "
          f"min {lag.min() * 1e3:.1f}, max {lag.max() * 1e3:.1f}")  # fmt: skip
    assert 0.0 <= np.median(lag) < 0.5  # same host clock: capture precedes receipt, not by much
    caps = np.array([c for c, _ in rtcp])
    assert np.all(np.diff(caps) > 0) and np.allclose(np.diff(caps), 0.04, atol=0.005)
    rate = sink.rate(t0, time.monotonic())
    assert 22 < rate < 28, rate
    st = src.stats()
    assert st.state == S.STREAMING and st.frames_skipped == 0
    assert st.frames_decoded - 1 <= st.frames_forwarded <= st.frames_decoded  # one in flight


def test_looped_clip_keeps_streaming(rtsp_factory, camera, tmp_path) -> None:
    clip = make_clip(tmp_path / "short.mp4", frames=50)  # 2 s at 25 fps
    server = rtsp_factory(f"/clip=clip:{clip}")
    src, sink = camera(server.url("/clip"))
    assert sink.wait_frames(1, 10), sink.states
    time.sleep(1.0)  # the server pre-rolls: the first second arrives in a burst
    t0 = time.monotonic()
    time.sleep(5.0)  # 2.5 passes of the clip
    rate = sink.rate(t0, time.monotonic())
    print(f"\nlooped clip over RTSP: {rate:.1f} fps over 5 s (2.5 passes)")
    assert 22 < rate < 28
    assert src.stats().reconnects == 0 and src.state == S.STREAMING


def test_server_killed_backoff_then_recovers_after_restart(rtsp_factory, camera) -> None:
    server = rtsp_factory("/live=live:320x240@25")
    src, sink = camera(server.url("/live"))
    assert sink.wait_frames(10, 10), sink.states
    t_kill = time.monotonic()
    server.kill()
    t_backoff = sink.wait_state(S.BACKOFF, 5, after=t_kill)
    assert t_backoff is not None
    assert t_backoff - t_kill < 1.0  # a killed server: the demuxer just ends
    assert "stream ended" in sink.reasons(S.BACKOFF)[0]
    time.sleep(2.5)  # several refused attempts while the server is down
    refused = [r for r in sink.reasons(S.BACKOFF) if "connection refused" in r]
    assert len(refused) >= 2, sink.reasons(S.BACKOFF)
    server.start()
    t_up = time.monotonic()
    assert sink.wait_frames(1, FAST["backoff_max_s"] + 3.0, after=t_up), sink.states[-4:]
    recovery = next(t for t in sink.arrivals if t >= t_up) - t_up
    print(f"\nkilled -> backoff in {(t_backoff - t_kill) * 1e3:.0f} ms; restarted -> first frame "
          f"in {recovery:.2f} s (bound {FAST['backoff_max_s'] + 3.0:.1f} s)")  # fmt: skip
    st = src.stats()
    assert st.reconnects >= 3 and st.state == S.STREAMING
    assert [f.frame_id for f in sink.frames] == list(range(len(sink.frames)))


def test_sigstop_stall_detected_then_recovers(rtsp_factory, camera) -> None:
    server = rtsp_factory("/live=live:320x240@25")
    src, sink = camera(server.url("/live"))
    assert sink.wait_frames(10, 10), sink.states
    t_stop = time.monotonic()
    server.freeze()
    try:
        t_stall = sink.wait_state(S.STALLED, FAST["stall_timeout_s"] + 3, after=t_stop)
        assert t_stall is not None, sink.states
        detect = t_stall - t_stop
        t_backoff = sink.wait_state(S.BACKOFF, 5, after=t_stall)
        assert t_backoff is not None
    finally:
        server.thaw()
    t_thaw = time.monotonic()
    assert sink.wait_frames(1, FAST["open_timeout_s"] + FAST["backoff_max_s"] + 3, after=t_thaw)
    print(f"\nSIGSTOP -> stalled in {detect:.2f} s (stall_timeout_s {FAST['stall_timeout_s']}), "
          f"-> backoff in {t_backoff - t_stop:.2f} s; SIGCONT -> frames in "
          f"{next(t for t in sink.arrivals if t >= t_thaw) - t_thaw:.2f} s")  # fmt: skip
    assert detect <= FAST["stall_timeout_s"] + 1.0
    assert src.stats().stalls >= 1


def test_port_that_accepts_and_never_answers(camera) -> None:
    listener, port = blackhole_listener()
    with listener:
        t0 = time.monotonic()
        src, sink = camera(f"rtsp://127.0.0.1:{port}/live")
        assert sink.wait_for(
            lambda: len(sink.reasons(S.BACKOFF)) >= 2, 2 * (FAST["open_timeout_s"] + 2)
        )
        first = sink.wait_state(S.BACKOFF, 0)
        assert first is not None and first - t0 < FAST["open_timeout_s"] + 1.0
        reason = sink.reasons(S.BACKOFF)[0]
        print(f"\nsilent port: backoff after {first - t0:.2f} s: {reason}")
        assert "within 3 s" in reason
        assert src.is_alive() and sink.frames == []


def test_wrong_path_404(rtsp_factory, camera) -> None:
    server = rtsp_factory("/live=live:320x240@25")
    src, sink = camera(server.url("/no-such-path"))
    assert sink.wait_for(lambda: len(sink.reasons(S.BACKOFF)) >= 3, 10)
    assert all("404 Not Found" in r for r in sink.reasons(S.BACKOFF))
    assert src.is_alive() and src.stats().last_error.startswith("connect: 404")


def test_bad_credentials_401_redacted_and_retried(rtsp_factory, camera, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="stages.decode")
    server = rtsp_factory("/live=live:320x240@25", auth="viewer:s3cret-pw")
    bad, bad_sink = camera(server.url("/live", "viewer:wr0ng-pw"), camera_id="bad")
    good, good_sink = camera(server.url("/live", "viewer:s3cret-pw"), camera_id="good")
    assert bad_sink.wait_for(lambda: len(bad_sink.reasons(S.BACKOFF)) >= 3, 10)
    assert good_sink.wait_frames(10, 10), good_sink.states
    reasons = bad_sink.reasons(S.BACKOFF)
    assert all("401 Unauthorized" in r for r in reasons), reasons
    assert bad.is_alive() and bad_sink.frames == []
    everything = caplog.text + repr(bad_sink.states) + repr(good_sink.states)
    everything += repr(bad.stats()) + repr(good.stats())
    assert "wr0ng-pw" not in everything and "s3cret-pw" not in everything
    assert "viewer:***@127.0.0.1" in caplog.text


def test_udp_transport(rtsp_factory, camera) -> None:
    server = rtsp_factory("/live=live:320x240@25")
    src, sink = camera(server.url("/live"), transport="udp")
    assert sink.wait_frames(30, 10), sink.states
    assert src.state == S.STREAMING


def test_detect_fps_paces_live_stream(rtsp_factory, camera) -> None:
    server = rtsp_factory("/live=live:320x240@25")
    src, sink = camera(server.url("/live"), detect_fps=5)
    assert sink.wait_frames(1, 10), sink.states
    time.sleep(0.5)
    t0, d0 = time.monotonic(), src.stats()
    time.sleep(4.0)
    t1, d1 = time.monotonic(), src.stats()
    fwd = (d1.frames_forwarded - d0.frames_forwarded) / (t1 - t0)
    skipped = (d1.frames_skipped - d0.frames_skipped) / (t1 - t0)
    print(f"\ndetect_fps=5 on 25 fps: forwarded {fwd:.2f} fps, skipped {skipped:.2f} fps")
    assert 4.5 <= fwd <= 5.5
    assert 18 <= skipped <= 22
    pts = np.array([f.pts for f in sink.frames[1:] if f.pts is not None])
    gaps = np.diff(pts)
    assert np.all(gaps > 0.15) and np.all(gaps < 0.25)  # evenly spread: every 5th frame


def test_three_cameras_one_killed_others_keep_rate(rtsp_factory, camera) -> None:
    servers = [rtsp_factory("/live=live:320x240@25") for _ in range(3)]
    cams = [camera(s.url("/live"), camera_id=f"cam{i}") for i, s in enumerate(servers)]
    for _, sink in cams:
        assert sink.wait_frames(10, 10), sink.states
    time.sleep(1.0)
    t0 = time.monotonic()
    time.sleep(4.0)
    t1 = time.monotonic()
    servers[0].kill()
    time.sleep(4.0)  # camera 0 is in backoff / refused the whole window
    t2 = time.monotonic()
    before = [sink.rate(t0, t1) for _, sink in cams[1:]]
    after = [sink.rate(t1, t2) for _, sink in cams[1:]]
    print(f"\nfps before/after cam0 killed: cam1 {before[0]:.1f}/{after[0]:.1f}, "
          f"cam2 {before[1]:.1f}/{after[1]:.1f}; cam0 state {cams[0][0].state.value}")  # fmt: skip
    assert cams[0][0].state in (S.BACKOFF, S.CONNECTING)
    for b, a in zip(before, after, strict=True):
        assert abs(a - b) <= 0.1 * b


def test_stop_while_stalled_is_bounded(rtsp_factory, camera) -> None:
    server = rtsp_factory("/live=live:320x240@25")
    src, sink = camera(server.url("/live"))
    assert sink.wait_frames(5, 10), sink.states
    server.freeze()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        assert src.stop(timeout_s=2 * FAST["read_timeout_s"] + 2)
        print(f"\nstop() while the server is frozen took {time.monotonic() - t0:.2f} s")
    finally:
        server.thaw()
    assert src.state == S.STOPPED
