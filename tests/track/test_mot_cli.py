"""MOTChallenge I/O and the ``track`` / ``eval-tracker`` commands on a synthetic sequence."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from stages.track import cli
from stages.track.mot import load_sequence


def write_sequence(root: Path, frames: int = 30, fps: int = 10) -> Path:
    seq = root / "SYN-01"
    (seq / "det").mkdir(parents=True)
    (seq / "seqinfo.ini").write_text(
        f"[Sequence]\nname=SYN-01\nframeRate={fps}\nseqLength={frames}\nimWidth=640\nimHeight=480\n"
    )
    lines = []
    for f in range(1, frames + 1):
        if f == 7:
            continue  # a frame with no detections at all
        lines.append(f"{f},-1,{100 + 3 * f},50,40,100,0.95,-1,-1,-1")
        lines.append(f"{f},-1,400,{200 - 2 * f},30,80,0.9,-1,-1,-1")
    (seq / "det" / "det.txt").write_text("\n".join(lines) + "\n")
    return seq


def test_load_sequence_groups_detections_by_frame(tmp_path: Path) -> None:
    seq = load_sequence(write_sequence(tmp_path))
    assert (seq.name, seq.frame_rate_hz, seq.num_frames) == ("SYN-01", 10.0, 30)
    frames = list(seq.frames())
    assert [f for f, _, _ in frames] == list(range(1, 31))
    assert len(frames[6][1]) == 0
    np.testing.assert_allclose(frames[0][1][0], [103, 50, 143, 150])
    np.testing.assert_allclose(frames[0][2], [0.95, 0.9])


def test_load_sequence_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"seqinfo\.ini"):
        load_sequence(tmp_path)


def test_track_command_writes_motchallenge_results(tmp_path: Path, capsys) -> None:
    seq = write_sequence(tmp_path)
    out = tmp_path / "out" / "SYN-01.txt"
    assert cli.main(["track", str(seq), "--output", str(out)]) == 0
    rows = np.loadtxt(out, delimiter=",", ndmin=2)
    assert rows.shape[1] == 10
    assert set(rows[:, 1].astype(int)) == {1, 2}  # two objects, two ids, kept all along
    assert (rows[:, 7:] == -1).all()
    assert 7 not in set(rows[:, 0].astype(int))  # nothing output where nothing was detected
    one = rows[rows[:, 0] == 5]
    np.testing.assert_allclose(one[one[:, 1] == 1][0, 2:6], [115, 50, 40, 100], atol=1e-2)
    assert "30 frames" in capsys.readouterr().out


def test_add_parsers_sets_func_for_each_command() -> None:
    parser = argparse.ArgumentParser()
    cli.add_parsers(parser.add_subparsers(dest="command"))
    track = parser.parse_args(["track", "SEQ", "--output", "r.txt"])
    ev = parser.parse_args(["eval-tracker", "--data", "/x", "--peers"])
    assert callable(track.func) and callable(ev.func) and track.func is not ev.func
    assert ev.peers and ev.data == Path("/x")


def test_cv_options_without_cv_are_refused(tmp_path: Path, capsys) -> None:
    assert cli.main(["eval-tracker", "--data", str(tmp_path), "--small-grid"]) == 2
    assert "--small-grid only go with --cv" in capsys.readouterr().err


def test_cv_without_sequences_says_where_it_looked(tmp_path: Path, capsys) -> None:
    assert cli.main(["eval-tracker", "--cv", "--data", str(tmp_path)]) == 2
    assert "no mot17/ or mot15/" in capsys.readouterr().err
