"""JSON-lines file sink for offline runs: the same documents as Redis, one per line.

Detections and track events share a file (their ``type`` field tells them apart), in the order
the sink received them, so ``jq 'select(.type == "detections")'`` or pandas'
``read_json(lines=True)`` read them directly. Offline runs must lose nothing, so writes are
plain blocking file writes: a full disk raises (OSError) rather than dropping lines.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import IO

from pipeline.payloads import DETECTIONS_TYPE, FrameResult
from stages.sinks.codec import encode_frame
from stages.sinks.config import JsonlSinkConfig


class JsonlSink:
    """``setup() / process(frame) / close()`` writing `FrameResult`s as JSON lines."""

    def __init__(self, config: JsonlSinkConfig) -> None:
        self.config = config
        self._files: dict[Path, IO[bytes]] = {}
        self.written = 0
        self.events_written = 0

    def setup(self) -> None:
        """Checks that the output folder can be created (fails early, not on frame 1)."""
        Path(self.config.path).parent.mkdir(parents=True, exist_ok=True)

    def process(self, frame: FrameResult) -> None:
        f = self._file(frame.camera)
        publish_ts = time.time()
        for pending in encode_frame(frame):
            is_det = pending.kind == DETECTIONS_TYPE
            if not is_det and not self.config.events:
                continue
            f.write(pending.finalize(publish_ts) + b"\n")
            if is_det:
                self.written += 1
            else:
                self.events_written += 1
        if self.config.flush_each_line:
            f.flush()

    def close(self) -> None:
        files, self._files = self._files, {}
        for f in files.values():
            f.flush()
            if self.config.fsync_on_close:
                os.fsync(f.fileno())
            f.close()

    def stats(self) -> dict[str, int]:
        return {"published": self.written, "events_published": self.events_written}

    def _file(self, camera: str) -> IO[bytes]:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", camera).lstrip(".") or "_"
        path = Path(str(self.config.path).replace("{camera}", safe))
        f = self._files.get(path)
        if f is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "ab" if self.config.append else "wb")  # noqa: SIM115 - kept open
            self._files[path] = f
        return f
