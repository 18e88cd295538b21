"""Choose the tracker's defaults by leave-one-sequence-out cross-validation
(``edgestream eval-tracker --cv``).

Every setting in a small grid (`GRID`, around published defaults) tracks every sequence we have
— the MOT17 train sequences and the two MOT15 TUD ones in ``../shared/data``, and synthetic
scenes (`stages.track.synthetic`) — and TrackEval scores each (sequence, setting). On each
sequence the settings are ranked by HOTA, by IDF1 and by ID switches; a setting's rank there is
the mean of the three (scale free, so a short TUD clip weighs as much as MOT17-04).

Choosing on a set of sequences: mean rank over those sequences, then *smoothed over the grid*
(the mean of the setting's own value and its neighbours', a neighbour differing in one parameter
by one grid step). A sharp optimum with poor neighbours loses to a flat region: the chosen
setting is near-optimal over a range of each parameter, which is what survives a new camera.

Held-out scores: for each sequence, choose on all the *others* and score the choice on it. The
peers run with their package defaults (nothing of theirs is tuned), so their scores are held
out by construction. The product defaults (`TrackerConfig`) are the choice on all sequences;
the report says whether they still are.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from stages.track.config import TrackerConfig
from stages.track.evaluate import (
    Scores,
    benchmark_of,
    find_sequences,
    run_tracker,
    trackeval_scores,
)
from stages.track.mot import load_sequence
from stages.track.peers import Peer, available_peers, edgestream_peer
from stages.track.synthetic import write_cv_scenes

# The search: a few parameters with published anchors, each over 2-4 values. Small on purpose
# (the more settings a search tries, the more it fits the noise of the sequences it sees).
GRID: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("high_score", (0.5, 0.6, 0.7)),  # ByteTrack's track_thresh 0.6 (0.5 on MOT17 in the paper)
    ("match_iou", (0.2, 0.25, 0.3, 0.35)),  # ByteTrack 0.2 (score-fused IoU), OC-SORT 0.3
    ("lost_track_seconds", (1.0, 2.0)),  # ByteTrack / OC-SORT keep a lost track 30 frames
    ("min_hits", (2, 3)),  # confirmation by age: ByteTrack 2 (trackers), OC-SORT/SORT 3
    ("camera_motion", (False, True)),  # a remedy (see REMEDIES)
)
"""(field, values). ``new_track_score`` follows ``high_score`` + 0.1 (ByteTrack's rule)."""

REMEDIES: tuple[str, ...] = ("camera_motion",)
"""On/off fields of the grid that are design decisions rather than thresholds. Each is decided
first, by the held-out scores of the whole procedure with it pinned off and pinned on (the
search runs over the rest both times): on if that is better on at least two of held-out mean
HOTA, mean IDF1 and summed ID switches. The thresholds are then chosen with it pinned. (A free
search would let one sequence's absence flip a remedy that helps on the held-out whole.)"""

SMALL_GRID: tuple[tuple[str, tuple[object, ...]], ...] = (
    ("high_score", (0.6, 0.7)),
    ("min_hits", (2, 3)),
    ("camera_motion", (False, True)),
)
"""A cut of `GRID` through the defaults, for CI (about a minute): the same procedure re-run."""


@dataclass(frozen=True)
class SequenceSet:
    """Sequences sharing a ground-truth folder and TrackEval benchmark rules."""

    gt_root: Path
    benchmark: str
    dirs: tuple[Path, ...]


def cv_sets(shared_data: Path, synth_root: Path | None) -> list[SequenceSet]:
    """MOT17 and MOT15 under ``shared_data`` (each when present) and, if ``synth_root`` is
    given, the synthetic scenes written there."""
    sets = []
    for sub in ("mot17", "mot15"):
        root = shared_data / sub
        if root.is_dir():
            dirs = tuple(find_sequences(root))
            sets.append(SequenceSet(root, benchmark_of(dirs[0]), dirs))
    if synth_root is not None:
        dirs = tuple(write_cv_scenes(synth_root))
        sets.append(SequenceSet(synth_root, "MOT17", dirs))
    if not sets:
        raise FileNotFoundError(f"no mot17/ or mot15/ sequences under {shared_data}")
    return sets


def grid_configs(
    grid: tuple[tuple[str, tuple[object, ...]], ...], base: TrackerConfig | None = None
) -> tuple[list[TrackerConfig], list[tuple[int, ...]]]:
    """Every setting of ``grid`` applied to ``base`` (default: the product defaults), with its
    index tuple into the grid."""
    base = base or TrackerConfig()
    configs, index = [], []
    for idx in itertools.product(*(range(len(values)) for _, values in grid)):
        changes = {name: values[i] for (name, values), i in zip(grid, idx, strict=True)}
        if "high_score" in changes:
            changes["new_track_score"] = min(1.0, float(changes["high_score"]) + 0.1)  # type: ignore[arg-type]
        configs.append(TrackerConfig(**{**base.model_dump(), **changes}))
        index.append(idx)
    return configs, index


def score_all(
    peers: list[Peer], sets: list[SequenceSet], progress: bool = False
) -> dict[str, dict[str, Scores]]:
    """``[peer name][sequence]`` TrackEval scores of every peer on every sequence."""
    keys = {peer.name: f"t{i}" for i, peer in enumerate(peers)}
    out: dict[str, dict[str, Scores]] = {p.name: {} for p in peers}
    with tempfile.TemporaryDirectory(prefix="edgestream-cv-") as tmp:
        for set_no, seq_set in enumerate(sets):
            seqs = [load_sequence(d) for d in seq_set.dirs]
            results_root = Path(tmp) / f"set{set_no}"
            spent: dict[str, dict[str, float]] = {p.name: {} for p in peers}
            t0 = time.monotonic()
            for n, peer in enumerate(peers):
                folder = results_root / keys[peer.name] / "data"
                folder.mkdir(parents=True)
                for seq in seqs:
                    text, cpu_s = run_tracker(peer, seq)
                    (folder / f"{seq.name}.txt").write_text(text)
                    spent[peer.name][seq.name] = cpu_s
                if progress and (n + 1) % 20 == 0:
                    print(
                        f"  {seq_set.gt_root.name}: tracked {n + 1}/{len(peers)}", file=sys.stderr
                    )
            scores = trackeval_scores(
                seq_set.gt_root,
                results_root,
                list(keys.values()),
                {s.name: s.num_frames for s in seqs},
                seq_set.benchmark,
            )
            if progress:
                print(
                    f"  {seq_set.gt_root.name}: {len(peers)} trackers x {len(seqs)} sequences "
                    f"in {time.monotonic() - t0:.0f} s",
                    file=sys.stderr,
                )
            for peer in peers:
                for seq in seqs:
                    ms = 1000.0 * spent[peer.name][seq.name] / max(seq.num_frames, 1)
                    out[peer.name][seq.name] = Scores(*scores[keys[peer.name]][seq.name], ms)
    return out


def sequence_ranks(scores: list[dict[str, Scores]], seqs: list[str]) -> np.ndarray:
    """(settings, sequences) rank of each setting on each sequence: the mean of its ranks by
    HOTA (high first), IDF1 (high first) and ID switches (few first); 1 is best, ties share."""
    from scipy.stats import rankdata

    ranks = np.zeros((len(scores), len(seqs)))
    for j, seq in enumerate(seqs):
        hota = np.array([-s[seq].hota for s in scores])
        idf1 = np.array([-s[seq].idf1 for s in scores])
        idsw = np.array([s[seq].id_switches for s in scores], dtype=float)
        ranks[:, j] = (rankdata(hota) + rankdata(idf1) + rankdata(idsw)) / 3.0
    return ranks


def neighbours(index: list[tuple[int, ...]]) -> list[list[int]]:
    """For each setting, the settings one grid step away in one parameter."""
    where = {idx: n for n, idx in enumerate(index)}
    out = []
    for idx in index:
        near = []
        for k in range(len(idx)):
            for step in (-1, 1):
                other = (*idx[:k], idx[k] + step, *idx[k + 1 :])
                if other in where:
                    near.append(where[other])
        out.append(near)
    return out


def smoothed(mean_rank: np.ndarray, near: list[list[int]]) -> np.ndarray:
    """Mean rank averaged with the neighbours' (flat regions win over sharp optima)."""
    return np.array([np.mean(mean_rank[[n, *nb]]) for n, nb in enumerate(near)])


def choose(ranks: np.ndarray, columns: list[int], near: list[list[int]]) -> int:
    """The setting with the best smoothed mean rank over ``columns`` (first on ties)."""
    return int(np.argmin(smoothed(ranks[:, columns].mean(axis=1), near)))


@dataclass(frozen=True)
class CvResult:
    sequences: list[str]
    grid: tuple[tuple[str, tuple[object, ...]], ...]
    configs: list[TrackerConfig]
    index: list[tuple[int, ...]]
    config_scores: list[dict[str, Scores]]  # per setting, per sequence
    peer_scores: dict[str, dict[str, Scores]]  # per peer, per sequence
    held_out_choice: dict[str, int]  # sequence -> setting chosen without it
    final: int  # setting chosen on every sequence
    final_smoothed: np.ndarray  # smoothed mean rank of every setting on every sequence
    defaults: int | None  # the setting equal to TrackerConfig(), if in the grid
    skipped: list[str]
    pinned: dict[int, int] = field(default_factory=dict)  # remedy grid index -> value index

    def to_json(self) -> dict[str, object]:
        """Every score of the run (for the record and for re-analysis without re-running)."""
        return {
            "sequences": self.sequences,
            "grid": [[name, list(values)] for name, values in self.grid],
            "settings": [
                {
                    "index": list(idx),
                    "scores": {s: list(v.__dict__.values()) for s, v in sc.items()},
                }
                for idx, sc in zip(self.index, self.config_scores, strict=True)
            ],
            "peers": {
                n: {s: list(v.__dict__.values()) for s, v in rows.items()}
                for n, rows in self.peer_scores.items()
            },
            "held_out_choice": self.held_out_choice,
            "final": self.final,
            "defaults": self.defaults,
        }

    def held_out(self) -> dict[str, Scores]:
        return {s: self.config_scores[self.held_out_choice[s]][s] for s in self.sequences}


def cross_validate(
    shared_data: Path,
    grid: tuple[tuple[str, tuple[object, ...]], ...] = GRID,
    synthetic: bool = True,
    include_peers: bool = True,
    progress: bool = True,
    base: TrackerConfig | None = None,
) -> CvResult:
    """Run the grid (over ``base``, default the product defaults) and the peers over every
    sequence, then leave one sequence out at a time."""
    configs, index = grid_configs(grid, base)
    with tempfile.TemporaryDirectory(prefix="edgestream-synth-") as synth_tmp:
        sets = cv_sets(Path(shared_data), Path(synth_tmp) if synthetic else None)
        seqs = [d.name for s in sets for d in s.dirs]
        peers, skipped = available_peers(include_peers)
        peers = peers[1:]  # edgestream runs once per grid setting instead
        runs = [replace(edgestream_peer(c), name=f"edgestream#{n}") for n, c in enumerate(configs)]
        if progress:
            print(
                f"cross-validation: {len(configs)} settings, {len(seqs)} sequences", file=sys.stderr
            )
        scores = score_all(runs + peers, sets, progress)
    config_scores = [scores[r.name] for r in runs]
    defaults = next((n for n, c in enumerate(configs) if c == TrackerConfig()), None)
    result = CvResult(
        sequences=seqs,
        grid=grid,
        configs=configs,
        index=index,
        config_scores=config_scores,
        peer_scores={p.name: scores[p.name] for p in peers},
        held_out_choice={},
        final=-1,
        final_smoothed=np.zeros(0),
        defaults=defaults,
        skipped=skipped,
    )
    return decide(result)


def decide(result: CvResult) -> CvResult:
    """Decide the remedies (`REMEDIES`) by held-out ablation, then run leave-one-out over the
    settings with them pinned; the final choice is among those settings too."""
    pinned: dict[int, int] = {}
    for k, (name, values) in enumerate(result.grid):
        if name not in REMEDIES or set(values) != {False, True}:
            continue
        off = _pinned_held_out(result, {**pinned, k: values.index(False)})
        on = _pinned_held_out(result, {**pinned, k: values.index(True)})
        wins = (on[0] > off[0]) + (on[1] > off[1]) + (on[2] < off[2])
        pinned[k] = values.index(wins >= 2)
    keep = _settings_with(result, pinned)
    sub_index = [result.index[n] for n in keep]
    held, final, sm = leave_one_out(
        [result.config_scores[n] for n in keep], sub_index, result.sequences
    )
    final_smoothed = np.full(len(result.configs), np.inf)
    final_smoothed[keep] = sm
    return replace(
        result,
        held_out_choice={s: keep[n] for s, n in held.items()},
        final=keep[final],
        final_smoothed=final_smoothed,
        pinned=pinned,
    )


def _settings_with(result: CvResult, pinned: dict[int, int]) -> list[int]:
    return [n for n, idx in enumerate(result.index) if all(idx[k] == v for k, v in pinned.items())]


def _pinned_held_out(result: CvResult, pinned: dict[int, int]) -> tuple[float, float, int]:
    """Held-out means (HOTA, IDF1, IDsw sum) of leave-one-out over the settings with
    ``pinned`` grid parameters (index -> value index)."""
    keep = _settings_with(result, pinned)
    held, _, _ = leave_one_out(
        [result.config_scores[n] for n in keep], [result.index[n] for n in keep], result.sequences
    )
    return _mean({s: result.config_scores[keep[held[s]]][s] for s in result.sequences})


def leave_one_out(
    config_scores: list[dict[str, Scores]], index: list[tuple[int, ...]], seqs: list[str]
) -> tuple[dict[str, int], int, np.ndarray]:
    """(setting chosen without each sequence, setting chosen on all, smoothed mean ranks)."""
    ranks = sequence_ranks(config_scores, seqs)
    near = neighbours(index)
    held = {
        s: choose(ranks, [k for k in range(len(seqs)) if k != j], near) for j, s in enumerate(seqs)
    }
    everything = list(range(len(seqs)))
    return held, choose(ranks, everything, near), smoothed(ranks.mean(axis=1), near)


def ablations(result: CvResult) -> list[tuple[str, tuple[float, float, int]]]:
    """Held-out means (HOTA, IDF1, IDsw sum) of the whole procedure with each parameter of the
    grid pinned to each of its values (the search runs over the rest, remedies as decided):
    what a remedy or a value is worth on sequences the choice never saw."""
    out = [("as chosen", _mean(result.held_out()))]
    for k, (name, values) in enumerate(result.grid):
        for v, value in enumerate(values):
            base = {} if name in REMEDIES else {j: i for j, i in result.pinned.items() if j != k}
            out.append((f"{name}={value}", _pinned_held_out(result, {**base, k: v})))
    return out


def _setting(result: CvResult, n: int) -> str:
    return ", ".join(
        f"{name}={values[i]}"
        for (name, values), i in zip(result.grid, result.index[n], strict=True)
    )


def _mean(rows: dict[str, Scores]) -> tuple[float, float, int]:
    vals = list(rows.values())
    return (
        float(np.mean([s.hota for s in vals])),
        float(np.mean([s.idf1 for s in vals])),
        int(sum(s.id_switches for s in vals)),
    )


def table(columns: dict[str, dict[str, Scores]], seqs: list[str], title: str) -> str:
    """Per-sequence HOTA / IDF1 / IDsw, one column group per tracker, and the mean (IDsw: sum)."""
    names = list(columns)
    head = f"{'sequence':<16}" + "".join(f" | {n[:24]:^24}" for n in names)
    sub = f"{'':<16}" + "".join(f" | {'HOTA':>7} {'IDF1':>7} {'IDsw':>8}" for _ in names)
    lines = [title, head, sub, "-" * len(sub)]
    for seq in seqs:
        row = f"{seq:<16}"
        for n in names:
            s = columns[n][seq]
            row += f" | {s.hota:7.2f} {s.idf1:7.2f} {s.id_switches:8d}"
        lines.append(row)
    row = f"{'mean (IDsw sum)':<16}"
    for n in names:
        h, i, sw = _mean({s: columns[n][s] for s in seqs})
        row += f" | {h:7.2f} {i:7.2f} {sw:8d}"
    lines.append(row)
    return "\n".join(lines)


def cv_conditions(result: CvResult) -> list[tuple[str, bool]]:
    """The issue's held-out conditions: mean held-out HOTA and IDF1 above every peer's, summed
    ID switches at or below the best peer's."""
    if not result.peer_scores:
        return []
    me = _mean(result.held_out())
    peers = {n: _mean(rows) for n, rows in result.peer_scores.items()}
    best_h = max(p[0] for p in peers.values())
    best_i = max(p[1] for p in peers.values())
    fewest = min(p[2] for p in peers.values())
    return [
        (f"held-out mean HOTA {me[0]:.2f} > best peer {best_h:.2f}", me[0] > best_h),
        (f"held-out mean IDF1 {me[1]:.2f} > best peer {best_i:.2f}", me[1] > best_i),
        (f"held-out ID switches {me[2]} <= fewest peer {fewest}", me[2] <= fewest),
    ]


def report_cv(result: CvResult) -> str:
    seqs = result.sequences
    held = {"edgestream (held out)": result.held_out(), **result.peer_scores}
    parts = [
        table(
            held,
            seqs,
            "Held-out (leave one sequence out): edgestream with the setting chosen "
            "on the other sequences; peers with their package defaults",
        ),
        "",
        "Setting chosen for each held-out sequence (on the others):",
    ]
    for s in seqs:
        parts.append(f"  {s:<16} {_setting(result, result.held_out_choice[s])}")
    for k, v in result.pinned.items():
        name, values = result.grid[k]
        parts.append(f"Remedy {name}: {values[v]} (held-out ablation below)")
    order = np.argsort(result.final_smoothed, kind="stable")
    parts.append(
        f"\nChosen on all {len(seqs)} sequences (smoothed mean rank, lower is better; "
        f"{len(result.configs)} settings):"
    )
    for n in order[:5]:
        parts.append(f"  {result.final_smoothed[n]:6.2f}  {_setting(result, int(n))}")
    if result.defaults is None:
        parts.append("  TrackerConfig() is not in the grid")
    elif result.defaults == result.final:
        parts.append("  = TrackerConfig() (the product defaults)")
    else:
        value = result.final_smoothed[result.defaults]
        where = f"smoothed {value:.2f}" if np.isfinite(value) else "a remedy is set otherwise"
        parts.append(
            f"  TrackerConfig() differs: {_setting(result, result.defaults)} ({where}): "
            "change the defaults in stages/track/config.py"
        )
    if result.defaults is not None:
        insample = {
            "edgestream (defaults, in-sample)": result.config_scores[result.defaults],
            **result.peer_scores,
        }
        parts.extend(
            ["", table(insample, seqs, "In-sample: the product defaults on every sequence")]
        )
    parts.append("\nHeld-out means with one parameter pinned (the search runs over the rest):")
    parts.append(f"  {'':<32} {'HOTA':>7} {'IDF1':>7} {'IDsw':>6}")
    for label, (h, i, sw) in ablations(result):
        parts.append(f"  {label:<32} {h:7.2f} {i:7.2f} {sw:6d}")
    parts.extend(result.skipped)
    conditions = cv_conditions(result)
    if conditions:
        parts.append("\nHeld-out conditions against the peers:")
        parts.extend(f"  [{'met' if ok else 'NOT met'}] {text}" for text, ok in conditions)
    return "\n".join(parts)


def load_json(path: Path) -> CvResult:
    """A `CvResult` back from ``--json`` output (re-analysis without re-running)."""
    import json

    raw = json.loads(Path(path).read_text())
    grid = tuple((name, tuple(values)) for name, values in raw["grid"])
    configs, index = grid_configs(grid)
    seqs = raw["sequences"]

    def rows(d: dict[str, list[float]]) -> dict[str, Scores]:
        return {s: Scores(v[0], v[1], v[2], int(v[3]), v[4]) for s, v in d.items()}

    config_scores = [rows(item["scores"]) for item in raw["settings"]]
    return decide(
        CvResult(
            sequences=seqs,
            grid=grid,
            configs=configs,
            index=index,
            config_scores=config_scores,
            peer_scores={n: rows(d) for n, d in raw["peers"].items()},
            held_out_choice={},
            final=-1,
            final_smoothed=np.zeros(0),
            defaults=next((n for n, c in enumerate(configs) if c == TrackerConfig()), None),
            skipped=[],
        )
    )


STUDY: tuple[tuple[str, dict[str, object]], ...] = (
    ("as configured", {}),
    ("OC-SORT direction consistency off", {"direction_weight": 0.0}),
    ("OC-SORT last-box recovery off", {"last_box_match_iou": 1.0}),
    ("OC-SORT re-update off", {"observation_recovery": False}),
)
"""Remedies already in the tracker, each switched off on top of the defaults (``--study``)."""


def remedy_study(
    shared_data: Path, grid: tuple[tuple[str, tuple[object, ...]], ...] = SMALL_GRID
) -> str:
    """Held-out means of the whole procedure (leave-one-out over ``grid``, remedies decided as
    in `decide`) with each of `STUDY`'s changes applied to the defaults: does every remedy
    already in the tracker still earn its place on sequences the choice never saw?"""
    lines = [f"  {'':<36} {'HOTA':>7} {'IDF1':>7} {'IDsw':>6}"]
    for label, changes in STUDY:
        base = TrackerConfig(**{**TrackerConfig().model_dump(), **changes})
        result = cross_validate(shared_data, grid, include_peers=False, base=base)
        h, i, sw = _mean(result.held_out())
        lines.append(f"  {label:<36} {h:7.2f} {i:7.2f} {sw:6d}")
    return (
        "Held-out means, leave-one-out over the small grid, each change on the defaults:\n"
        + "\n".join(lines)
    )
