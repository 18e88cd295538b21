"""Live camera changes in the decode process: the camera list the feeder runs, changed in place.

The supervisor puts each new camera list on this process's control queue
(`pipeline.cameras_api`); `CameraControl.poll` (called from the decode process's main loop)
takes the newest and makes the feeder run exactly that list, touching only the cameras that
differ — the other cameras' threads, the sender and the sockets go on as they were:

* an added camera: a new `CameraSource` on the feeder, started at once;
* a removed camera: its source is stopped; its state goes to ``stopped``, so the feeder sends
  its end marker after its last frame (downstream: the track stage drops its tracker there);
* a changed camera (URL, detect_fps, timeouts...): stopped like a removed one, then, once its
  end marker went out (so its tracker is dropped before the new frames), a new source with the
  new settings whose frame ids continue where the old one's ended (one camera, one frame-id
  sequence in its stream).

Stopping waits for the source's thread (bounded by its read and open timeouts); every camera
that must stop is asked at once, so several changes cost one wait, not one each.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.control import read_control
from pipeline.redact import redact_url
from stages.decode.config import CameraConfig
from stages.decode.source import CameraSource

log = logging.getLogger("edgestream.decode")

END_WAIT_S = 2.0  # bound on waiting for a reopened camera's old end marker to be sent


class CameraControl:
    """Applies the camera lists on ``queue`` to ``feeder`` (a `DecodeFeeder`).

    cameras_of: turns what the queue carries (a pipeline config) into ``(id, CameraConfig)``
        pairs. on_applied: called after each change (the stats report it at once).
    """

    def __init__(
        self,
        feeder: Any,
        queue: Any,
        cameras_of: Callable[[Any], Sequence[tuple[str, CameraConfig]]],
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self.feeder = feeder
        self.queue = queue
        self.cameras_of = cameras_of
        self.on_applied = on_applied
        self.generation = -1

    def poll(self) -> bool:
        """Apply the newest waiting change, if any; True when one was applied."""
        got = read_control(self.queue)
        if got is None:
            return False
        gen, cfg = got
        if cfg is not None:
            try:
                self.apply(self.cameras_of(cfg))
            except Exception:  # one bad change must not take the other cameras down
                log.exception("decode: applying camera change %d failed", gen)
        self.generation = gen
        if self.on_applied is not None:
            self.on_applied()
        return True

    def apply(self, cameras: Sequence[tuple[str, CameraConfig]]) -> dict[str, list[str]]:
        """Make the feeder run ``cameras``; returns the ids added, removed and changed."""
        feeder = self.feeder
        wanted = dict(cameras)
        running: dict[str, CameraSource] = {s.camera_id: s for s in feeder.sources}
        removed = [c for c in running if c not in wanted]
        changed = [c for c in running if c in wanted and running[c].config != wanted[c]]
        added = [c for c in wanted if c not in running]
        stopping = [running[c] for c in removed + changed]
        for src in stopping:  # ask every one first: the waits overlap
            src.stop(timeout_s=0)
        for src in stopping:
            if not src.stop():
                log.warning("camera %s: its decode thread did not stop in time", src.camera_id)
            feeder.sources.remove(src)
            if src.camera_id in removed:
                log.info("camera %s (%s): removed", src.camera_id, src.safe_url)
        deadline = time.monotonic() + END_WAIT_S
        for cid in changed:  # its old end goes out first: no new frame ahead of it
            while feeder.end_pending(cid) and time.monotonic() < deadline:
                time.sleep(0.01)
        for cid in changed + added:
            old = running.get(cid)
            feeder.configs[cid] = wanted[cid]
            src = CameraSource(
                cid, wanted[cid], feeder, first_frame_id=0 if old is None else old.next_frame_id
            )
            feeder.sources.append(src)
            src.start()
            verb = "added" if old is None else "reopened with its new settings"
            log.info("camera %s (%s): %s", cid, redact_url(wanted[cid].url), verb)
        return {"added": added, "removed": removed, "changed": changed}

    def report(self) -> dict[str, Any]:
        """For the stats snapshot: the generation applied and each camera's state."""
        cams: dict[str, dict[str, Any]] = {}
        for src in list(self.feeder.sources):
            st = src.stats()
            cams[src.camera_id] = {
                "state": st.state.value,
                "last_error": st.last_error,
                "reconnects": st.reconnects,
                "frames_decoded": st.frames_decoded,
            }
        return {"control_generation": self.generation, "decode_cameras": cams}
