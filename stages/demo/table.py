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

LEGEND = (
    "tracks a/b: active now / started so far | published: the stages' count, sent each "
    "second | in redis: read back from Redis (so it can be ahead) | p50/p99: capture to "
    "publish, ms"
)
"""One line under the table that says what the columns mean."""

MIN_WIDTHS = (6, 3, 5, 9, 8, 7, 7, 10, 7)
"""Room for values that grow (counts, latencies), so columns stay put from the start."""


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


def column_widths(cells: list[list[str]], at_least: list[int] | None = None) -> list[int]:
    """Each column's width: its header, `MIN_WIDTHS`, every cell, and ``at_least`` (the widths
    drawn before, so a column never narrows between refreshes)."""
    floor = at_least or [0] * len(HEADERS)
    return [max(len(h), MIN_WIDTHS[i], floor[i], *(len(r[i]) for r in cells))
            for i, h in enumerate(HEADERS)]  # fmt: skip


def render_text(title: str, cells: list[list[str]], widths: list[int] | None = None) -> str:
    """The table as text: camera left-aligned, numbers right-aligned, then the legend."""
    widths = column_widths(cells, widths)

    def fit(values: Any) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))  # fmt: skip

    line = fit(HEADERS)
    return "\n".join([title, line, "-" * len(line), *(fit(r) for r in cells), LEGEND])


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
        self.widths: list[int] = column_widths([])
        """The widest each column has been: columns widen when they must, never narrow."""

    def update(self, title: str, cells: list[list[str]]) -> None:
        self.widths = column_widths(cells, self.widths)
        if self._live is not None:
            from rich.table import Table

            table = Table(title=title, title_justify="left", caption=LEGEND,
                          caption_justify="left")  # fmt: skip
            for h, w in zip(HEADERS, self.widths, strict=True):
                table.add_column(h, justify="left" if h == "camera" else "right", no_wrap=True,
                                 min_width=w)  # fmt: skip
            for r in cells:
                table.add_row(*r)
            self._live.update(table, refresh=True)
            return
        text = render_text(title, cells, self.widths)
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
