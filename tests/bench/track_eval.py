"""Score edgestream's tracker against the published Python trackers (TrackEval).

    python tests/bench/track_eval.py [--data ../shared/data/mot17] [--no-peers] [--per-sequence]
    python tests/bench/track_eval.py --cv [--small-grid] [--json FILE]

The first form is ``edgestream eval-tracker --peers`` (in-sample: the defaults on the sequences
they were chosen on, with ms/frame); ``--cv`` is ``edgestream eval-tracker --cv``: leave one
sequence out over MOT17, MOT15 and synthetic scenes, held-out and in-sample tables with the
peers. See stages/track/evaluate.py and stages/track/cv.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stages.track.evaluate import evaluate, report
from stages.track.mot import DEFAULT_DATA


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--no-peers", action="store_true", help="edgestream only")
    parser.add_argument("--per-sequence", action="store_true")
    parser.add_argument("--cv", action="store_true", help="leave-one-sequence-out (held out)")
    parser.add_argument("--small-grid", action="store_true", help="with --cv: CI's grid")
    parser.add_argument("--json", type=Path, help="with --cv: write every score here")
    args = parser.parse_args()
    if args.cv:
        from stages.track.cli import main as cli_main

        argv = ["eval-tracker", "--cv", "--data", str(args.data)]
        argv += ["--small-grid"] if args.small_grid else []
        argv += ["--json", str(args.json)] if args.json else []
        return cli_main(argv)
    ev = evaluate(args.data, include_peers=not args.no_peers)
    print(report(ev, per_sequence=args.per_sequence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
