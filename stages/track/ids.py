"""Track id allocation, optionally persisted so ids stay unique across restarts."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class IdAllocator:
    """Hands out increasing track ids for one camera, starting at 1.

    With ``state_path`` the allocator survives restarts: it reserves ids in blocks of
    ``reserve_block`` and records the end of the reserved block in a small JSON file
    (``{"next_id": N}``), written atomically (temporary file + ``os.replace``). A restarted
    tracker starts after the last reserved block, so an id is never handed out twice, at the cost
    of a gap of at most ``reserve_block`` ids per restart. Larger blocks mean fewer disk writes.
    """

    def __init__(self, state_path: Path | str | None = None, reserve_block: int = 100) -> None:
        if reserve_block < 1:
            raise ValueError(f"reserve_block must be >= 1, got {reserve_block}")
        self._path = Path(state_path) if state_path is not None else None
        self._block = reserve_block
        self._next = 1
        self._reserved_until = 1  # ids < this are covered by the state file
        if self._path is not None and self._path.exists():
            self._next = _read_next_id(self._path)
            self._reserved_until = self._next

    @property
    def next_id(self) -> int:
        """The id the next `allocate` call returns."""
        return self._next

    def allocate(self) -> int:
        track_id = self._next
        self._next += 1
        if self._path is not None and self._next > self._reserved_until:
            self._reserved_until = track_id + self._block
            _write_next_id(self._path, self._reserved_until)
        return track_id


def _read_next_id(path: Path) -> int:
    try:
        value = json.loads(path.read_text())["next_id"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"track id state file {path} is unreadable or malformed: {exc}") from exc
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"track id state file {path}: next_id must be an int >= 1, got {value!r}")
    return value


def _write_next_id(path: Path, next_id: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"next_id": next_id}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
