"""The stage contract and the loop that runs one stage between its sockets.

A stage knows nothing of sockets::

    class Stage(Protocol):
        def setup(self) -> None: ...                           # open models, connections
        def process(self, msg) -> Iterable[Message]: ...       # one input -> zero or more outputs
        def close(self) -> Iterable[Message] | None: ...       # flush what it holds, release
        # optional: def tick(self, now: float) -> Iterable[Message]   (time-driven output,
        #           e.g. a batch deadline; now = time.monotonic()), called every
        #           poll_interval_ms (attribute, default 50) and once more before close()
        # optional: def next_deadline(self) -> float | None   (monotonic time the stage wants
        #           its next tick, e.g. a batch due; None: nothing pending)
        # optional: def set_waker(self, wake: Callable[[], None]) -> None   (called before
        #           setup; a thread of the stage calls wake() when it has output, so the
        #           runner stops waiting and ticks: thread-safe, never blocks)

A stage with ``next_deadline`` is ticked as soon as that time comes (the receive never blocks
past it) and not before: messages already waiting on the socket are all handed to
``process`` first, so a batch formed at its deadline holds the newest frames, not the ones that
happened to be first in the socket. After a tick that produced output, what arrived while it
ran is read first too, then the stage is ticked again (at once, if another batch is due).

`run_stage` owns the rest: it receives, calls the stage, routes each output to a `Sender`,
sends it blocking or not (per message: offline cameras block and lose nothing, live ones drop
and count), counts, and exits when ``stop`` is set: it reads what is still waiting on its
socket (the supervisor stops stages upstream first, so this is what upstream sent and counted;
at most ``drain_timeout_s / 2``), calls ``close()`` (and a last ``tick``) and sends what they
return, then returns. An exception in ``process()`` of one
message is logged with the message's identity, counted, and turned into a `DropMsg` tombstone
(reason ``error``) so downstream does not wait for that frame; it does not kill the stage —
unless it is a `FatalStageError`, or ``max_consecutive_errors`` messages in a row failed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pipeline.messages import DropMsg, EndMsg, Message, MessageError, kind_of, seq_of
from pipeline.shm import ShmError
from pipeline.transport import Receiver, Sender, StopFlag

log = logging.getLogger(__name__)


class FatalStageError(RuntimeError):
    """Raised by a stage when it cannot go on (the process exits; the supervisor restarts it)."""


@runtime_checkable
class Stage(Protocol):
    def setup(self) -> None: ...

    def process(self, msg: Message) -> Iterable[Message]: ...

    def close(self) -> Iterable[Message] | None: ...


@dataclass
class StageCounters:
    """What `run_stage` counts; read it from another thread for metrics (plain ints/Counters).

    received / sent: per camera. dropped: per (camera, reason) — ``queue_full`` when an output
    refused a message, plus the `DropMsg` tombstones this stage received or produced.
    errors: per camera, exceptions in ``process`` (camera ``""``: in ``tick``).
    malformed: undecodable input messages.
    """

    received: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    malformed: int = 0

    def snapshot(self) -> dict[str, Any]:
        """Plain-dict copies, safe to take from another thread while the stage runs."""
        return {
            "received": dict(self.received),
            "sent": dict(self.sent),
            "dropped": dict(self.dropped),
            "errors": dict(self.errors),
            "malformed": self.malformed,
        }


Route = Callable[[Message], "Sender | None"]
BlockPolicy = Callable[[Message], bool]


def run_stage(
    stage: Stage,
    receiver: Receiver | None,
    outputs: Sender | Sequence[Sender] | Route | None,
    stop: StopFlag,
    *,
    name: str = "",
    block: bool | BlockPolicy = False,
    counters: StageCounters | None = None,
    drain_timeout_s: float = 2.0,
    max_consecutive_errors: int = 100,
) -> StageCounters:
    """Runs ``stage`` until ``stop`` is set; returns its counters.

    outputs: one `Sender`; several (each output message goes to all of them); or a function
        choosing the `Sender` for a message (None: discard it). None: the stage is a sink.
    block: whether a send waits for room (True for offline edges), or a function of the
        message (e.g. per camera). `EndMsg` always blocks: losing it would hang offline runs.
    drain_timeout_s: on stop, how long blocking sends of the flushed messages may wait.
    """
    name = name or type(stage).__name__
    c = counters if counters is not None else StageCounters()
    route = _router(outputs)
    blocking = block if callable(block) else (lambda _m, b=bool(block): b)
    poll_ms = max(1, int(getattr(stage, "poll_interval_ms", 50)))
    tick = getattr(stage, "tick", None)
    deadline_of: Callable[[], float | None] | None = getattr(stage, "next_deadline", None)
    failures = 0
    # a stage whose own threads produce output (detect's model instances) wakes the runner
    waker = _Waker(stage) if receiver is not None and hasattr(stage, "set_waker") else None

    # A stage with next_deadline: after a message, read on without waiting until the socket
    # is empty (at most poll_ms at a stretch), then tick if its deadline has come.
    reading_since: float | None = None
    burst = 0  # messages read back to back since reading_since

    def due(now: float) -> bool:
        if reading_since is not None and now - reading_since < poll_ms / 1000:
            return False  # still reading what waits on the socket
        if now >= next_tick:
            return True
        if waker is not None and waker.pending.is_set():
            return True  # a thread of the stage has output
        d = deadline_of() if deadline_of is not None else None
        return d is not None and now >= d

    def recv_wait_ms(now: float) -> int:
        if reading_since is not None:
            # reading what waits. After a burst, ZeroMQ refills the socket's queue from the
            # sender's in the background (past the receive high-water mark), so "empty" is a
            # 1 ms wait then; a lone message (one camera) does not pay it
            return 1 if burst > 1 else 0
        wait = poll_ms if tick is not None else 100
        d = deadline_of() if deadline_of is not None else None
        if d is not None:
            wait = min(wait, max(0, math.ceil((d - now) * 1000)))
        return wait

    def emit(
        out: Iterable[Message] | None, draining: bool = False, forwarded: Message | None = None
    ) -> None:
        for m in out or ():
            senders = route(m)
            if isinstance(m, DropMsg) and m.stage == name and m is not forwarded:
                c.dropped[(m.camera_id, m.reason)] += 1  # a tombstone this stage made
            for s in senders:
                must = isinstance(m, EndMsg) or blocking(m)
                try:
                    if draining:
                        ok = s.send(m, block=must, timeout_s=drain_timeout_s, check_stop=False)
                    else:
                        ok = s.send(m, block=must)
                except (MessageError, ShmError) as e:  # this message only (a bad array, ...)
                    c.errors[m.camera_id] += 1
                    c.dropped[(m.camera_id, "send_error")] += 1
                    log.error("%s: cannot send %s camera=%s seq=%s to %s: %s",
                              name, kind_of(m), m.camera_id, seq_of(m), s.name, e)  # fmt: skip
                    continue
                if ok:
                    c.sent[m.camera_id] += 1
                else:  # downstream sees a seq gap (its reordering times out on it)
                    c.dropped[(m.camera_id, "queue_full")] += 1

    def handle(msg: Message) -> list[Message]:
        """Count ``msg``, hand it to the stage; a failure becomes a tombstone (or fatal)."""
        nonlocal failures
        c.received[msg.camera_id] += 1
        if isinstance(msg, DropMsg) and receiver is not None and msg.stage == receiver.name:
            c.dropped[(msg.camera_id, msg.reason)] += 1
        try:
            out = list(stage.process(msg))
        except FatalStageError:
            raise
        except Exception:
            failures += 1
            c.errors[msg.camera_id] += 1
            log.exception(
                "%s: process() failed on %s camera=%s seq=%s frame_id=%s",
                name, kind_of(msg), msg.camera_id, seq_of(msg),
                getattr(msg, "frame_id", None),
            )  # fmt: skip
            if failures >= max_consecutive_errors:
                raise FatalStageError(
                    f"{name}: {failures} messages in a row failed; giving up"
                ) from None
            if not isinstance(msg, DropMsg | EndMsg):
                return [DropMsg(msg.camera_id, msg.seq, name, "error", msg.frame_id)]
            return [msg]
        failures = 0
        return out

    stage.setup()
    try:
        next_tick = time.monotonic()
        while not stop.is_set():
            if tick is not None and due(time.monotonic()):
                if waker is not None:
                    waker.pending.clear()  # before the tick: a wake-up during it is kept
                try:
                    ticked = list(tick(time.monotonic()))
                except FatalStageError:
                    raise
                except Exception:
                    failures += 1
                    c.errors[""] += 1
                    log.exception("%s: tick() failed", name)
                    if failures >= max_consecutive_errors:
                        raise FatalStageError(f"{name}: {failures} failures in a row") from None
                    ticked = []
                emit(ticked)
                next_tick = time.monotonic() + poll_ms / 1000
                # a deadline stage reads what arrived meanwhile before its next batch (the
                # newest frames replace older ones), then ticks again at once if one is due
                reading_since = time.monotonic() if deadline_of is not None and ticked else None
                burst = 0
            if receiver is None:
                time.sleep(poll_ms / 1000)
                continue
            try:
                wait_ms = recv_wait_ms(time.monotonic())
                msg = receiver.recv(timeout_ms=wait_ms, wake_fd=None if waker is None else waker.fd)
            except MessageError as e:
                c.malformed += 1
                log.warning("%s: malformed message on %s dropped: %s", name, receiver.name, e)
                continue
            if msg is None:
                reading_since = None
                burst = 0
                continue
            if deadline_of is not None and reading_since is None:
                reading_since = time.monotonic()
            burst += 1
            emit(handle(msg), forwarded=msg)
        if receiver is not None:  # stopped: what upstream (stopped before us) sent still counts
            drain_until = time.monotonic() + drain_timeout_s / 2
            while time.monotonic() < drain_until:
                try:
                    msg = receiver.recv(timeout_ms=20)
                except MessageError as e:
                    c.malformed += 1
                    log.warning("%s: malformed message on %s dropped: %s", name, receiver.name, e)
                    continue
                if msg is None:
                    break
                emit(handle(msg), draining=True, forwarded=msg)
    finally:
        flushed: list[Message] = []
        try:
            if tick is not None:
                flushed.extend(tick(time.monotonic()) or ())
            flushed.extend(stage.close() or ())
        except Exception:
            log.exception("%s: close() failed", name)
        try:
            emit(flushed, draining=True)
        except Exception:
            log.exception("%s: could not send %d flushed message(s)", name, len(flushed))
        if waker is not None:
            waker.close()
    return c


class _Waker:
    """For a stage with ``set_waker``: a pair of connected local sockets, one end poked by the
    stage's threads (one byte; a full buffer is already a wake-up), the other's fd polled with
    the input socket (``fd``), and ``pending``: set by a wake-up, cleared by the tick it
    brings."""

    def __init__(self, stage: Any) -> None:
        self.stage = stage
        self.pending = threading.Event()
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self.fd = self._r.fileno()
        stage.set_waker(self.wake)

    def wake(self) -> None:
        self.pending.set()
        with contextlib.suppress(OSError):  # full: the runner is woken already
            self._w.send(b"\0")

    def close(self) -> None:
        self.stage.set_waker(lambda: None)  # its threads are done; nothing may write any more
        self._w.close()
        self._r.close()


def _router(outputs: Sender | Sequence[Sender] | Route | None) -> Callable[[Message], list[Sender]]:
    if outputs is None:
        return lambda _m: []
    if isinstance(outputs, Sender):
        one = [outputs]
        return lambda _m: one
    if callable(outputs):
        fn = outputs
        return lambda m: [s] if (s := fn(m)) is not None else []
    many = list(outputs)
    return lambda _m: many
