"""``edgestream track`` and ``edgestream eval-tracker``; also ``python -m stages.track.cli``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _track(args: argparse.Namespace) -> int:
    from stages.track.evaluate import run_tracker
    from stages.track.mot import load_sequence
    from stages.track.peers import edgestream_peer

    seq = load_sequence(args.seq_dir)
    text, cpu_s = run_tracker(edgestream_peer(), seq)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    ms = 1000.0 * cpu_s / max(seq.num_frames, 1)
    print(f"{args.seq_dir}: {seq.num_frames} frames, {ms:.3f} ms/frame -> {args.output}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from stages.track.evaluate import evaluate, report

    if args.cv:
        return _cv(args)
    cv_only = [f"--{n.replace('_', '-')}" for n in ("small_grid", "no_synthetic", "study", "json")]
    given = [flag for flag in cv_only if getattr(args, flag[2:].replace("-", "_"))]
    if given:
        print(f"eval-tracker: {', '.join(given)} only go with --cv", file=sys.stderr)
        return 2

    ev = evaluate(Path(args.data), include_peers=args.peers)
    print(report(ev, per_sequence=args.per_sequence))
    return 0


def _cv(args: argparse.Namespace) -> int:
    from stages.track.cv import GRID, SMALL_GRID, cross_validate, report_cv

    data = Path(args.data)
    if not any((data / sub).is_dir() for sub in ("mot17", "mot15")):
        data = data.parent  # --data pointed at mot17/ itself: use the folder holding it
    if not any((data / sub).is_dir() for sub in ("mot17", "mot15")):
        print(f"eval-tracker --cv: no mot17/ or mot15/ under {data}", file=sys.stderr)
        return 2
    if args.study:
        from stages.track.cv import remedy_study

        print(remedy_study(data))
        return 0
    result = cross_validate(
        data, SMALL_GRID if args.small_grid else GRID, synthetic=not args.no_synthetic
    )
    print(report_cv(result))
    if args.json is not None:
        import json

        args.json.write_text(json.dumps(result.to_json(), indent=1))
    return 0


def add_parsers(subparsers: Any) -> None:
    """Register ``track`` and ``eval-tracker`` on an argparse sub-parsers object."""
    from stages.track.mot import DEFAULT_DATA

    p = subparsers.add_parser(
        "track",
        help="track a MOTChallenge sequence's public detections, write MOTChallenge results",
        description="Run edgestream's tracker (product defaults) over SEQ_DIR (seqinfo.ini and "
        "det/det.txt) and write frame,id,x,y,w,h,score,-1,-1,-1 lines.",
    )
    p.add_argument("seq_dir", type=Path, metavar="SEQ_DIR")
    p.add_argument("--output", "-o", type=Path, required=True, metavar="RESULT.txt")
    p.set_defaults(func=_track)

    e = subparsers.add_parser(
        "eval-tracker",
        help="score the tracker (and peers) on MOT17 with TrackEval",
        description="Track every sequence under --data with edgestream (and, with --peers, "
        "the published Python trackers) and print HOTA, MOTA, IDF1, ID switches and ms/frame.",
    )
    e.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder of MOTChallenge sequences (default: ../shared/data/mot17 from the repo)",
    )
    e.add_argument(
        "--peers",
        action="store_true",
        help="also run supervision ByteTrack and roboflow trackers ByteTrack / OC-SORT",
    )
    e.add_argument("--per-sequence", action="store_true", help="print a table per sequence")
    e.add_argument(
        "--cv",
        action="store_true",
        help="leave-one-sequence-out cross-validation of the defaults over mot17/, mot15/ (in "
        "--data or its parent) and synthetic scenes, with the peers: prints held-out and "
        "in-sample HOTA/IDF1/IDsw per sequence and the setting it would choose",
    )
    e.add_argument(
        "--small-grid", action="store_true", help="with --cv: the small grid CI runs (a minute)"
    )
    e.add_argument("--no-synthetic", action="store_true", help="with --cv: real sequences only")
    e.add_argument(
        "--study",
        action="store_true",
        help="with --cv: held-out effect of switching off each remedy already in the tracker",
    )
    e.add_argument("--json", type=Path, metavar="FILE", help="with --cv: write every score here")
    e.set_defaults(func=_eval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.track.cli")
    add_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
