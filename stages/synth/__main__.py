"""``python3 -m stages.synth OUT [options]`` — the same as ``edgestream synth OUT [options]``."""

from __future__ import annotations

import argparse
import sys

from stages.synth import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m stages.synth")
    cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["synth", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
