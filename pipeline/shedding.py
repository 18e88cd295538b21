"""Shedding at the source: a live camera whose frames detect keeps dropping as superseded gets
fewer of them forwarded by decode, so no CPU goes into converting, copying and letterboxing
frames that would be dropped anyway (on a CPU box past capacity that work takes the cores the
model needs).

The supervisor runs `ShedController` on its stats about once a second. Per live camera over
the last window: ``sent`` (frames decode forwarded), ``superseded`` (of those, dropped by
detect for a newer one) and ``shed`` (frames decode did not forward because of a cap). When
more than 20 % of what was sent was superseded, the camera's cap becomes 1.2 x the rate detect
actually took (sent - superseded); a capped camera whose superseded share falls under 5 % gets
25 % (at least 1 frame/s) more each window, and loses its cap once the cap no longer sheds
anything. A window lasts until the camera sent 5 frames (at most 10 s), so a low cap is judged
too, and grows back when detect has room. The caps go to
the decode processes as a small JSON file in the run folder (`write_caps`, `CapsReader`);
decode forwards a capped camera's frames at that rate, evenly by stream time, and counts the
rest as dropped with reason ``shed`` (`stages.decode.feeder.DecodeFeeder.admit`): every loss
is still counted, and what detect takes stays the newest frame.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("edgestream.shedding")

CAPS_FILE = "shed-caps.json"
RAISE_ABOVE = 0.20  # superseded share of sent that caps a camera
GROW_BELOW = 0.05  # superseded share under which a cap grows
MARGIN = 1.2  # cap = MARGIN x the rate detect took
GROW = 1.25
MIN_FPS = 0.5
MIN_FRAMES = 5  # a camera is judged once it sent this many frames ...
MAX_WINDOW_S = 10.0  # ... or this long passed (a low cap sends few frames per second)
GROW_STEP_FPS = 1.0  # a cap grows by at least this much (from a low cap, 25 % is slow)


class ShedController:
    """Per-camera forward caps from the cameras' counters (see the module docstring)."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self.caps: dict[str, float] = {}
        self._last: dict[str, tuple[float, int, int, int]] = {}

    def update(self, cameras: Mapping[str, Mapping[str, Any]], now: float,
               live: frozenset[str] | None = None) -> bool:  # fmt: skip
        """Feed the cumulative per-camera counters (`pipeline.stats.StatsBoard.cameras`:
        ``sent`` and ``dropped`` by ``stage/reason``) at time ``now``; ``live``: the cameras
        that may be capped (None: all). True when the caps changed."""
        changed = False
        gone = [c for c in self.caps if c not in cameras or (live is not None and c not in live)]
        for cam in gone:
            del self.caps[cam]
            changed = True
        for cam in [c for c in self._last if c not in cameras]:  # removed for good: forget it
            del self._last[cam]
        for cam, c in cameras.items():
            if live is not None and cam not in live:
                continue
            dropped = c.get("dropped") or {}
            cur = (
                int(c.get("sent", 0)),
                int(dropped.get("detect/superseded", 0)),
                int(dropped.get("decode/shed", 0)),
            )
            last = self._last.get(cam)
            if last is None or now < last[0]:
                self._last[cam] = (now, *cur)
                continue
            dt = now - last[0]
            if dt < self.window_s:  # judge over a whole window
                continue
            _, sent0, superseded0, shed0 = last
            sent = max(0, cur[0] - sent0)
            superseded = max(0, cur[1] - superseded0)
            shed = max(0, cur[2] - shed0)
            if sent + shed > 0 and sent < MIN_FRAMES and dt < MAX_WINDOW_S:
                # too few frames to judge (a cap of 1 frame/s sends 1 a window): widen the
                # window instead of skipping it — skipping left a low cap stuck for good
                continue
            self._last[cam] = (now, *cur)
            changed |= self._judge(cam, sent, superseded, shed, dt)
        return changed

    def _judge(self, cam: str, sent: int, superseded: int, shed: int, dt: float) -> bool:
        cap = self.caps.get(cam)
        if sent < MIN_FRAMES:
            if cap is not None and shed == 0:  # nothing offered, nothing shed: no cap needed
                del self.caps[cam]
                return True
            return False
        if superseded > RAISE_ABOVE * sent:
            new = max(MIN_FPS, MARGIN * (sent - superseded) / dt)
            if cap is None:
                log.info("camera %s: detect takes %.1f of %.1f frames/s; decode forwards at most "
                         "%.1f/s (the rest counted as decode/shed)", cam,
                         (sent - superseded) / dt, sent / dt, new)  # fmt: skip
            self.caps[cam] = round(new, 2)
            return cap != self.caps[cam]
        if cap is not None and superseded < GROW_BELOW * sent:
            if shed == 0:
                del self.caps[cam]
                log.info("camera %s: no longer shed at decode", cam)
            else:
                self.caps[cam] = round(max(cap * GROW, cap + GROW_STEP_FPS), 2)
            return True
        return False


def write_caps(run_dir: Path, caps: Mapping[str, float]) -> None:
    """Replace the caps file in ``run_dir`` at once (readers never see half a file)."""
    path = Path(run_dir) / CAPS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(caps), sort_keys=True))
    os.replace(tmp, path)


class CapsReader:
    """The decode side: `poll` returns the caps when the file changed since the last call
    (an unreadable file keeps the old ones), else None."""

    def __init__(self, run_dir: str | Path | None) -> None:
        self.path = Path(run_dir) / CAPS_FILE if run_dir else None
        self._stamp: tuple[int, int] | None = None  # (inode, mtime): each write is a new file

    def poll(self) -> dict[str, float] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None:  # removed: no caps
                self._stamp = None
                return {}
            return None
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp == self._stamp:
            return None
        try:
            caps = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        self._stamp = stamp
        return {str(k): float(v) for k, v in caps.items()}
