"""Score edgestream's tracker and its peers on MOT17 with TrackEval (``edgestream eval-tracker``).

Every tracker runs over the same sequences in the same process; only the update call is timed,
in CPU time of this process (``time.process_time``), so other work on a shared machine inflates
no tracker's figure.
Results are written in TrackEval's MOTChallenge layout into a temporary directory and scored by
TrackEval's ``MotChallenge2DBox`` dataset, which applies the MOT17 rules itself: ground truth
rows with conf == 1 and class == 1 (pedestrian) count, tracker boxes matched to distractor
classes (2, 7, 8, 12) are removed, a match needs IoU >= 0.5.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.track.mot import DEFAULT_DATA, Sequence, format_results, load_sequence
from stages.track.peers import Peer, available_peers

# Relative to the repository root; override with --data.


@dataclass(frozen=True)
class Scores:
    """TrackEval figures for one tracker over one sequence or the combination."""

    hota: float
    mota: float
    idf1: float
    id_switches: int
    ms_per_frame: float


@dataclass(frozen=True)
class Evaluation:
    """``combined[tracker]`` and ``per_sequence[tracker][sequence]``; ``skipped`` lists peers
    that could not be imported, with the reason."""

    combined: dict[str, Scores]
    per_sequence: dict[str, dict[str, Scores]]
    skipped: list[str]


def find_sequences(data: Path) -> list[Path]:
    seqs = sorted(p for p in data.iterdir() if (p / "seqinfo.ini").is_file())
    if not seqs:
        raise FileNotFoundError(f"no MOTChallenge sequences (*/seqinfo.ini) under {data}")
    return seqs


def benchmark_of(seq_dir: Path) -> str:
    """TrackEval benchmark rules for a sequence: "MOT15" when its ground truth has no class
    column (MOT15: class and visibility are -1), else "MOT17"."""
    with open(Path(seq_dir) / "gt" / "gt.txt") as f:
        cols = f.readline().strip().split(",")
    return "MOT15" if len(cols) < 8 or cols[7].strip() == "-1" else "MOT17"


def _import_trackeval() -> Any:
    # trackeval releases before 1.3 use np.float / np.int / np.bool, removed in numpy 2.
    # Restore the aliases (to the builtins they always meant) before importing it, rather than
    # editing site-packages. Harmless where trackeval no longer needs them.
    for alias, builtin in (("float", float), ("int", int), ("bool", bool)):
        if alias not in np.__dict__:
            setattr(np, alias, builtin)
    import trackeval

    return trackeval


def run_tracker(peer: Peer, seq: Sequence) -> tuple[str, float]:
    """Track one sequence; returns (MOTChallenge results text, CPU seconds spent in updates)."""
    run = peer.make(seq.frame_rate_hz)
    rows = []
    spent = 0.0
    for frame, boxes, scores in seq.frames():
        args = run.prepare(boxes, scores)
        t0 = time.process_time()
        out = run.step(args)
        spent += time.process_time() - t0
        ids, out_boxes, out_scores = run.rows(out)
        rows.append((frame, ids, out_boxes, out_scores))
    return format_results(rows), spent


def trackeval_raw(
    gt_root: Path,
    results_root: Path,
    trackers: list[str],
    seqs: dict[str, int],
    benchmark: str = "MOT17",
) -> dict[str, Any]:
    """TrackEval's HOTA, CLEAR and Identity results under the MOT17 rules, per tracker and
    sequence (plus ``COMBINED_SEQ``): ``gt_root/<seq>/gt/gt.txt`` against
    ``results_root/<tracker>/data/<seq>.txt``; ``seqs`` maps each sequence to its length.
    ``benchmark="MOT15"`` scores ground truth without classes (MOT15: every row counts, no
    distractor removal)."""
    trackeval = _import_trackeval()
    eval_config = {
        "USE_PARALLEL": False,
        "PRINT_RESULTS": False,
        "PRINT_CONFIG": False,
        "TIME_PROGRESS": False,
        "OUTPUT_SUMMARY": False,
        "OUTPUT_DETAILED": False,
        "PLOT_CURVES": False,
        "DISPLAY_LESS_PROGRESS": True,
        "LOG_ON_ERROR": None,
    }
    dataset_config = {
        "GT_FOLDER": str(gt_root),
        "TRACKERS_FOLDER": str(results_root),
        "OUTPUT_FOLDER": str(results_root / "_trackeval"),
        "TRACKERS_TO_EVAL": trackers,
        "BENCHMARK": benchmark,
        "SPLIT_TO_EVAL": "train",
        "SKIP_SPLIT_FOL": True,
        "SEQ_INFO": seqs,
        "TRACKER_SUB_FOLDER": "data",
        "PRINT_CONFIG": False,
    }
    evaluator = trackeval.Evaluator(eval_config)
    dataset = trackeval.datasets.MotChallenge2DBox(dataset_config)
    quiet = {"PRINT_CONFIG": False}
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR(quiet),
        trackeval.metrics.Identity(quiet),
    ]
    with contextlib.redirect_stdout(io.StringIO()):  # TrackEval prints progress lines
        raw, _ = evaluator.evaluate([dataset], metrics)
    return dict(raw["MotChallenge2DBox"])


def trackeval_scores(
    gt_root: Path,
    results_root: Path,
    trackers: list[str],
    seqs: dict[str, int],
    benchmark: str = "MOT17",
) -> dict[str, dict[str, tuple[float, float, float, int]]]:
    """(HOTA, MOTA, IDF1, ID switches) per tracker and sequence (and ``COMBINED_SEQ``)."""
    raw = trackeval_raw(gt_root, results_root, trackers, seqs, benchmark)
    out: dict[str, dict[str, tuple[float, float, float, int]]] = {}
    for tracker in trackers:
        out[tracker] = {}
        for seq, res in raw[tracker].items():
            r = res["pedestrian"]
            out[tracker][seq] = (
                100.0 * float(np.mean(r["HOTA"]["HOTA"])),
                100.0 * float(r["CLEAR"]["MOTA"]),
                100.0 * float(r["Identity"]["IDF1"]),
                int(r["CLEAR"]["IDSW"]),
            )
    return out


def evaluate(data: Path = DEFAULT_DATA, include_peers: bool = True) -> Evaluation:
    """Run edgestream (and the peers) over every sequence under ``data`` and score them."""
    seq_dirs = find_sequences(Path(data))
    seqs = [load_sequence(d) for d in seq_dirs]
    peers, skipped = available_peers(include_peers)
    keys = {peer.name: f"t{i}" for i, peer in enumerate(peers)}  # folder-safe names
    time_s: dict[str, dict[str, float]] = {p.name: {} for p in peers}
    with tempfile.TemporaryDirectory(prefix="edgestream-eval-") as tmp:
        results_root = Path(tmp)
        for peer in peers:
            folder = results_root / keys[peer.name] / "data"
            folder.mkdir(parents=True)
            for seq in seqs:
                text, spent = run_tracker(peer, seq)
                (folder / f"{seq.name}.txt").write_text(text)
                time_s[peer.name][seq.name] = spent
        scores = trackeval_scores(
            Path(data),
            results_root,
            list(keys.values()),
            {s.name: s.num_frames for s in seqs},
            benchmark_of(seq_dirs[0]),
        )
    total_frames = sum(s.num_frames for s in seqs)
    combined: dict[str, Scores] = {}
    per_sequence: dict[str, dict[str, Scores]] = {}
    for peer in peers:
        res = scores[keys[peer.name]]
        per_sequence[peer.name] = {
            s.name: Scores(*res[s.name], 1000.0 * time_s[peer.name][s.name] / s.num_frames)
            for s in seqs
        }
        ms = 1000.0 * sum(time_s[peer.name].values()) / total_frames
        combined[peer.name] = Scores(*res["COMBINED_SEQ"], ms)
    return Evaluation(combined, per_sequence, skipped)


def format_table(rows: dict[str, Scores], title: str) -> str:
    head = f"{'tracker':<32} {'HOTA':>6} {'MOTA':>6} {'IDF1':>6} {'IDsw':>6} {'ms/frame':>9}"
    lines = [title, head, "-" * len(head)]
    for name, s in rows.items():
        lines.append(
            f"{name:<32} {s.hota:6.2f} {s.mota:6.2f} {s.idf1:6.2f} {s.id_switches:6d}"
            f" {s.ms_per_frame:9.3f}"
        )
    return "\n".join(lines)


def win_conditions(ev: Evaluation, ours: str = "edgestream") -> list[tuple[str, bool]]:
    """The issue's win conditions against every peer present: (description, met)."""
    me = ev.combined[ours]
    peers = {k: v for k, v in ev.combined.items() if k != ours}
    if not peers:
        return []
    best_hota = max(p.hota for p in peers.values())
    best_idf1 = max(p.idf1 for p in peers.values())
    fewest_sw = min(p.id_switches for p in peers.values())
    fastest = min(p.ms_per_frame for p in peers.values())
    return [
        (f"HOTA {me.hota:.2f} > best peer {best_hota:.2f}", me.hota > best_hota),
        (f"IDF1 {me.idf1:.2f} > best peer {best_idf1:.2f}", me.idf1 > best_idf1),
        (f"ID switches {me.id_switches} <= fewest peer {fewest_sw}", me.id_switches <= fewest_sw),
        (
            f"ms/frame {me.ms_per_frame:.3f} <= fastest peer {fastest:.3f}",
            me.ms_per_frame <= fastest,
        ),
    ]


def report(ev: Evaluation, per_sequence: bool = False) -> str:
    parts = [format_table(ev.combined, "Combined (all sequences), TrackEval MOT17 rules")]
    if per_sequence:
        seq_names = next(iter(ev.per_sequence.values())).keys()
        for seq in seq_names:
            rows = {name: by_seq[seq] for name, by_seq in ev.per_sequence.items()}
            parts.append(format_table(rows, f"\n{seq}"))
    parts.extend(ev.skipped)
    conditions = win_conditions(ev)
    if conditions:
        parts.append("\nWin conditions against the peers in this run:")
        parts.extend(f"  [{'met' if ok else 'NOT met'}] {text}" for text, ok in conditions)
    return "\n".join(parts)
