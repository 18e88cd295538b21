"""The `edgestream` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline import cameras_cli, config_cli
from pipeline import curve as curve_cli
from pipeline import models_registry as models_cli
from pipeline import run as run_cli
from pipeline import shard as shard_cli
from pipeline.extras import missing_extra_message
from pipeline.logs import setup_logging
from stages.bench import cli as bench_cli
from stages.demo import cli as demo_cli
from stages.detect import cli as detect_cli
from stages.detect.train import cli as train_cli
from stages.sinks import cli as sinks_cli
from stages.synth import cli as synth_cli
from stages.track import cli as track_cli


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgestream")
    except PackageNotFoundError:  # run from a checkout that was never pip-installed
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgestream",
        description="Real-time video analytics for edge servers: YOLO-NAS detection, "
        "tracking, results to Redis.",
    )
    parser.add_argument(
        "--log-level", default=os.environ.get("EDGESTREAM_LOG_LEVEL", "INFO"), help="log level"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("EDGESTREAM_LOG_FORMAT", "text"),
        help="log lines as text or JSON, the same for every command ($EDGESTREAM_LOG_FORMAT; "
        "`run -c CONFIG` takes logging.format from the config)",
    )
    parser.add_argument("--version", action="version", version=f"edgestream {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo_cli.add_parsers(sub)
    run_cli.add_parsers(sub)
    cameras_cli.add_parsers(sub)
    shard_cli.add_parsers(sub)
    detect_cli.add_parsers(sub)
    models_cli.add_parsers(sub)
    track_cli.add_parsers(sub)
    sinks_cli.add_parsers(sub)
    config_cli.add_parsers(sub)
    curve_cli.add_parsers(sub)
    synth_cli.add_parsers(sub)
    train_cli.add_parsers(sub)
    bench_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format, process_name=args.command)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        # an optional dependency (an extra) this install lacks: say which, no traceback
        line = missing_extra_message(exc, args.command)
        if line is None:
            raise
        logging.getLogger("edgestream").debug("missing extra", exc_info=True)
        print(f"edgestream {args.command}: error: {line}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        # Our errors (weights, sources, config) are ValueErrors with a message for people.
        logging.getLogger("edgestream").debug("failed", exc_info=True)
        print(f"edgestream {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
