"""`edgestream train`: train or fine-tune YOLO-NAS on a YOLO- or COCO-format dataset."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.models_registry import weights_arg

ARCH_CHOICES = ("yolo_nas_n", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l")


def add_parsers(subparsers: Any) -> None:
    """Add ``train`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune YOLO-NAS on a YOLO-format or COCO-format dataset",
        description="Train YOLO-NAS (varifocal + GIoU + DFL loss, task-aligned assignment, EMA, "
        "cosine LR) and write super-gradients checkpoints (ckpt_best.pth, ckpt_latest.pth) "
        "that `edgestream detect --weights` and super-gradients load. Periodic mAP@0.5 and "
        "mAP@0.5:0.95 on the val split (pycocotools) through the real inference path.",
    )
    p.add_argument("--data", required=True, help="YOLO data.yaml, or a COCO train instances .json")
    p.add_argument("--val", help="COCO val instances .json (with a COCO --data)")
    p.add_argument("--output", type=Path, default=Path("runs/train"), help="checkpoint folder")
    p.add_argument("--arch", choices=ARCH_CHOICES, default="yolo_nas_n")
    p.add_argument("--imgsz", type=int, default=320, help="square input side, multiple of 32")
    p.add_argument(
        "--train-hw",
        type=_hw,
        help="training canvas HxW (multiples of 32) when not the square input, e.g. 224x320 "
        "for 5:3 frames: same object scale as inference, no compute on padding",
    )
    p.add_argument("--cache", action="store_true", help="keep decoded training images in memory")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--warmup-steps", type=int, default=300)
    p.add_argument("--final-lr-ratio", type=float, default=0.05)
    p.add_argument("--ema-decay", type=float, default=0.9997)
    p.add_argument("--workers", type=int, default=1, help="data loader processes (0: inline)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--init",
        type=weights_arg,
        help="checkpoint to fine-tune from (e.g. a super-gradients COCO one, or a name from "
        "`edgestream models`)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="continue OUTPUT/ckpt_latest.pth (or the given checkpoint)",
    )
    p.add_argument("--eval-every", type=int, default=1, help="epochs between validations")
    p.add_argument("--eval-images", type=int, default=0, help="cap for periodic validation")
    p.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock budget (0: none)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps")
    p.add_argument(
        "--time-schedule",
        action="store_true",
        help="fit the cosine LR schedule into --max-minutes too (whichever ends first)",
    )
    p.add_argument("--mosaic", type=float, default=0.0, help="probability of a 4-image mosaic")
    p.add_argument("--scale", type=float, default=0.4, help="random zoom range +-")
    p.add_argument("--translate", type=float, default=0.1)
    p.add_argument("--flip", type=float, default=0.5)
    p.add_argument("--no-hsv", action="store_true", help="no colour jitter")
    p.add_argument(
        "--export", type=Path, help="also write the best EMA weights (FP16) here when done"
    )
    p.add_argument(
        "--evaluate",
        type=Path,
        metavar="WEIGHTS",
        help="no training: print mAP of WEIGHTS on a split of --data (--split) and exit",
    )
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH, e.g. 224x320") from None
    return h, w


def cmd_train(args: argparse.Namespace) -> int:
    from stages.detect.train.data import Augment, DatasetError
    from stages.detect.train.trainer import TrainConfig, export_weights, train

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.evaluate:
        return _evaluate(args)
    hsv = (0.0, 0.0, 0.0) if args.no_hsv else (0.015, 0.5, 0.4)
    cfg = TrainConfig(
        data=args.data,
        val=args.val,
        output=str(args.output),
        arch=args.arch,
        imgsz=args.imgsz,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        optimizer=args.optimizer,
        warmup_steps=args.warmup_steps,
        final_lr_ratio=args.final_lr_ratio,
        ema_decay=args.ema_decay,
        workers=args.workers,
        threads=args.threads,
        seed=args.seed,
        init=None if args.init is None else str(args.init),
        resume=args.resume,
        eval_every=args.eval_every,
        eval_images=args.eval_images,
        max_minutes=args.max_minutes,
        max_steps=args.max_steps,
        train_hw=args.train_hw,
        cache=args.cache,
        time_schedule=args.time_schedule,
        augment=Augment(*hsv, args.flip, args.scale, args.translate, args.mosaic),
        progress=not args.no_progress,
    )
    try:
        result = train(cfg)
    except (DatasetError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    last = next((e for e in reversed(result.epochs) if e.metrics), None)
    print(
        f"done in {result.wall_seconds / 60:.1f} min; best: {result.best}; latest: {result.latest}"
        + (f"; last validation: {last.metrics}" if last else ""),
        file=sys.stderr,
    )
    if args.export:
        print(f"wrote {export_weights(result.best, args.export)}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import time

    import torch

    from stages.detect.train.data import DatasetError, load_dataset
    from stages.detect.train.evaluate import evaluate
    from stages.detect.weights import WeightsError, load_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        model, info = load_model(args.evaluate)
        data = load_dataset(args.data, args.val)
    except (DatasetError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if data.class_names != info.class_names:
        print(
            f"warning: the weights' classes {info.class_names} differ from the data's "
            f"{data.class_names}",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    try:
        samples = data.split(args.split)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = evaluate(model, samples, info)
    took = time.perf_counter() - t0
    print(f"{args.evaluate} on {args.data} ({args.split}): {metrics} in {took:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m stages.detect.train.cli``) until the lead wires it in."""
    parser = argparse.ArgumentParser(prog="edgestream")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
