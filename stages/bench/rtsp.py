"""``--source rtsp`` / ``rtsp:FILE``: the bench's cameras over RTSP from a local GStreamer server.

The server is the project's RTSP test server (``tests/decode/rtsp_server.py`` in a checkout; it
runs under Debian's ``/usr/bin/python3``, which has ``python3-gi`` and GStreamer's RTSP server:
see its docstring). Each camera gets its own mount, ``/cam1``, ``/cam2``, ..., serving one of the
video files looped without re-encoding (``clip:``), so every camera is its own RTSP session
with its own RTCP sender reports, as real cameras are. Without a checkout or without GStreamer,
``--source rtsp`` is refused with the reason before anything starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "decode" / "rtsp_server.py"


class RtspServer:
    """The server process, one ``clip:`` mount per camera; `close` stops it (its group)."""

    def __init__(self, videos: Sequence[str], cameras: int, timeout_s: float = 120.0) -> None:
        if not SERVER_SCRIPT.is_file():
            raise ValueError(
                f"--source rtsp needs the RTSP test server {SERVER_SCRIPT} (in a checkout)"
            )
        if not Path(SYSTEM_PYTHON).exists():
            raise ValueError(f"--source rtsp needs {SYSTEM_PYTHON} with GStreamer's RTSP server")
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", "0"]
        for i in range(cameras):
            cmd += ["--mount", f"/cam{i + 1}=clip:{videos[i % len(videos)]}"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        line: list[str] = []
        reader = threading.Thread(
            target=lambda: line.append(self.proc.stdout.readline() if self.proc.stdout else ""),
            daemon=True,
        )
        reader.start()
        reader.join(timeout_s)
        first = line[0].strip() if line else ""
        if not first.startswith("READY "):
            err = self.close()
            raise ValueError(
                f"--source rtsp: the RTSP server did not start ({first or 'no answer'}): "
                f"{err.strip().splitlines()[-1] if err.strip() else 'no error output'} "
                "(Debian: apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-rtsp gstreamer1.0-plugins-{base,good,bad,ugly})"
            )
        self.port = int(first.split()[1])

    @property
    def url_template(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam{{index}}"

    def close(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL after 5 s); what it wrote on stderr."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5.0
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = ""
        return err or ""
