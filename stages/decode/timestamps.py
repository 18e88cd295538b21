"""Capture timestamps: the camera's RTCP/NTP clock when the stream gives it, else ours.

What PyAV 18 (FFmpeg 8) exposes for RTSP, checked against GStreamer's RTSP server:

- every RTP packet received after the first RTCP sender report carries ``prft`` side data
  (``AVProducerReferenceTime``: int64 wall clock in µs since the Unix epoch, then int32
  flags), the sender's NTP time mapped to *that packet's* RTP timestamp using the latest
  report; ``container.start_time_realtime`` (µs) is the same mapping for pts 0, from the
  first report only. The sender's first report comes a few seconds after PLAY (GStreamer:
  within ~2-5 s), so the first frames of every connection carry receive wall-clock time.
- So: the most recent ``prft`` (once two in a row agree) anchors ``(wall clock, pts)``, and
  a frame's capture time is the anchor plus its pts offset (which also keeps B-frame
  reordering right). Without a trusted ``prft`` yet, the frame gets the host's wall clock
  when it leaves the decoder. ``start_time_realtime`` is not used: it is anchored on the
  first report only, and it (like the first ``prft`` of a connection) was one frame period
  (40 ms at 25 fps) off the later ``prft`` values in our measurements, which matched the
  server's capture clock (receive - capture = 41-49 ms for a live source that emits each
  frame one period after its timestamp).
- Consequence: ``capture_ts`` can step back by up to the network+decode latency at the moment a
  connection switches from wall clock to RTCP. Order frames by ``frame_id``, not ``capture_ts``.

A camera whose clock is wrong (no NTP, wrong zone) would poison end-to-end latency figures: a
sender time further than ``max_skew_s`` from the host's clock is ignored (logged once per
connection) and the wall clock is used instead.
"""

from __future__ import annotations

import logging
import struct
import time

import av

from stages.decode.types import CaptureTsSource

log = logging.getLogger(__name__)


class RtcpClock:
    """Maps RTSP frames to sender (NTP) time; one per connection."""

    AGREE_S = 0.005

    def __init__(self, max_skew_s: float = 30.0, name: str = "") -> None:
        self.max_skew_s = max_skew_s
        self.name = name
        self._anchor: tuple[float, float] | None = None  # (unix seconds, pts seconds)
        self._candidate: tuple[float, float] | None = None
        self._skew_logged = False

    def observe_packet(self, packet: av.Packet) -> None:
        """Take the sender-time anchor from a packet's ``prft`` side data, if it has one.

        An anchor is trusted only when it agrees (within ``AGREE_S``) with the previous
        packet's: the first ``prft`` of a connection was one frame period off in our
        measurements, every later one consistent.
        """
        if packet.pts is None or packet.time_base is None or not packet.has_sidedata("prft"):
            return
        side = packet.get_sidedata("prft")
        if side.data_size < 8:
            return
        (wall_us,) = struct.unpack_from("<q", bytes(side))
        cand = (wall_us / 1e6, float(packet.pts * packet.time_base))
        prev = self._candidate
        self._candidate = cand
        if prev is not None and abs((cand[0] - prev[0]) - (cand[1] - prev[1])) < self.AGREE_S:
            self._anchor = cand

    def capture_time(self, pts_s: float | None) -> tuple[float, CaptureTsSource]:
        """(capture time in unix seconds, its source) for a frame with pts ``pts_s``."""
        now = time.time()
        if pts_s is None:
            return now, "wallclock"
        anchor = self._anchor
        if anchor is None:
            return now, "wallclock"
        ts = anchor[0] + (pts_s - anchor[1])
        if abs(ts - now) > self.max_skew_s:
            if not self._skew_logged:
                self._skew_logged = True
                log.warning(
                    "camera %s: sender (RTCP) clock is %.1f s off this host's clock; "
                    "using receive wall-clock time",
                    self.name,
                    ts - now,
                )
            return now, "wallclock"
        return ts, "rtcp"
