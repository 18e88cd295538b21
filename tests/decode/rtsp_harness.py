"""Start, kill, freeze and restart the GStreamer RTSP test server (``rtsp_server.py``).

Used by the decode tests (through fixtures in ``conftest.py``) and by ``tests/bench/soak_rtsp.py``.
The server runs under Debian's ``/usr/bin/python3`` in its own session (process group), so
killing the group also kills anything GStreamer spawned (``gst-plugin-scanner``), and
:meth:`RtspServer.close` checks that nothing of the group is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def gstreamer_missing() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "missing = [e for e in ('x264enc', 'rtph264pay', 'h264parse', 'videotestsrc',"
        " 'clockoverlay', 'multifilesrc', 'qtdemux') if Gst.ElementFactory.find(e) is None];"
        "print(' '.join(missing))"
    )
    try:
        out = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run {SYSTEM_PYTHON}: {e}"
    if out.returncode != 0:
        return (
            "GStreamer RTSP server not installed (apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
            "gstreamer1.0-plugins-{base,good,bad,ugly} gstreamer1.0-x): "
            + out.stderr.strip().splitlines()[-1]
        )
    if out.stdout.strip():
        return f"GStreamer elements missing: {out.stdout.strip()}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RtspServer:
    """One ``rtsp_server.py`` process; the port stays the same across :meth:`restart`."""

    def __init__(
        self,
        mounts: Sequence[str] = ("/live=live:320x240@25",),
        auth: str | None = None,
        port: int | None = None,
    ) -> None:
        self.mounts = list(mounts)
        self.auth = auth
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def url(self, mount: str = "/live", credentials: str | None = None) -> str:
        userinfo = f"{credentials}@" if credentials else ""
        return f"rtsp://{userinfo}127.0.0.1:{self.port}{mount}"

    def start(self, timeout_s: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        for m in self.mounts:
            cmd += ["--mount", m]
        if self.auth:
            cmd += ["--auth", self.auth]
        deadline = time.monotonic() + timeout_s
        while True:  # the port may still be held by the previous instance for a moment
            self.proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            line = self._readline(self.proc, deadline)
            if line.startswith("READY"):
                return
            err = self._reap()
            if time.monotonic() > deadline or "port in use" not in err:
                raise RuntimeError(f"RTSP server did not start: {line!r} {err[-2000:]}")
            time.sleep(0.2)

    @staticmethod
    def _readline(proc: subprocess.Popen[str], deadline: float) -> str:
        out: list[str] = []
        assert proc.stdout is not None
        t = threading.Thread(target=lambda: out.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        t.start()
        t.join(max(0.1, deadline - time.monotonic()))
        return out[0].strip() if out else ""

    def _reap(self) -> str:
        """Kill the whole process group, wait, and return what it wrote on stderr."""
        proc = self.proc
        if proc is None:
            return ""
        try:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            err = ""
        self.proc = None
        return err or ""

    def died(self) -> str | None:
        """If the server exited by itself: its exit status and stderr (it is then reaped)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        code = self.proc.returncode
        return f"exit status {code}: {self._reap()[-3000:]}"

    def kill(self) -> None:
        """SIGKILL the server (and its group): clients see their connection closed."""
        self._reap()

    def restart(self) -> None:
        self.kill()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the sockets stay open and nothing more is sent (a hung camera)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        """Kill the server; raise if any process of its group survived."""
        pid = self.proc.pid if self.proc is not None else None
        self._reap()
        if pid is not None:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            raise AssertionError(f"RTSP server process group {pid} left processes behind")

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def blackhole_listener() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections and never answers (the kernel completes the
    handshake from the listen backlog; nothing ever reads or writes)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, int(s.getsockname()[1])


def make_clip(
    path: Path,
    codec: str = "libx264",
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    frames: int = 100,
    gop: int | None = None,
    fmt: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Write a moving test pattern with PyAV (libx264 / libx265 / mjpeg), deterministic."""
    import av

    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    opts = {"g": str(gop or fps)}
    if codec == "libx264":
        opts.update(preset="ultrafast", tune="zerolatency")
    if codec == "libx265":
        opts.update(preset="ultrafast", **{"x265-params": "log-level=error"})
    opts.update(options or {})
    stream.options = opts  # type: ignore[assignment]
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(frames):
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = (xx + 4 * i) % 256
        img[..., 1] = (yy + 2 * i) % 256
        img[..., 2] = (xx // 8 + yy // 8 + i) % 256
        x0 = (i * 7) % max(1, width - 40)
        img[40:80, x0 : x0 + 40] = 255
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def ffmpeg_binary() -> str | None:
    return shutil.which("ffmpeg")
