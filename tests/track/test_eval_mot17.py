"""TrackEval on the four MOT17 sequences: edgestream's floors, and the win over the peers.

Slow (runs every tracker over ~3000 frames and TrackEval); CI runs it, ``-m 'not slow'`` skips it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from stages.track.evaluate import Evaluation, evaluate, win_conditions

pytestmark = pytest.mark.slow

# Measured with the product defaults on the four sequences (HOTA 49.x, IDF1 58.x); a little
# below, so a real regression fails and noise does not.
HOTA_FLOOR = 48.5
IDF1_FLOOR = 57.0

PEERS = ("trackers", "supervision")


def _mot17(shared_data: Path, require: Callable[[str | None], None]) -> Path:
    data = shared_data / "mot17"
    require(None if data.is_dir() else f"MOT17 sequences not found at {data}")
    if importlib.util.find_spec("trackeval") is None:
        pytest.skip("trackeval is not installed (pip install trackeval)")
    return data


@pytest.fixture(scope="module")
def with_peers(shared_data: Path, require: Callable[[str | None], None]) -> Evaluation:
    data = _mot17(shared_data, require)
    missing = [p for p in PEERS if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(
            f"peers not installed ({', '.join(missing)}): pip install trackers==2.6.1 "
            "supervision==0.30.9"
        )
    return evaluate(data, include_peers=True)


def test_edgestream_floors(shared_data: Path, require: Callable[[str | None], None]) -> None:
    ev = evaluate(_mot17(shared_data, require), include_peers=False)
    ours = ev.combined["edgestream"]
    assert ours.hota >= HOTA_FLOOR, ours
    assert ours.idf1 >= IDF1_FLOOR, ours
    assert len(ev.per_sequence["edgestream"]) == 4


def test_beats_every_peer(with_peers: Evaluation) -> None:
    """HOTA, IDF1 and ID switches are deterministic and asserted here. The speed condition is
    measured and printed by ``tests/bench/track_eval.py``, not asserted: CI machines are shared
    and a timing assertion would fail on noise, not on a regression."""
    assert len(with_peers.combined) == 4, with_peers.skipped  # edgestream + three peers
    conditions = win_conditions(with_peers)
    assert len(conditions) == 4
    failed = [text for text, ok in conditions if not ok and not text.startswith("ms/frame")]
    assert not failed, failed
