"""The demo's live table: a legend that explains the columns, widths that hold across refreshes."""

from __future__ import annotations

import io

from stages.demo.table import HEADERS, LEGEND, LiveTable, render_text


def _row(published: str, tracks: str, lat: str) -> list[str]:
    return ["cam1", "yes", "12.5", published, published, "3", tracks, lat, "0"]


def test_legend_explains_tracks_and_the_two_counts() -> None:
    assert "\n" not in LEGEND
    assert "tracks a/b: active now / started so far" in LEGEND
    assert "published" in LEGEND and "in redis" in LEGEND
    text = render_text("t", [_row("5", "2/3", "40/90")])
    assert text.splitlines()[-1] == LEGEND


def test_columns_keep_their_widths_across_refreshes() -> None:
    out = io.StringIO()  # not a terminal: every update is drawn as plain text
    table = LiveTable(out, plain_every_s=0.0)
    frames = [
        [_row("5", "2/3", "-")],
        [_row("12345678901", "12/12345", "12345/567890")],  # wider values: the columns widen
        [_row("7", "1/9", "40/90")],  # narrower again: the columns stay put
    ]
    headers = []
    for cells in frames:
        table.update("t", cells)
        headers.append(render_text("t", cells, table.widths).splitlines()[1])
    table.close()
    assert headers[0] != headers[1] == headers[2]
    # the plain output shows the same header line for the later refreshes
    printed = [line for line in out.getvalue().splitlines() if line.startswith(HEADERS[0])]
    assert printed[1] == printed[2] == headers[2]
    # numbers right-aligned under their headers: the row ends where the header ends
    last = render_text("t", frames[2], table.widths).splitlines()
    assert len(last[1]) == len(last[3])
