"""Leave-one-sequence-out selection (`stages.track.cv`): ranks, flat-optimum smoothing, held-out
choice, and the grid around the product defaults. The full runs are in test_eval_mot17.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.track.config import TrackerConfig
from stages.track.cv import (
    GRID,
    SMALL_GRID,
    choose,
    grid_configs,
    neighbours,
    sequence_ranks,
    smoothed,
)
from stages.track.evaluate import Scores, benchmark_of
from stages.track.mot import load_sequence
from stages.track.synthetic import write_scene


def scores(hota: float, idf1: float, idsw: int) -> Scores:
    return Scores(hota, 0.0, idf1, idsw, 0.0)


def test_ranks_combine_hota_idf1_and_id_switches() -> None:
    table = [
        {"A": scores(50, 60, 10)},  # best HOTA and IDF1, most switches
        {"A": scores(49, 59, 2)},  # fewest switches
        {"A": scores(40, 50, 5)},
    ]
    ranks = sequence_ranks(table, ["A"])
    np.testing.assert_allclose(ranks[:, 0], [(1 + 1 + 3) / 3, (2 + 2 + 1) / 3, (3 + 3 + 2) / 3])


def test_a_flat_region_beats_a_sharp_optimum() -> None:
    """One parameter over five values: value 1 is best alone but its neighbours are the worst;
    values 3 and 4 are a little worse but good together. Smoothing picks the flat region."""
    index = [(k,) for k in range(5)]
    near = neighbours(index)
    assert near[0] == [1] and near[2] == [1, 3]
    mean_rank = np.array([5.0, 1.0, 5.0, 2.0, 2.0])
    assert int(np.argmin(mean_rank)) == 1
    assert int(np.argmin(smoothed(mean_rank, near))) in (3, 4)


def test_the_held_out_sequence_does_not_vote() -> None:
    """Sequence 0 loves setting 0; sequences 1 and 2 prefer setting 1. Held out, sequence 0
    gets setting 1; with everything in, setting 1 still wins (two votes to one)."""
    near: list[list[int]] = [[], []]  # no smoothing: two unrelated settings
    ranks = np.array([[1.0, 2.0, 2.0], [2.0, 1.0, 1.0]])
    assert choose(ranks, [1, 2], near) == 1
    assert choose(ranks, [0], near) == 0
    assert choose(ranks, [0, 1, 2], near) == 1


def test_grid_settings_follow_bytetracks_birth_rule_and_hold_the_defaults() -> None:
    configs, index = grid_configs(GRID)
    assert len(configs) == int(np.prod([len(v) for _, v in GRID])) == len(index)
    for c in configs:
        assert c.new_track_score == min(1.0, c.high_score + 0.1)
    assert TrackerConfig() in configs  # the product defaults are one of the settings searched
    small, _ = grid_configs(SMALL_GRID)
    assert TrackerConfig() in small
    assert all(c in configs for c in small)  # CI's grid is a cut through the full one


def test_synthetic_scene_is_a_deterministic_mot_sequence(tmp_path: Path) -> None:
    """The synthetic scenes load like MOT17 ones, repeat exactly, and their simulated detector
    finds most visible people and few others."""
    a = write_scene(tmp_path / "a", seed=5, max_objects=12, seconds=2.0)
    b = write_scene(tmp_path / "b", seed=5, max_objects=12, seconds=2.0)
    assert (a / "det" / "det.txt").read_bytes() == (b / "det" / "det.txt").read_bytes()
    assert benchmark_of(a) == "MOT17"
    seq = load_sequence(a)
    assert seq.num_frames == 50 and seq.frame_rate_hz == 25.0
    gt = np.loadtxt(a / "gt" / "gt.txt", delimiter=",", ndmin=2)
    visible_people = gt[(gt[:, 7] <= 2) & (gt[:, 8] >= 0.6)]
    dets = seq.detections
    assert 0.6 * len(visible_people) < len(dets) < 1.3 * len(gt[gt[:, 7] <= 2])
