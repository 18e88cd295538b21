"""The demo's live table: one row per camera, redrawn about once a second.

Uses ``rich`` when it is installed and the output is a terminal; plain ANSI redraws on other
terminals; and, when the output is not a terminal (a pipe, a CI log), one plain table every
``plain_every_s`` seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from stages.demo.reader import CameraCounts

HEADERS = ("camera", "up", "fps", "published", "in redis", "objects", "tracks", "p50/p99 ms",
           "dropped")  # fmt: skip
"""tracks: tracked objects in the newest frame / distinct track ids so far. p50/p99: capture to
publish latency. dropped: frames dropped by any stage (reasons in the final summary)."""


def rows(
    cameras: Mapping[str, Mapping[str, Any]], counts: Mapping[str, CameraCounts]
) -> list[list[str]]:
    """Table cells: pipeline stats (`pipeline.run.Pipeline.stats`) + what Redis holds."""
    out = []
    for cam in sorted(set(counts) | set(cameras)):
        s = cameras.get(cam, {})
        c = counts.get(cam, CameraCounts())
        p50, p99 = s.get("latency_p50_ms"), s.get("latency_p99_ms")
        lat = f"{p50:.0f}/{p99:.0f}" if p50 is not None and p99 is not None else "-"
        dropped = str(s.get("dropped_total", 0))
        out.append([
            cam,
            "yes" if s.get("up") else "no",
            f"{s.get('fps', 0.0):.1f}",
            str(s.get("published", 0)),
            str(c.messages),
            str(c.last_objects),
            f"{c.last_tracks}/{len(c.track_ids)}",
            lat,
            dropped,
        ])  # fmt: skip
    return out


def render_text(title: str, cells: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(HEADERS)]  # fmt: skip
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([title, line, "-" * len(line), *body])


class LiveTable:
    """``update(title, cells)`` about once a second; ``close()`` leaves the last one on screen."""

    def __init__(self, out: TextIO | None = None, plain_every_s: float = 5.0) -> None:
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self._live: Any = None
        if self.tty:
            try:
                from rich.console import Console
                from rich.live import Live

                self._live = Live(console=Console(file=self.out), auto_refresh=False)
                self._live.start()
            except ImportError:
                self._live = None
        self._drawn_lines = 0

    def update(self, title: str, cells: list[list[str]]) -> None:
        if self._live is not None:
            from rich.table import Table

            table = Table(title=title, title_justify="left")
            for h in HEADERS:
                table.add_column(h, justify="left" if h == "camera" else "right", no_wrap=True)
            for r in cells:
                table.add_row(*r)
            self._live.update(table, refresh=True)
            return
        text = render_text(title, cells)
        if self.tty:  # move up over the previous table and redraw it
            if self._drawn_lines:
                self.out.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self.out.write(text + "\n")
            self._drawn_lines = text.count("\n") + 1
        elif time.monotonic() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.monotonic()
            self.out.write(text + "\n\n")
        self.out.flush()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
