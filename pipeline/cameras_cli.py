"""``edgestream cameras list|add|update|remove`` and ``edgestream reload``: a running pipeline's
cameras over its HTTP port (`pipeline.cameras_api`).

::

    edgestream cameras list --url http://10.0.0.5:9752
    edgestream cameras add door rtsp://cam7/stream --set detect_fps=5 --token-file token
    edgestream cameras update door --set url=rtsp://cam8/stream
    edgestream cameras remove door
    edgestream reload                       # re-read the config file (like SIGHUP)

``--url`` defaults to ``$EDGESTREAM_URL``, else ``http://127.0.0.1:9752``; the token comes from
``--token-file`` or ``$EDGESTREAM_TOKEN`` (writes only; ``list`` needs none). Exit status: 0
done, 1 refused by the pipeline (its reasons printed, one per line), 2 not reachable or bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

ENV_URL = "EDGESTREAM_URL"
ENV_TOKEN = "EDGESTREAM_TOKEN"


class Unreachable(OSError):
    pass


def request(method: str, url: str, token: str | None = None, body: Any = None,
            timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """(HTTP status, JSON body) of one request; `Unreachable` when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, _body(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _body(exc.read())
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(
            f"cannot reach {url}: {reason} (is the pipeline running, and is this its "
            "metrics.port? set --url or $EDGESTREAM_URL)"
        ) from None


def _body(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"error": raw.decode(errors="replace").strip()}
    return value if isinstance(value, dict) else {"value": value}


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            return Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"--token-file {args.token_file}: {exc.strerror or exc}") from None
    return os.environ.get(ENV_TOKEN, "").strip() or None


def _settings(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` (value read as a YAML scalar: 5, 2.5, true, null, text)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. detect_fps=5")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _report(status: int, body: dict[str, Any]) -> int:
    if status < 300:
        what = body.get("status") or "done"
        print(what)
        for key in ("added", "removed", "changed", "needs_restart"):
            if body.get(key):
                print(f"  {key}: {', '.join(map(str, body[key]))}")
        if body.get("applied") is False:
            print("  (decode has not confirmed yet: check `edgestream cameras list`)")
        return 0
    print(f"refused ({status}): {body.get('error', 'error')}", file=sys.stderr)
    for line in body.get("errors") or []:
        print(f"  {line}", file=sys.stderr)
    return 1


def _table(body: dict[str, Any]) -> str:
    cols = ("id", "state", "fps", "published", "dropped_total", "reconnects", "last_error", "url")
    rows = [[str(c.get(k) if c.get(k) is not None else "-") for k in cols]
            for c in body.get("cameras", [])]  # fmt: skip
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    writes = body.get("writes", "?")
    lines.append(f"({len(rows)} camera(s); writes {writes}; generation {body.get('generation')})")
    return "\n".join(lines)


def cmd_cameras(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    try:
        if args.action == "list":
            status, body = request("GET", f"{base}/cameras")
            if status != 200:
                return _report(status, body)
            print(json.dumps(body, indent=2) if args.json else _table(body))
            return 0
        token = _token(args)
        if args.action == "add":
            camera = {"id": args.id, "url": args.camera_url, **_settings(args.set)}
            return _report(*request("POST", f"{base}/cameras", token, camera))
        if args.action == "update":
            changes = _settings(args.set)
            if not changes:
                raise ValueError("give what to change: --set KEY=VALUE (repeatable)")
            return _report(*request("PATCH", f"{base}/cameras/{quote(args.id)}", token, changes))
        return _report(*request("DELETE", f"{base}/cameras/{quote(args.id)}", token))
    except Unreachable as exc:
        print(f"edgestream cameras: error: {exc}", file=sys.stderr)
        return 2


def cmd_reload(args: argparse.Namespace) -> int:
    try:
        return _report(*request("POST", f"{args.url.rstrip('/')}/reload", _token(args)))
    except Unreachable as exc:
        print(f"edgestream reload: error: {exc}", file=sys.stderr)
        return 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get(ENV_URL, "http://127.0.0.1:9752"),
        help="the pipeline's metrics/health address (default $EDGESTREAM_URL, else "
        "http://127.0.0.1:9752)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the control token (default ${ENV_TOKEN}); writes only",
    )


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "cameras",
        help="list, add, change or remove cameras of a running pipeline",
        description="Change a running pipeline's cameras without restarting it (the other "
        "cameras are not touched). Writes need the pipeline's control token.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="every camera: state, fps, drops, last error")
    ls.add_argument("--json", action="store_true", help="the raw JSON answer")
    add = actions.add_parser("add", help="add a camera (validated like a config entry)")
    add.add_argument("id", help="camera id (names its Redis stream)")
    add.add_argument("camera_url", metavar="URL", help="rtsp://..., http(s)://..., a file")
    upd = actions.add_parser("update", help="change a camera's settings (it reopens)")
    upd.add_argument("id")
    rm = actions.add_parser("remove", help="stop a camera (its Redis stream stays)")
    rm.add_argument("id")
    for a in (add, upd):
        a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any camera key, e.g. detect_fps=5 (repeatable)")  # fmt: skip
    for a in (ls, add, upd, rm):
        _common(a)
    p.set_defaults(func=cmd_cameras)

    r = sub.add_parser(
        "reload",
        help="make a running pipeline re-read its config file (like SIGHUP)",
        description="POST /reload: the pipeline re-reads its config file and applies the "
        "camera changes; an invalid file is refused (its errors printed) and the running "
        "config kept; other changes are listed as needing a restart.",
    )
    _common(r)
    r.set_defaults(func=cmd_reload)
