"""ZeroMQ edges between stage processes: endpoints, one context per process, PUSH/PULL sockets.

Endpoints say whether this socket binds or connects::

    "bind:ipc:///run/edgestream/items.sock"   "connect:tcp://10.0.0.2:5555"   "tcp://*:5555"

A bare ``ipc://``/``tcp://`` endpoint takes the ``default_mode`` of the caller: `Sender`
connects and `Receiver` binds unless told otherwise — the single consumer of a fan-in edge
(preprocess workers → detect) binds and its producers connect. For a fan-out edge (decode →
preprocess workers) write ``bind:`` on the sender. For the other side of an edge in the same
config, `Endpoint.peer` gives the opposite mode on the same address (``*`` becomes
``127.0.0.1``).

Queues: an edge's ``capacity`` (messages) is split between the sender's SNDHWM and the receiver's
RCVHWM (half each, at least 1), so about ``capacity`` messages wait per connection. Kernel socket
buffers hold more on top (small messages: many); ``kernel_buffer_bytes`` bounds them for
descriptor edges where freshness matters. Every socket gets ``linger=0`` (closing never waits
for unsent messages) and PUSH sockets ``IMMEDIATE`` (no queueing to peers not connected yet).

Pixels: a `Sender` with a `pipeline.shm.ShmPool` (same-host ipc edges) moves the pixel arrays of
non-blocking (realtime) sends into a shared-memory ring and sends the small `ShmRef` instead;
without a pool (tcp edges), and for blocking (offline) sends, the pixels go inline as extra
frames without a copy (``copy=False``; parts under 64 KiB are copied by pyzmq, which is cheaper
for them). Offline sends go inline because a ring overwrites slots the consumer has not read yet
and nothing bounds the descriptors in flight tightly enough to prevent it; inline, ZeroMQ's flow
control makes "block and lose nothing" hold. A `ShmRef` given to a blocking send, or to an
``inline`` sender (default for tcp), is resolved to inline pixels; on a non-blocking ipc send it
passes as it is (a stage that wrote into its own slab).

Offline edges can keep pixels in shared memory too (``Sender(offline_wait_s=...)``): the
producer then waits for the consumer to release a slot before reusing it (see `pipeline.shm`),
which bounds it to ``slots`` frames ahead and loses nothing.

Receiving: `Receiver.recv` returns the decoded message; its ``pixels`` option says what a
consumer gets for a `ShmRef`: ``"copy"`` an ndarray copied out of the ring (an overwritten slot
becomes a `DropMsg` with reason ``shm_overwritten``), ``"ref"`` the descriptor itself (the stage
reads it with a `pipeline.shm.ShmReader`, e.g. straight into a pinned batch).

Authentication: a tcp `Sender`/`Receiver` given ``curve`` keys (`pipeline.curve.CurveKeys`)
is a CURVE server when it binds and a CURVE client when it connects (see `pipeline.curve`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, cast

import numpy as np
import zmq

from pipeline.curve import CurveKeys, stop_authenticator
from pipeline.messages import DropMsg, FrameMsg, ItemMsg, Message, MessageError, ShmRef, decode
from pipeline.messages import encode as encode_msg
from pipeline.shm import ShmPool, ShmReader

log = logging.getLogger(__name__)

Mode = Literal["bind", "connect"]
IPC_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


class StopFlag(Protocol):
    """Anything with ``is_set()``: a threading.Event or a multiprocessing Event."""

    def is_set(self) -> bool: ...


class EndpointError(ValueError):
    pass


@dataclass(frozen=True)
class Endpoint:
    mode: Mode
    url: str

    @classmethod
    def parse(cls, text: str, default_mode: Mode) -> Endpoint:
        """Parses ``[bind:|connect:]ipc://PATH`` or ``[bind:|connect:]tcp://HOST:PORT``."""
        mode: Mode = default_mode
        url = text.strip()
        for m in ("bind", "connect"):
            if url.startswith(m + ":") and not url.startswith(m + "://"):
                mode, url = m, url[len(m) + 1 :]
                break
        if url.startswith("ipc://"):
            path = url[len("ipc://") :]
            if not path:
                raise EndpointError(f"{text!r}: ipc endpoint needs a path (ipc:///run/x.sock)")
            if len(path.encode()) > IPC_PATH_MAX:
                raise EndpointError(
                    f"{text!r}: ipc path is {len(path.encode())} bytes, the OS limit is "
                    f"{IPC_PATH_MAX}; use a shorter directory"
                )
        elif url.startswith("tcp://"):
            host, sep, port = url[len("tcp://") :].rpartition(":")
            if not sep or not host or not (port.isdigit() or (port == "*" and mode == "bind")):
                raise EndpointError(f"{text!r}: tcp endpoint must be tcp://HOST:PORT")
            if mode == "connect" and host in ("*",):
                raise EndpointError(f"{text!r}: cannot connect to '*'; name the host")
        else:
            raise EndpointError(
                f"{text!r}: endpoint must be [bind:|connect:]ipc://PATH or "
                "[bind:|connect:]tcp://HOST:PORT"
            )
        return cls(mode, url)

    @property
    def is_ipc(self) -> bool:
        return self.url.startswith("ipc://")

    def peer(self) -> Endpoint:
        """The other side of this edge on the same host: opposite mode, same address."""
        url = self.url
        if self.mode == "bind" and url.startswith("tcp://"):
            host, _, port = url[len("tcp://") :].rpartition(":")
            if host in ("*", "0.0.0.0"):
                url = f"tcp://127.0.0.1:{port}"
            elif host in ("[::]", "::"):
                url = f"tcp://[::1]:{port}"
        return Endpoint("connect" if self.mode == "bind" else "bind", url)

    def __str__(self) -> str:
        return f"{self.mode}:{self.url}"


# ------------------------------------------------------------------------------ context


_open_sockets: weakref.WeakSet[zmq.Socket[Any]] = weakref.WeakSet()
_ctx_lock = threading.Lock()
_ctx: zmq.Context[Any] | None = None
_ctx_pid = 0


def context() -> zmq.Context[Any]:
    """This process's ZeroMQ context (created on first use; a new one after fork)."""
    global _ctx, _ctx_pid
    with _ctx_lock:
        if _ctx is None or _ctx.closed or _ctx_pid != os.getpid():
            _ctx = zmq.Context()
            _ctx_pid = os.getpid()
        return _ctx


def shutdown() -> None:
    """Closes every socket of this process's context (linger 0) and terminates it; never
    blocks. Call it last in a stage process; a later `context()` makes a new one."""
    global _ctx
    for s in list(_open_sockets):
        with contextlib.suppress(Exception):
            s.close(linger=0)
    stop_authenticator()  # its thread holds a socket on the context
    with _ctx_lock:
        if _ctx is not None and _ctx_pid == os.getpid() and not _ctx.closed:
            _ctx.destroy(linger=0)  # also closes sockets opened on it directly
        _ctx = None


def open_sockets() -> list[zmq.Socket[Any]]:
    """Sockets opened by this module and not closed yet (tests use it to catch leaks)."""
    return [s for s in _open_sockets if not s.closed]


def _socket(
    kind: int,
    ep: Endpoint,
    hwm: int,
    kernel_buffer_bytes: int | None,
    max_part_bytes: int = -1,
    curve: CurveKeys | None = None,
    name: str = "",
) -> zmq.Socket[Any]:
    if curve is not None and ep.is_ipc:
        raise EndpointError(f"{ep}: CURVE keys are for tcp edges, not ipc")
    sock = context().socket(kind)
    try:
        if curve is not None:
            curve.apply(sock, ep.mode, name or ep.url)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_part_bytes)
        if kind == zmq.PUSH:
            sock.setsockopt(zmq.SNDHWM, hwm)
            sock.setsockopt(zmq.IMMEDIATE, 1)
        else:
            sock.setsockopt(zmq.RCVHWM, hwm)
        if kernel_buffer_bytes is not None:
            sock.setsockopt(zmq.SNDBUF, kernel_buffer_bytes)
            sock.setsockopt(zmq.RCVBUF, kernel_buffer_bytes)
        if ep.mode == "bind":
            if ep.is_ipc:
                _remove_stale_ipc(ep.url[len("ipc://") :])
            sock.bind(ep.url)
        else:
            sock.connect(ep.url)
    except zmq.ZMQError as e:
        sock.close(linger=0)
        raise EndpointError(f"cannot {ep.mode} {ep.url}: {e}") from e
    except BaseException:
        sock.close(linger=0)
        raise
    _open_sockets.add(sock)
    return sock


def _remove_stale_ipc(path: str) -> None:
    """A socket file left by a killed process: binding over it would work, but another live
    process bound there would silently lose its peers, so only remove non-listening files."""
    if not os.path.exists(path):
        return
    import socket as pysocket

    probe = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    try:
        probe.settimeout(0.2)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise EndpointError(f"ipc://{path} is in use by another process")


def _close(sock: zmq.Socket[Any], ep: Endpoint) -> None:
    """Closes ``sock``; a bound ipc socket also removes its file (libzmq leaves it behind)."""
    if sock.closed:
        return
    sock.close(linger=0)
    if ep.mode == "bind" and ep.is_ipc:
        with contextlib.suppress(OSError):
            os.unlink(ep.url[len("ipc://") :])


def split_capacity(capacity: int) -> tuple[int, int]:
    """(SNDHWM, RCVHWM) for an edge holding about ``capacity`` messages."""
    if capacity < 1:
        raise ValueError(f"queue capacity must be >= 1, got {capacity}")
    return max(1, (capacity + 1) // 2), max(1, capacity // 2)


# ------------------------------------------------------------------------------ sender


class Sender:
    """The PUSH end of an edge. Like its ZeroMQ socket, use it from one thread only.

    endpoint: see the module doc (bare: connect). capacity: messages queued on the edge.
    shm: a pool to move the pixel arrays of realtime sends into shared memory (ipc edges).
    inline: True resolves `ShmRef` pixels into inline arrays (an edge to another host); default:
        True for tcp endpoints, False for ipc (descriptors pass through as they are).
    offline_wait_s: None: blocking (offline) sends carry pixels inline. A number: they go
        through the ring too, each write waiting (up to that long) for the consumer to release
        the slot it reuses (`pipeline.shm.ShmRing.writing`), and `ShmRef`s pass through — the
        stage that wrote them into its own slab must have written with ``wait_s`` as well.
        Consumers release by `ShmReader.read` (``pixels="copy"`` does) or `release`.
    stop: checked while a blocking send waits, so shutdown never hangs on a full queue.
    curve: CURVE keys (tcp only): server when this side binds, client when it connects.
    """

    def __init__(
        self,
        endpoint: str | Endpoint,
        capacity: int = 8,
        *,
        shm: ShmPool | None = None,
        inline: bool | None = None,
        offline_wait_s: float | None = None,
        stop: StopFlag | None = None,
        default_mode: Mode = "connect",
        kernel_buffer_bytes: int | None = None,
        name: str = "",
        curve: CurveKeys | None = None,
    ) -> None:
        self.endpoint = (
            endpoint if isinstance(endpoint, Endpoint) else Endpoint.parse(endpoint, default_mode)
        )
        self.name = name or str(self.endpoint)
        self.shm = shm
        self.offline_wait_s = offline_wait_s
        self.inline = (not self.endpoint.is_ipc) if inline is None else inline
        if self.inline and shm is not None:
            raise ValueError(f"{self.name}: an inline edge does not use a shm pool")
        self.stop = stop
        self._reader: ShmReader | None = None
        hwm, _ = split_capacity(capacity)
        self.socket = _socket(
            zmq.PUSH, self.endpoint, hwm, kernel_buffer_bytes, curve=curve, name=self.name
        )
        self.sent = 0
        self.refused = 0

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until a peer is connected and has room (a live send would be accepted), at most
        ``timeout_s``; False if it never was. A PUSH socket refuses live sends until then."""
        deadline = time.monotonic() + timeout_s
        while not cast(int, self.socket.get(zmq.EVENTS)) & zmq.POLLOUT:
            left = deadline - time.monotonic()
            if left <= 0 or (self.stop is not None and self.stop.is_set()):
                return False
            self.socket.poll(max(1, int(min(left, 0.1) * 1000)), zmq.POLLOUT)
        return True

    def send(
        self,
        msg: Message,
        block: bool = False,
        timeout_s: float | None = None,
        *,
        check_stop: bool = True,
    ) -> bool:
        """Queues ``msg``. Non-blocking: False at once when the queue is full (the caller counts
        a drop). Blocking: waits for room, re-checking ``stop`` every 100 ms; False if ``stop``
        was set (``check_stop=False`` when draining after stop) or ``timeout_s`` passed."""
        if not block:
            # ZMQ_EVENTS makes libzmq process the pipe's pending "messages were read" commands
            # first (send() only does so every ~1 ms), so a queue that has room is not refused
            # spuriously; and a full queue is refused before a ring slot is spent on the frame.
            events = cast(int, self.socket.get(zmq.EVENTS))
            if not events & zmq.POLLOUT or not self._try(msg, block):
                self.refused += 1
                return False
            return True
        parts = encode_msg(self._prepare(msg, block))
        if cast(int, self.socket.get(zmq.EVENTS)) & zmq.POLLOUT and self._try(parts, block):
            return True  # room at once (also when stopping)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not (check_stop and self.stop is not None and self.stop.is_set()):
            wait_ms = 100
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait_ms = max(1, min(wait_ms, int(left * 1000)))
            if self.socket.poll(wait_ms, zmq.POLLOUT) and self._try(parts, block):
                return True
        self.refused += 1
        return False

    def _try(self, msg_or_parts: Message | list[bytes | memoryview], block: bool) -> bool:
        parts = (
            msg_or_parts
            if isinstance(msg_or_parts, list)
            else encode_msg(self._prepare(msg_or_parts, block))
        )
        try:
            self.socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self.sent += 1
        return True

    def _prepare(self, msg: Message, block: bool) -> Message:
        """Pixels via the ring for realtime sends; for blocking (offline) sends via the ring
        only with ``offline_wait_s`` (writes wait for the consumer's release), else inline: a
        realtime ring overwrites a slot after ``slots`` writes whether or not it was read, and
        the messages queued on an edge are not bounded tightly enough (kernel socket buffers
        hold a hundred or more descriptors) to size a ring that never overruns."""
        if not isinstance(msg, FrameMsg | ItemMsg):
            return msg
        pixels = msg.pixels
        lossless_shm = block and self.offline_wait_s is not None
        if isinstance(pixels, np.ndarray):
            if self.shm is not None and not block:
                return replace(msg, pixels=self.shm.write(msg.camera_id, pixels))
            if self.shm is not None and lossless_shm:
                ref = self.shm.write(msg.camera_id, pixels, self.offline_wait_s or 0.0, self.stop)
                return replace(msg, pixels=ref)
        elif self.inline or (block and not lossless_shm):
            if self._reader is None:
                self._reader = ShmReader()
            arr = self._reader.read(pixels)
            if arr is None:
                raise MessageError(f"{pixels.ring} slot {pixels.slot} overwritten before send")
            return replace(msg, pixels=arr)
        return msg

    def close(self) -> None:
        """Closes the socket (unsent messages are dropped: linger 0). Idempotent. The shm pool
        is the caller's (it may outlive the socket); close it separately."""
        _close(self.socket, self.endpoint)
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ receiver


class Receiver:
    """The PULL end of an edge (bare endpoint: bind). Use it from one thread only.

    pixels: ``"copy"`` resolves `ShmRef` pixels to ndarrays (an overwritten slot gives a
    `DropMsg` with reason ``shm_overwritten``, stage ``name``); ``"ref"`` leaves them.
    max_part_bytes: a peer sending a larger message part is disconnected (ZMQ_MAXMSGSIZE), so a
        stray or hostile client on a tcp port cannot make this process allocate without bound.
        The default (256 MiB) passes an 8K RGB frame.
    curve: CURVE keys (tcp only): server when this side binds, client when it connects.
    also_connect: more producers' endpoints this (connecting) receiver also connects to (the
        frames edge with several decode processes); ZeroMQ fair-queues between them.
    """

    def __init__(
        self,
        endpoint: str | Endpoint,
        capacity: int = 8,
        *,
        pixels: Literal["copy", "ref"] = "copy",
        default_mode: Mode = "bind",
        kernel_buffer_bytes: int | None = None,
        max_part_bytes: int = 256 << 20,
        name: str = "",
        curve: CurveKeys | None = None,
        also_connect: Sequence[Endpoint] = (),
    ) -> None:
        self.endpoint = (
            endpoint if isinstance(endpoint, Endpoint) else Endpoint.parse(endpoint, default_mode)
        )
        self.name = name or str(self.endpoint)
        self.pixels = pixels
        self.reader = ShmReader()
        _, hwm = split_capacity(capacity)
        self.socket = _socket(
            zmq.PULL, self.endpoint, hwm, kernel_buffer_bytes, max_part_bytes, curve, self.name
        )
        for more in also_connect:  # more producers (decode shards): fair-queued with the first
            if more.mode != "connect" or self.endpoint.mode != "connect":
                raise EndpointError(f"{self.name}: only a connecting receiver connects to more")
            try:
                self.socket.connect(more.url)
            except zmq.ZMQError as e:
                self.close()
                raise EndpointError(f"cannot connect {more.url}: {e}") from e
        self.received = 0
        self._poller: zmq.Poller | None = None  # the socket and a wake fd (recv's wake_fd)
        self._poller_fd = -1

    @property
    def address(self) -> str:
        """The address actually bound/connected (``tcp://127.0.0.1:0`` gets its real port)."""
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT) or self.endpoint.url

    def recv(self, timeout_ms: int | None = 100, wake_fd: int | None = None) -> Message | None:
        """The next message, or None after ``timeout_ms`` (None: wait forever; 0: poll).

        wake_fd: a file descriptor (one end of a local socket pair) whose readability ends the
        wait: its bytes are consumed and None is returned if no message waits — another thread
        of the stage has something to send (the runner owns the sockets).
        Raises `MessageError` for a malformed message (it has been consumed; go on reading).
        """
        if wake_fd is not None and timeout_ms != 0:
            if self._poller is None or self._poller_fd != wake_fd:
                self._poller, self._poller_fd = zmq.Poller(), wake_fd
                self._poller.register(self.socket, zmq.POLLIN)
                self._poller.register(wake_fd, zmq.POLLIN)
            ready = dict(self._poller.poll(timeout_ms))
            if wake_fd in ready:
                _drain_fd(wake_fd)
            if self.socket not in ready:
                return None
        elif timeout_ms is not None and not self.socket.poll(timeout_ms, zmq.POLLIN):
            return None
        frames = self.socket.recv_multipart(copy=False)
        self.received += 1
        msg = decode(frames)
        if (
            self.pixels == "copy"
            and isinstance(msg, FrameMsg | ItemMsg)
            and isinstance(msg.pixels, ShmRef)
        ):
            arr = self.reader.read(msg.pixels)
            if arr is None:
                return DropMsg(msg.camera_id, msg.seq, self.name, "shm_overwritten", msg.frame_id)
            msg = replace(msg, pixels=arr)
        return msg

    def close(self) -> None:
        """Closes the socket and detaches the shm rings it read from. Idempotent."""
        _close(self.socket, self.endpoint)
        self.reader.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drain_fd(fd: int) -> None:
    """Read a non-blocking local socket empty (its bytes only say "wake up")."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
