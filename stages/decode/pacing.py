"""Frame-rate control: ``detect_fps`` decimation and real-time pacing of file sources."""

from __future__ import annotations

import threading
import time


class RatePacer:
    """Decide which decoded frames to forward so that ``target_fps`` are spread evenly.

    Decisions use the frame's own timestamp (stream time: RTP or file pts), not its arrival
    time, so network jitter or a burst after a hiccup does not bunch the forwarded frames, and an
    offline file read at 10x speed is decimated by media time, as it would be live. A frame is
    forwarded when its time reaches the next due time; the due time then advances by one period
    (a 25 fps stream at 10 fps forwards frames 0, 3, 5, 8, 10, ... — never two in a row).
    A jump backwards or a gap of more than a second re-anchors the schedule (reconnect, loop).
    """

    EPS_S = 1e-3  # timestamps in 90 kHz or 1/fps units do not land exactly on the period

    def __init__(self, target_fps: float | None) -> None:
        self.period_s = 1.0 / target_fps if target_fps else 0.0
        self._due: float | None = None

    def reset(self) -> None:
        self._due = None

    def should_forward(self, t: float) -> bool:
        """True if the frame with stream time ``t`` (seconds) is to be forwarded."""
        if self.period_s <= 0:
            return True
        due = self._due
        if due is None or t < due - self.period_s - 1.0 or t > due + max(1.0, self.period_s):
            self._due = t + self.period_s
            return True
        if t + self.EPS_S >= due:
            self._due = due + self.period_s
            return True
        return False


class RealtimeClock:
    """Sleep so that frames leave at the pace of their timestamps (file sources, realtime mode).

    Anchored at the first frame after :meth:`reset`; ``stop`` (an Event) interrupts the wait so a
    camera stops promptly. If decoding falls behind, no sleep happens and the clock does not
    try to catch up by bursting beyond what the decoder gives.

    `capture_time` is when the simulated camera captured a frame: the wall time it is due on
    this paced timeline. (Open time + pts, used before, also counted the time to open the file
    and decode its first frame, ~5-20 ms depending on start-up load, into every frame's latency
    for as long as the camera ran.)
    """

    MAX_SLEEP_S = 3.0

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._anchor: tuple[float, float, float] | None = None  # (monotonic, media, unix time)

    def reset(self) -> None:
        self._anchor = None

    def wait_until(self, t: float) -> None:
        now = time.monotonic()
        if self._anchor is None:
            self._anchor = (now, t, time.time())
            return
        delay = self._anchor[0] + (t - self._anchor[1]) - now
        if delay > self.MAX_SLEEP_S:  # timestamp jump: re-anchor instead of sleeping for ages
            self._anchor = (now, t, time.time())
        elif delay > 0:
            self._stop.wait(delay)

    def capture_time(self, t: float) -> float:
        """Unix time at which the frame of media time ``t`` is due (after `wait_until`)."""
        if self._anchor is None:
            return time.time()
        return self._anchor[2] + (t - self._anchor[1])
