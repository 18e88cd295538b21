"""One camera: a thread that connects, decodes, paces and reconnects forever.

State machine (each transition logged once, counted in ``stats().transitions``, and passed
to ``FrameSink.on_state``)::

    connecting ──first frame──▶ streaming ──no frame for stall_timeout_s──▶ stalled
        ▲  │                       │                                        │
        │  └─error────────┐        └─stream ended / read error──┐           │ read gives up
        │                 ▼                                      ▼           ▼
        └──delay elapsed── backoff ◀─────────────────────────────────────────┘
    any state ──stop() / end of file (no loop) / unrecoverable file──▶ stopped

Why a thread per camera, not a process: PyAV releases the GIL while it waits on the network
and while FFmpeg demuxes, decodes and converts, so one process decodes many cameras in
parallel, frames stay in the process that owns the shared-memory ring, and a thread costs
~100 KB instead of a Python interpreter (~40 MB) per camera. Every blocking call is bounded
by a timeout, so a dead, stalled or corrupt camera only ever blocks its own thread; the
tests check that the other cameras keep their frame rate. What a thread cannot contain is a
crash inside FFmpeg itself: the runtime may host a :class:`CameraSource` per process for
that isolation — the class is the same either way.

Stall detection is two-layered: a per-camera watchdog thread flags ``stalled`` as soon as no
frame has been delivered for ``stall_timeout_s`` (the demuxer may be blocked in FFmpeg, which
gives up only after about twice ``read_timeout_s``), and the reading loop aborts a connection
that keeps delivering packets but no frames for that long. Time spent in the sink or in
real-time pacing does not count as a stall.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import av
import av.container
import av.error
import av.video.stream

from pipeline.redact import redact_text, redact_url, url_secrets
from stages.decode.backoff import Backoff
from stages.decode.config import CameraConfig
from stages.decode.errors import StreamStalled, describe_error, is_permanent_for_file
from stages.decode.opener import configure_video_stream, hwaccel_usable, open_input
from stages.decode.pacing import RatePacer, RealtimeClock
from stages.decode.timestamps import RtcpClock
from stages.decode.types import (
    CameraState,
    CameraStats,
    CaptureTsSource,
    DecodedFrame,
    FrameSink,
)

log = logging.getLogger(__name__)

S = CameraState


_STALL_ERRORS = (StreamStalled, av.error.ExitError, av.error.TimeoutError, TimeoutError)


class _Stop(Exception):
    """Raised inside the reading loop when stop() was called."""


class _Rewind(Exception):
    """A looped file reached its end and must be reopened (it cannot seek)."""


class CameraSource:
    """Decode one camera in its own thread and hand frames and state changes to ``sink``.

    ``start()`` returns at once; ``stop()`` asks the thread to finish and waits for it (a read
    blocked inside FFmpeg returns within its timeout, so allow ``2 * read_timeout_s``).
    ``stats()`` may be called from any thread (the counters are written by the camera thread
    only; a snapshot is consistent per field, not across fields).
    """

    def __init__(
        self,
        camera_id: str,
        config: CameraConfig,
        sink: FrameSink,
        rtcp_max_skew_s: float = 30.0,
        first_frame_id: int = 0,
    ) -> None:
        self.camera_id = camera_id
        self.config = config
        self.sink = sink
        self.rtcp_max_skew_s = rtcp_max_skew_s
        self.safe_url = redact_url(config.url)
        self._secrets = url_secrets(config.url)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = S.STOPPED
        self._started = False
        self._transitions: Counter[str] = Counter()
        self._backoff = Backoff(config.backoff_min_s, config.backoff_max_s, config.backoff_jitter)
        self._use_hwaccel = config.hwaccel is not None
        self._hw_active = False
        self._hw_probed = False
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        # counters (written by the camera thread only; read under the lock for a snapshot)
        self.frames_decoded = 0
        self.frames_forwarded = 0
        self.frames_skipped = 0
        self.corrupt_packets = 0
        self.corrupt_frames = 0
        self.sink_errors = 0
        self.reconnects = 0
        self.stalls = 0
        self.last_error: str | None = None
        self._next_frame_id = first_frame_id  # a reopened camera continues its frame ids
        self._last_frame_mono: float | None = None
        self._in_sink = False
        self._media_offset_s = 0.0  # file loops: media time carried over from previous passes
        self._stop_reason: str | None = None  # why the camera stopped by itself (file end, ...)

    # ---------------------------------------------------------------- public API
    def start(self) -> None:
        if self._started:
            raise RuntimeError(f"camera {self.camera_id} already started")
        self._started = True
        self._thread = threading.Thread(
            target=self._run, name=f"decode-{self.camera_id}", daemon=True
        )
        self._watchdog = threading.Thread(
            target=self._watch, name=f"decode-watchdog-{self.camera_id}", daemon=True
        )
        self._thread.start()
        self._watchdog.start()

    def stop(self, timeout_s: float | None = None) -> bool:
        """Stop the camera; True if its thread finished within ``timeout_s``."""
        self._stop.set()
        if timeout_s is None:
            timeout_s = 2 * self.config.read_timeout_s + self.config.open_timeout_s + 1.0
        deadline = time.monotonic() + timeout_s
        for thread in (self._thread, self._watchdog):
            if thread is not None and thread is not threading.current_thread():  # from a callback
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t is not None and t.is_alive() for t in (self._thread, self._watchdog))

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def next_frame_id(self) -> int:
        """The frame id the next decoded frame gets (where a reopened camera continues)."""
        return self._next_frame_id

    @property
    def state(self) -> CameraState:
        return self._state

    def stats(self) -> CameraStats:
        with self._lock:
            last = self._last_frame_mono
            return CameraStats(
                camera_id=self.camera_id,
                state=self._state,
                frames_decoded=self.frames_decoded,
                frames_forwarded=self.frames_forwarded,
                frames_skipped=self.frames_skipped,
                corrupt_packets=self.corrupt_packets,
                corrupt_frames=self.corrupt_frames,
                sink_errors=self.sink_errors,
                reconnects=self.reconnects,
                stalls=self.stalls,
                transitions=dict(self._transitions),
                last_error=self.last_error,
                last_frame_age_s=None if last is None else time.monotonic() - last,
                hwaccel_active=self._hw_active,
            )

    # ---------------------------------------------------------------- state machine
    def _set_state(self, new: CameraState, reason: str, expect: CameraState | None = None) -> bool:
        """Move to ``new`` (only from ``expect`` when given); log, count and notify once."""
        with self._lock:
            old = self._state
            if old == new or (expect is not None and old != expect):
                return False
            self._state = new
            self._transitions[f"{old.value}->{new.value}"] += 1
            if new == S.STALLED:
                self.stalls += 1
        reason = redact_text(reason, self._secrets)
        level = logging.WARNING if new in (S.BACKOFF, S.STALLED) else logging.INFO
        log.log(level, "camera %s (%s): %s -> %s: %s", self.camera_id, self.safe_url,
                old.value, new.value, reason)  # fmt: skip
        try:
            self.sink.on_state(self.camera_id, old, new, reason)
        except Exception:
            log.exception("camera %s: sink.on_state failed", self.camera_id)
        return True

    def _watch(self) -> None:
        """Watchdog: flag ``stalled`` while the reading thread may be blocked inside FFmpeg."""
        tick = min(0.2, self.config.stall_timeout_s / 5)
        while not self._stop.wait(tick):
            last = self._last_frame_mono
            if (
                self._state == S.STREAMING
                and not self._in_sink
                and last is not None
                and time.monotonic() - last > self.config.stall_timeout_s
            ):
                self._set_state(
                    S.STALLED,
                    f"no frame for {self.config.stall_timeout_s:g} s",
                    expect=S.STREAMING,
                )
            if not self.is_alive():
                return

    def _run(self) -> None:
        first = True
        try:
            while not self._stop.is_set():
                if not first:
                    self.reconnects += 1
                first = False
                self._set_state(S.CONNECTING, f"opening {self.safe_url}")
                outcome = self._connect_and_stream()
                if outcome is None or self._stop.is_set():
                    break
                self.last_error = outcome
                delay = self._backoff.next_delay()
                self._set_state(S.BACKOFF, f"{outcome}; retrying in {delay:.2f} s")
                if self._stop.wait(delay):
                    break
            self._set_state(S.STOPPED, self._stop_reason or "stopped")
        except Exception as e:  # a bug here must not take the process down silently
            log.exception("camera %s: decode thread failed", self.camera_id)
            self.last_error = redact_text(f"internal error: {type(e).__name__}: {e}", self._secrets)
            self._set_state(S.STOPPED, self.last_error)

    def _connect_and_stream(self) -> str | None:
        """One connection. Returns the reason it ended (→ backoff) or None (→ stopped)."""
        cfg = self.config
        if self._use_hwaccel and cfg.hwaccel and not self._hw_probed:
            self._hw_probed = True  # creating a device context is costly: once per camera
            problem = hwaccel_usable(cfg.hwaccel)
            if problem is not None:
                log.warning("camera %s: hwaccel %r unavailable (%s); decoding on the CPU",
                            self.camera_id, cfg.hwaccel, problem)  # fmt: skip
                self._use_hwaccel = False
        while True:  # more than once only to rewind a looped file that cannot seek
            try:
                container = open_input(cfg, hwaccel=self._use_hwaccel)
            except Exception as e:
                reason = describe_error(e, cfg, "connect")
                if not cfg.is_live and is_permanent_for_file(e):
                    self.last_error = reason
                    self._stop_reason = reason
                    return None
                return reason
            try:
                stream = configure_video_stream(container, cfg)
                self._hw_active = bool(self._use_hwaccel and stream.codec_context.is_hwaccel)
                return self._stream(container, stream)
            except _Rewind:
                continue
            except _Stop:
                return None
            except Exception as e:
                reason = describe_error(e, cfg, "read")
                if isinstance(e, _STALL_ERRORS):
                    # A read that timed out is a stall too (FFmpeg may notice before the watchdog).
                    self._set_state(S.STALLED, reason, expect=S.STREAMING)
                if not cfg.is_live:
                    self.corrupt_packets += 1
                    self.last_error = reason
                    self._stop_reason = f"file ended on an error: {reason}"
                    return None
                return reason
            finally:
                container.close()

    # ---------------------------------------------------------------- reading
    def _stream(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> str | None:
        cfg = self.config
        pacer = RatePacer(cfg.detect_fps)
        admit = getattr(self.sink, "admit", None)  # shedding at the source (DecodeFeeder)
        realtime = RealtimeClock(self._stop) if (not cfg.is_live and cfg.realtime) else None
        rtcp = RtcpClock(self.rtcp_max_skew_s, self.camera_id) if cfg.kind == "rtsp" else None
        opened_wall = time.time()
        opened_mono = time.monotonic()
        self._last_frame_mono = None
        streamed_since: float | None = None
        pass_start_s: float | None = None
        pass_end_s = 0.0
        while True:
            for packet in container.demux(stream):
                if self._stop.is_set():
                    raise _Stop
                now = time.monotonic()
                last: float | None = self._last_frame_mono
                if last is not None and now - last > cfg.stall_timeout_s:
                    raise StreamStalled(f"no frame for {cfg.stall_timeout_s:g} s")
                if last is None and now - opened_mono > cfg.first_frame_timeout_s:
                    raise StreamStalled(
                        f"no decodable frame within {cfg.first_frame_timeout_s:g} s of "
                        "connecting (no key frame, or a corrupt stream)"
                    )
                if packet.is_corrupt:
                    self.corrupt_packets += 1
                if rtcp is not None:
                    rtcp.observe_packet(packet)
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    self.corrupt_packets += 1
                    continue
                for frame in frames:
                    self.frames_decoded += 1
                    frame_id = self._next_frame_id
                    self._next_frame_id += 1
                    if frame.is_corrupt:
                        self.corrupt_frames += 1
                    pts_s = float(frame.time) if frame.time is not None else None
                    if pts_s is not None:
                        pass_start_s = pts_s if pass_start_s is None else pass_start_s
                        tb = frame.time_base
                        dur = float(frame.duration * tb) if frame.duration and tb else 0.0
                        pass_end_s = max(pass_end_s, pts_s + dur)
                    media_s = None if pts_s is None else self._media_offset_s + pts_s
                    if streamed_since is None:
                        streamed_since = time.monotonic()
                        self._set_state(S.STREAMING, f"first frame {frame.width}x{frame.height}")
                    if realtime is not None and media_s is not None:
                        self._in_sink = True
                        realtime.wait_until(media_s)
                        self._in_sink = False
                    stream_t = media_s if media_s is not None else now
                    if not pacer.should_forward(stream_t):
                        self.frames_skipped += 1
                        self._last_frame_mono = time.monotonic()
                        continue
                    if admit is not None and not admit(self.camera_id, stream_t):
                        # shed (counted by the sink): not converted, not sent
                        self._last_frame_mono = time.monotonic()
                        continue
                    if rtcp is not None:
                        ts, src = rtcp.capture_time(pts_s)
                    elif realtime is not None and media_s is not None:
                        ts, src = realtime.capture_time(media_s), "file"
                    elif not cfg.is_live and media_s is not None:
                        ts, src = opened_wall + media_s, "file"
                    else:
                        ts, src = time.time(), "wallclock"
                    self._deliver(frame, frame_id, ts, src, pts_s)
                if (
                    streamed_since is not None
                    and time.monotonic() - streamed_since > cfg.backoff_reset_s
                ):
                    self._backoff.reset()
            if self._stop.is_set():
                raise _Stop
            if cfg.is_live:
                return "stream ended (server closed the connection)"
            if not cfg.loop:
                self._stop_reason = "end of file"
                return None
            # Loop the file: rewind and keep the media timeline (and frame ids) continuous.
            self._media_offset_s += max(0.0, pass_end_s - (pass_start_s or 0.0))
            pass_start_s, pass_end_s = None, 0.0
            try:
                container.seek(0)
            except av.error.FFmpegError:  # raw elementary streams cannot seek: reopen
                raise _Rewind from None
            pacer.reset()

    def _deliver(
        self,
        frame: av.VideoFrame,
        frame_id: int,
        capture_ts: float,
        source: CaptureTsSource,
        pts_s: float | None,
    ) -> None:
        rgb = frame.to_ndarray(format="rgb24")
        out = DecodedFrame(
            camera_id=self.camera_id,
            frame_id=frame_id,
            capture_ts=capture_ts,
            capture_ts_source=source,
            pts=pts_s,
            width=frame.width,
            height=frame.height,
            rgb=rgb,
        )
        self._in_sink = True
        try:
            self.sink.on_frame(out)
            self.frames_forwarded += 1
        except Exception:
            self.sink_errors += 1
            if self.sink_errors == 1 or self.sink_errors % 1000 == 0:
                log.exception("camera %s: sink.on_frame failed (%d times)",
                              self.camera_id, self.sink_errors)  # fmt: skip
        finally:
            self._in_sink = False
            self._last_frame_mono = time.monotonic()
