"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), plain Python: datagrams of
``KEY=VALUE`` lines to the unix socket in ``$NOTIFY_SOCKET``. No dependency, and nothing at all
happens when the variable is unset (not under systemd).

`SystemdNotifier` is a supervisor ``on_poll`` callback (`pipeline.supervisor.Supervisor`):

* ``READY=1`` once, when ``supervisor.readiness()`` is empty: what ``/readyz`` answers 200 on
  (every stage up, the model loaded, the Redis sink connected). ``systemctl start`` returns
  then, and units ordered ``After=edgestream.service`` start after a ready pipeline.
* ``WATCHDOG=1`` every ``WatchdogSec/2`` while every stage process is alive
  (``supervisor.liveness()``, the ``/healthz`` answer), ready or not yet. A supervisor whose
  loop is stuck stops calling it, and one whose stages keep dying stops feeding it; either
  way systemd kills and restarts the service after ``WatchdogSec``. Withholding is logged once
  per episode and said in ``STATUS=``, so ``systemctl status`` shows why.
* ``STATUS=`` a one-line state ("ready", "starting: model not loaded", "unhealthy: detect
  exited with -9, restarting").
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("edgestream.sdnotify")


def notify(message: str, socket_path: str) -> bool:
    """Send one notification datagram; False (never an exception) when it cannot be sent."""
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        return True
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", socket_path, exc)
        return False


def watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """The watchdog period systemd asked for (``WATCHDOG_USEC``), or None: no watchdog, or one
    meant for another process (``WATCHDOG_PID``)."""
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6


class SystemdNotifier:
    """Feeds systemd from the supervisor's poll loop (see the module docstring).

    socket_path: ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace).
    watchdog_s: ``WatchdogSec`` (None: no watchdog); pings go every half of it.
    clock: a monotonic clock (tests).
    """

    def __init__(
        self,
        socket_path: str,
        watchdog_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket_path = socket_path
        self.watchdog_s = watchdog_s
        self.clock = clock
        self.ready_sent = False
        self.withholding = False
        self._last_ping: float | None = None
        self._last_status = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier | None:
        """A notifier when running under systemd with ``Type=notify``, else None."""
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "").strip()
        if not path:
            return None
        return cls(path, watchdog_interval_s(env))

    def send(self, *fields: str) -> bool:
        return notify("\n".join(fields), self.socket_path)

    def __call__(self, supervisor: Any) -> None:
        live: dict[str, Any] = dict(supervisor.liveness())
        down = {k: v for k, v in live.items() if v is not True}
        reasons = [] if down else list(supervisor.readiness())
        fields: list[str] = []
        if down:
            status = "unhealthy: " + ", ".join(
                f"{k} {v if isinstance(v, str) else 'not running'}" for k, v in sorted(down.items())
            )
        elif reasons:
            status = "starting: " + ", ".join(reasons)
        else:
            status = "ready"
        if not down and not reasons and not self.ready_sent:
            fields.append("READY=1")
            self.ready_sent = True
            log.info("systemd: READY=1")
        now = self.clock()
        if self.watchdog_s is not None:
            due = self._last_ping is None or now - self._last_ping >= self.watchdog_s / 2
            if down:
                if not self.withholding:
                    log.warning("systemd watchdog not fed while %s (restart after %.0f s)",
                                status, self.watchdog_s)  # fmt: skip
                self.withholding = True
            elif due:
                fields.append("WATCHDOG=1")
                self._last_ping = now
                self.withholding = False
        if status != self._last_status:
            fields.append(f"STATUS={status}")
            self._last_status = status
        if fields:
            self.send(*fields)
