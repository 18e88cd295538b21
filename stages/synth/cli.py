"""`edgestream synth`: write synthetic videos with MOT ground truth and a YOLO dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stages.synth.writer import write_video_set


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: expected WIDTHxHEIGHT, e.g. 640x384"
        ) from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be even and >= 64")
    return w, h


DESCRIPTION = (
    "Deterministic synthetic street scenes (person, car, bicycle). Writes OUT/videos/*.mp4 "
    "(H.264), OUT/mot/<name>/{seqinfo.ini,gt/gt.txt} (MOTChallenge; classes 1 person, "
    "2 rider, 3 car, 4 bicycle), OUT/dataset/{train,val}/{images,labels} (YOLO; 0 person, "
    "1 car, 2 bicycle; decoded H.264 frames) and OUT/dataset/data.yaml."
)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write synthetic multi-object videos with ground truth",
        description=DESCRIPTION,
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="scene set seed (default 0)")
    p.add_argument("--videos", type=int, default=4, help="number of videos (default 4)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each video in s")
    p.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    p.add_argument("--size", type=parse_size, default=(640, 384), help="WIDTHxHEIGHT (640x384)")
    p.add_argument("--every", type=int, default=5, help="dataset: keep every K-th frame (5)")
    p.add_argument("--val-videos", type=int, default=1, help="last N videos go to dataset/val (1)")
    p.add_argument(
        "--split",
        default="train",
        choices=["train", "val", "test"],
        help="dataset split of the other videos (default train)",
    )
    p.add_argument("--max-objects", type=int, default=12, help="objects alive at once (12)")
    p.add_argument("--crf", type=int, default=None, help="x264 CRF (default: 23..32 per video)")
    p.add_argument("--no-dataset", action="store_true", help="videos and MOT gt only")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    summary = write_video_set(
        args.out,
        seed=args.seed,
        videos=args.videos,
        seconds=args.seconds,
        fps=args.fps,
        size=args.size,
        every=args.every,
        val_videos=args.val_videos,
        split=args.split,
        max_objects=args.max_objects,
        dataset=not args.no_dataset,
        crf=args.crf,
        progress=True,
    )
    totals = " ".join(f"{k}={v}" for k, v in sorted(summary.totals().items()))
    took = time.perf_counter() - t0
    print(f"wrote {len(summary.videos)} videos to {args.out} in {took:.1f} s: {totals}")
    return 0
