"""Producer-owned shared-memory rings of fixed-size slots, read under a seqlock.

A `ShmRing` is one file in ``/dev/shm`` mapped with ``mmap``: a header, one 64-byte control
line per slot, then ``slots`` data slots of ``slot_bytes`` each (rounded up to 4 KiB, so every
slot starts on a page: good for ``cudaHostRegister`` and for the CPU). Only the producer that
created it writes the slots; consumers attach by name and map the slots read-only, so there are
no locks across processes, and in realtime mode a slow consumer can never stall the producer.

Seqlock per slot: a 64-bit generation counter, odd while the producer writes the slot, even when
the data is complete. ``write`` returns a `ShmRef` with the even generation it left. A reader
checks the counter before and after copying the data out; if it differs from the ref's, the slot
was overwritten (the consumer was slower than ``slots`` writes) and `read` returns ``None``: the
caller counts a drop. ``view`` + ``valid`` do the same without the copy (check *after* using
the view).

Offline (lose nothing): a consumer marks a slot *released* in its control line when it is done
with it (`read` does it; after a `view`, call `release`), and a producer writing with
``wait_s > 0`` waits for the release of a slot's previous content before overwriting it, so it
runs at most ``slots`` items ahead. Realtime writers never wait. One consumer per descriptor
(PUSH/PULL delivers each message to one peer), so one release field per slot suffices.

Memory ordering: 8-byte aligned stores and loads are atomic on 64-bit CPUs, and x86 keeps
stores in order (TSO), so the protocol is exact there. On weakly ordered CPUs (ARM) there is no
fence reachable from Python; the ZeroMQ send/receive in between (syscalls, mutexes) orders the
normal case, and only the overwrite-detection race relies on the CPU.

Names are ``edgestream-<pipeline>-<owner pid>-<purpose>``; the header also stores the owner's pid
and process start time, so `cleanup_stale` can remove the segments of owners that died (SIGKILL
leaves them behind) without mistaking a reused pid for the owner. The owner unlinks its ring on
`close`, and at interpreter exit as a fallback (``atexit``).

Why not ``multiprocessing.shared_memory``: in Python 3.11 every process that *attaches* registers
the segment with its resource tracker, which unlinks it when that process exits — a consumer
restart would delete the producer's ring.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import math
import mmap
import os
import re
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.messages import ShmRef

log = logging.getLogger(__name__)

SHM_DIR = Path(os.environ.get("EDGESTREAM_SHM_DIR", "/dev/shm"))
"""Where segments live (tmpfs). Override with ``EDGESTREAM_SHM_DIR`` (tests, odd systems)."""

NAME_PREFIX = "edgestream-"
_MAGIC = b"ESRING01"
# magic, version, slots, slot_bytes, data_offset, owner_pid, owner_start_ticks
_HEADER = struct.Struct("<8sIIQQQQ")
_HEADER_BYTES = 4096
_CTRL_BYTES = 64  # one cache line per slot: generation (u64) + spare
_PAGE = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class ShmError(RuntimeError):
    """A shared-memory segment cannot be created or attached (the text says why)."""


def ring_name(pipeline: str, purpose: str, pid: int | None = None) -> str:
    """``edgestream-<pipeline>-<pid>-<purpose>``, with characters outside ``[A-Za-z0-9_.-]``
    replaced by ``_`` (``-`` is also replaced in ``purpose``, so the name ends unambiguously)."""
    pipe = re.sub(r"[^A-Za-z0-9_.-]", "_", pipeline) or "_"
    purp = re.sub(r"[^A-Za-z0-9_.]", "_", purpose) or "_"
    return f"{NAME_PREFIX}{pipe}-{os.getpid() if pid is None else pid}-{purp}"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return 0  # exists but unreadable: assume alive
    # field 22, counted after the ")" that ends the (possibly spaced) command name
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start_ticks: int) -> bool:
    ticks = _start_ticks(pid)
    if ticks is None:
        return False
    return ticks == 0 or start_ticks == 0 or ticks == start_ticks


@dataclass(frozen=True)
class RingInfo:
    name: str
    slots: int
    slot_bytes: int
    owner_pid: int
    owner_start_ticks: int


def _read_info(path: Path) -> RingInfo | None:
    try:
        with path.open("rb") as f:
            raw = f.read(_HEADER.size)
    except OSError:
        return None
    if len(raw) < _HEADER.size:
        return None
    magic, _ver, slots, slot_bytes, _off, pid, ticks = _HEADER.unpack(raw)
    if magic != _MAGIC:
        return None
    return RingInfo(path.name, slots, slot_bytes, pid, ticks)


class ShmRing:
    """A ring of ``slots`` fixed-size slots in one shared-memory segment.

    Create it in the producer (`create`), attach in consumers (`attach`). Variable-size arrays
    up to ``slot_bytes`` fit: the `ShmRef` carries shape and dtype. The producer may call
    `write` from several threads (a lock serialises writes); one ring per camera avoids that.
    """

    def __init__(
        self, path: Path, ctrl: mmap.mmap, data: mmap.mmap, info: RingInfo, owner: bool
    ) -> None:
        self.path = path
        self.name = info.name
        self.slots = info.slots
        self.slot_bytes = info.slot_bytes
        self.owner = owner
        self._maps: tuple[mmap.mmap, mmap.mmap] | None = (ctrl, data)
        self._lock = threading.Lock()
        self._next = 0
        lines = np.frombuffer(
            ctrl, dtype=np.uint64, count=self.slots * (_CTRL_BYTES // 8), offset=_HEADER_BYTES
        ).reshape(self.slots, _CTRL_BYTES // 8)
        self._gen = lines[:, 0]  # odd while the producer writes the slot
        self._released = lines[:, 1]  # the last generation a consumer said it is done with
        self.data = np.frombuffer(data, dtype=np.uint8).reshape(self.slots, self.slot_bytes)
        """All slots as one (slots, slot_bytes) uint8 array (e.g. to pin with cudaHostRegister)."""
        if owner:
            _OWNED[str(path)] = os.getpid()

    # ------------------------------------------------------------------ life cycle
    @classmethod
    def create(
        cls, name: str, slots: int, slot_bytes: int, directory: Path | None = None
    ) -> ShmRing:
        """A new ring owned by this process. ``slot_bytes`` is rounded up to 4 KiB.

        The memory is reserved up front (``posix_fallocate``): a /dev/shm too small for the ring
        fails here with a clear error instead of a SIGBUS on the first write.
        """
        if not _NAME_RE.match(name):
            raise ShmError(f"bad segment name {name!r}: use [A-Za-z0-9_.-]")
        if not (1 <= slots <= 1 << 16) or slot_bytes <= 0:
            raise ShmError(f"slots must be 1..65536 and slot_bytes > 0, got {slots}, {slot_bytes}")
        slot_bytes = -(-slot_bytes // _PAGE) * _PAGE
        size = _data_offset(slots) + slots * slot_bytes
        path = (directory or SHM_DIR) / name
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError as e:
            raise ShmError(f"shared-memory segment {path} already exists") from e
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                free = _free_bytes(path.parent)
                raise ShmError(
                    f"cannot reserve {size / 2**20:.1f} MiB in {path.parent} for ring {name} "
                    f"({free / 2**20:.1f} MiB free): {e.strerror}. Give the container a larger "
                    "/dev/shm (docker --shm-size, a k8s emptyDir with medium: Memory) or use "
                    "fewer/smaller slots."
                ) from e
            ctrl, data = _map(fd, slots, slot_bytes, writable=True)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        os.close(fd)
        pid = os.getpid()
        info = RingInfo(name, slots, slot_bytes, pid, _start_ticks(pid) or 0)
        # the magic goes last: a half-created segment is never taken for a ring
        ctrl[8 : _HEADER.size] = _HEADER.pack(
            b"\0" * 8, 1, slots, slot_bytes, _data_offset(slots), pid, info.owner_start_ticks
        )[8:]
        ctrl[:8] = _MAGIC
        return cls(path, ctrl, data, info, owner=True)

    @classmethod
    def attach(cls, name: str, directory: Path | None = None, writable: bool = False) -> ShmRing:
        """Map an existing ring. The slots are mapped read-only unless ``writable`` (e.g. to
        pin them with CUDA); the control lines are always writable (`release`)."""
        path = (directory or SHM_DIR) / name
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError as e:
            raise ShmError(f"no shared-memory segment {path} (owner gone?)") from e
        try:
            size = os.fstat(fd).st_size
            info = _read_info(path)
            if info is None or size < _data_offset(info.slots) + info.slots * info.slot_bytes:
                raise ShmError(f"{path} is not an edgestream ring (bad header or size)")
            ctrl, data = _map(fd, info.slots, info.slot_bytes, writable)
        finally:
            os.close(fd)
        return cls(path, ctrl, data, info, owner=False)

    @property
    def closed(self) -> bool:
        return self._maps is None

    def close(self) -> None:
        """Unmap; the owner also unlinks the segment. Idempotent.

        Arrays obtained from `view` must be gone before (a live view keeps the mapping, and
        ``mmap.close`` then raises ``BufferError``; in that case the mapping is left to the GC).
        """
        maps, self._maps = self._maps, None
        if self.owner:
            self.unlink()
            _OWNED.pop(str(self.path), None)
        if maps is None:
            return
        self._gen = self._released = np.empty(0, np.uint64)
        self.data = np.empty((0, 0), np.uint8)
        for mm in maps:
            with contextlib.suppress(BufferError):
                mm.close()

    def unlink(self) -> None:
        """Remove the segment's name (mappings stay valid until unmapped). Idempotent."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __del__(self) -> None:
        # an owner dropped without close(): unlink, but never from a forked child
        if getattr(self, "owner", False) and _OWNED.get(str(self.path)) == os.getpid():
            self.unlink()
            _OWNED.pop(str(self.path), None)

    def __enter__(self) -> ShmRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        role = "owner" if self.owner else "attached"
        return f"ShmRing({self.name!r}, slots={self.slots}, slot_bytes={self.slot_bytes}, {role})"

    # ------------------------------------------------------------------ producer
    @contextlib.contextmanager
    def writing(
        self,
        shape: tuple[int, ...],
        dtype: str = "uint8",
        wait_s: float = 0.0,
        stop: StopFlag | None = None,
    ) -> Iterator[SlotWrite]:
        """Write in place: ``with ring.writing((3, h, w)) as w: fill(w.array)``; send ``w.ref``
        after the block. The slot's generation is odd inside the block.

        wait_s: 0 (realtime) overwrites the oldest slot at once. > 0 (offline, lose nothing)
            first waits until a consumer `release`d the slot's previous content, up to
            ``wait_s`` seconds (then it is overwritten anyway, with a warning: a consumer that
            died with descriptors queued must not stall the producer forever) or until
            ``stop`` is set. So the producer runs at most ``slots`` items ahead.
        """
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > self.slot_bytes:
            raise ShmError(
                f"array of {nbytes} bytes {tuple(shape)} {dtype} does not fit a slot of "
                f"{self.slot_bytes} bytes in ring {self.name}"
            )
        if self._maps is None or not self.owner:
            raise ShmError(f"ring {self.name} is closed or not owned by this process")
        with self._lock:
            slot = self._next
            self._next = (slot + 1) % self.slots
            gen = int(self._gen[slot])
            if wait_s > 0 and gen > 0:
                self._wait_released(slot, gen, wait_s, stop)
            start = gen + 1 if gen % 2 == 0 else gen + 2  # odd: writing
            self._gen[slot] = start
            try:
                arr = self.data[slot, :nbytes].view(dtype).reshape(shape)
                yield SlotWrite(arr, ShmRef(self.name, slot, start + 1, tuple(shape), dtype))
            finally:
                self._gen[slot] = start + 1  # even: complete

    def _wait_released(self, slot: int, gen: int, wait_s: float, stop: StopFlag | None) -> None:
        deadline = time.monotonic() + wait_s
        pause = 0.0002
        while int(self._released[slot]) < gen:
            if stop is not None and stop.is_set():
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "ring %s: slot %d not released by its consumer in %.1f s; overwriting it "
                    "(the consumer died or is stuck; that frame is lost)",
                    self.name, slot, wait_s,
                )  # fmt: skip
                return
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def write(self, array: np.ndarray, wait_s: float = 0.0, stop: StopFlag | None = None) -> ShmRef:
        """Copy ``array`` into the next slot and describe it (``wait_s``: see `writing`)."""
        with self.writing(tuple(array.shape), array.dtype.name, wait_s, stop) as w:
            np.copyto(w.array, array, casting="no")
        return w.ref

    # ------------------------------------------------------------------ consumer
    def view(self, ref: ShmRef) -> np.ndarray | None:
        """A zero-copy read-only view of ``ref``'s array, or None if already overwritten.

        The data may be overwritten while you use it: call `valid` *after* using it and discard
        what you computed if it returns False.
        """
        self._check_ref(ref)
        if int(self._gen[ref.slot]) != ref.generation:
            return None
        arr = self.data[ref.slot, : ref.nbytes].view(ref.dtype).reshape(ref.shape)
        arr.flags.writeable = False
        return arr

    def valid(self, ref: ShmRef) -> bool:
        """True while the slot still holds ``ref``'s data (call after reading a `view`)."""
        return self._maps is not None and int(self._gen[ref.slot]) == ref.generation

    def release(self, ref: ShmRef) -> None:
        """Tell the producer this consumer is done with ``ref``'s slot (`read` does it; call it
        after using a `view`). Only a producer writing with ``wait_s > 0`` waits for it."""
        if (
            self._maps is not None
            and 0 <= ref.slot < self.slots
            and int(self._released[ref.slot]) < ref.generation
        ):
            self._released[ref.slot] = ref.generation

    def read(self, ref: ShmRef, out: np.ndarray | None = None) -> np.ndarray | None:
        """A copy of ``ref``'s array (into ``out`` when given), or None if it was overwritten
        before or while copying (count it as a drop). Releases the slot."""
        src = self.view(ref)
        if src is None:
            return None
        if out is None:
            out = np.empty(ref.shape, dtype=ref.dtype)
        np.copyto(out, src, casting="no")
        if not self.valid(ref):
            return None
        self.release(ref)
        return out

    def _check_ref(self, ref: ShmRef) -> None:
        if self._maps is None:
            raise ShmError(f"ring {self.name} is closed")
        if ref.ring != self.name:
            raise ShmError(f"descriptor for ring {ref.ring!r} used with ring {self.name!r}")
        if not (0 <= ref.slot < self.slots) or ref.nbytes > self.slot_bytes:
            raise ShmError(f"descriptor {ref} does not fit ring {self.name}")


@dataclass(frozen=True)
class SlotWrite:
    array: np.ndarray
    ref: ShmRef


def _map(fd: int, slots: int, slot_bytes: int, writable: bool) -> tuple[mmap.mmap, mmap.mmap]:
    """(control lines, slots): two mappings, so a consumer can write its releases without
    being able to write the pixels. The data offset is page aligned, as mmap requires."""
    off = _data_offset(slots)
    rw = mmap.PROT_READ | mmap.PROT_WRITE
    ctrl = mmap.mmap(fd, off, mmap.MAP_SHARED, rw)
    try:
        prot = rw if writable else mmap.PROT_READ
        data = mmap.mmap(fd, slots * slot_bytes, mmap.MAP_SHARED, prot, offset=off)
    except BaseException:
        ctrl.close()
        raise
    return ctrl, data


def _data_offset(slots: int) -> int:
    return -(-(_HEADER_BYTES + slots * _CTRL_BYTES) // _PAGE) * _PAGE


def _free_bytes(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------- consumers' cache


class ShmReader:
    """Resolves `ShmRef`s from any number of rings, attaching each ring once (kept LRU, at most
    ``max_rings``; rings whose segment was unlinked are detached when a new ring is attached).

    A ring that no longer exists (its producer restarted under a new pid, or is gone) makes
    `read` return None, like an overwritten slot: the frame is lost, count it as a drop.
    """

    def __init__(self, max_rings: int = 64, directory: Path | None = None) -> None:
        self.max_rings = max_rings
        self.directory = directory
        self._rings: OrderedDict[str, ShmRing] = OrderedDict()

    def ring(self, name: str) -> ShmRing | None:
        ring = self._rings.get(name)
        if ring is not None:
            self._rings.move_to_end(name)
            return ring
        self._prune()
        try:
            ring = ShmRing.attach(name, self.directory)
        except ShmError as e:
            log.debug("cannot attach %s: %s", name, e)
            return None
        self._rings[name] = ring
        while len(self._rings) > self.max_rings:
            _, old = self._rings.popitem(last=False)
            old.close()
        return ring

    def _prune(self) -> None:
        """Detach rings whose segment was unlinked (producer closed or restarted): a mapping
        keeps the memory of /dev/shm in use until the last process unmaps it."""
        for name, ring in list(self._rings.items()):
            if not ring.path.exists():
                del self._rings[name]
                ring.close()

    def read(self, ref: ShmRef, out: np.ndarray | None = None) -> np.ndarray | None:
        ring = self.ring(ref.ring)
        return None if ring is None else ring.read(ref, out)

    def view(self, ref: ShmRef) -> np.ndarray | None:
        ring = self.ring(ref.ring)
        return None if ring is None else ring.view(ref)

    def valid(self, ref: ShmRef) -> bool:
        ring = self._rings.get(ref.ring)
        return ring is not None and ring.valid(ref)

    def release(self, ref: ShmRef) -> None:
        """After a `view`: the consumer is done with the slot (`read` releases by itself)."""
        ring = self._rings.get(ref.ring)
        if ring is not None:
            ring.release(ref)

    def close(self) -> None:
        while self._rings:
            self._rings.popitem()[1].close()


class ShmPool:
    """Producer side for variable frame sizes: one ring per key (e.g. camera id), created on
    first use with slots big enough for that array, and replaced (new name, old one unlinked)
    when a larger array comes (a camera changed resolution)."""

    def __init__(self, pipeline: str, purpose: str, slots: int, directory: Path | None = None):
        self.pipeline, self.purpose, self.slots, self.directory = (
            pipeline,
            purpose,
            slots,
            directory,
        )
        self._rings: dict[str, ShmRing] = {}
        self._serial = 0
        self._lock = threading.Lock()

    def ring_for(self, key: str, nbytes: int) -> ShmRing:
        with self._lock:
            ring = self._rings.get(key)
            if ring is None or ring.slot_bytes < nbytes:
                if ring is not None:
                    ring.close()
                self._serial += 1
                name = ring_name(self.pipeline, f"{self.purpose}.{key}.{self._serial}")
                ring = ShmRing.create(name, self.slots, nbytes, self.directory)
                self._rings[key] = ring
            return ring

    def write(
        self, key: str, array: np.ndarray, wait_s: float = 0.0, stop: StopFlag | None = None
    ) -> ShmRef:
        """Copy ``array`` into ``key``'s ring (``wait_s``: see `ShmRing.writing`)."""
        return self.ring_for(key, array.nbytes).write(array, wait_s, stop)

    def close(self) -> None:
        with self._lock:
            for ring in self._rings.values():
                ring.close()
            self._rings.clear()


# ---------------------------------------------------------------------- stale segments


def list_segments(prefix: str = NAME_PREFIX, directory: Path | None = None) -> list[Path]:
    d = directory or SHM_DIR
    try:
        return sorted(p for p in d.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def cleanup_stale(prefix: str = NAME_PREFIX, directory: Path | None = None) -> list[str]:
    """Unlink the segments under ``prefix`` whose owner process is dead; returns their names.

    The owner comes from the ring header (pid + start time, so a reused pid is not taken for
    the owner); a segment without a readable header (creation interrupted) falls back to the pid
    in its name, and is only removed when older than a few seconds.
    """
    removed = []
    for path in list_segments(prefix, directory):
        if not path.is_file():
            continue  # e.g. a metrics folder of the same pipeline: not ours to remove
        info = _read_info(path)
        if info is not None:
            dead = not _alive(info.owner_pid, info.owner_start_ticks)
        else:
            m = re.search(r"-(\d+)-[^-]*$", path.name)
            try:
                young = time.time() - path.stat().st_mtime < 5.0
            except FileNotFoundError:
                continue
            dead = m is not None and not young and _start_ticks(int(m.group(1))) is None
        if dead:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warning("cannot remove stale segment %s: %s", path, e)
                continue
            removed.append(path.name)
    if removed:
        log.info("removed %d stale shared-memory segment(s): %s", len(removed), removed)
    return removed


_OWNED: dict[str, int] = {}
"""Paths of the rings this process created and has not closed (path -> creating pid)."""


@atexit.register
def _unlink_owned() -> None:
    for path, pid in list(_OWNED.items()):
        if pid == os.getpid():  # never a parent's ring inherited through fork
            with contextlib.suppress(OSError):
                os.unlink(path)
    _OWNED.clear()
