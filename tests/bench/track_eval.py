"""Score edgestream's tracker against the published Python trackers on MOT17 (TrackEval).

    python tests/bench/track_eval.py [--data ../shared/data/mot17] [--no-peers] [--per-sequence]

Same as ``edgestream eval-tracker --peers``; see stages/track/evaluate.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stages.track.evaluate import DEFAULT_DATA, evaluate, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-peers", action="store_true", help="edgestream only")
    parser.add_argument("--per-sequence", action="store_true")
    args = parser.parse_args()
    ev = evaluate(args.data, include_peers=not args.no_peers)
    print(report(ev, per_sequence=args.per_sequence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
