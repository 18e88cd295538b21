"""Structured logging for every process of the pipeline: text or JSON lines, redacted.

`setup_logging` configures the root logger of one process (the supervisor, and each child
first thing after it starts): one handler on stderr, a line per record, the process name in
every line, and a `RedactFilter` that masks credentials in every record whatever logger it
comes from (FFmpeg errors quote camera URLs; redis-py quotes connection URLs). Children write
to the stderr they inherit; each record is one ``write()`` of one line, so lines of different
processes interleave whole, never mixed.

Line shapes::

    text: 2026-11-28T01:02:03.456Z INFO  decode[4242] edgestream.cameras: camera gate: ...
    json: {"ts": "2026-11-28T01:02:03.456Z", "level": "INFO", "process": "decode", "pid": 4242,
           "logger": "edgestream.decode", "msg": "camera gate: ...", "camera": "gate", ...}

Extra fields given with ``log.info(..., extra={...})`` become JSON keys (and are ignored by the
text format, whose message already says it). `CameraStateLog` writes one line per camera
state change; `summary_line` formats the periodic one-line summary.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import IO, Any, Literal

from pipeline.redact import redact_text

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("n", 0, "p", 0, "m", None, None))) | {
    "message",
    "asctime",
    "es_process",
}
_QUIET = ("urllib3", "asyncio", "PIL", "matplotlib")


def _iso(created: float) -> str:
    t = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(created % 1 * 1000):03d}Z"


class RedactFilter(logging.Filter):
    """Masks credentials in a record's message and arguments before any handler formats it.

    Always masks ``scheme://user:password@`` and secret-looking query values
    (`pipeline.redact.redact_text`); also masks the literal ``secrets`` given (camera
    passwords from files, ``${VAR}`` values: `pipeline.config.PipelineConfig.secrets`).
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also mask these literal values from now on (short ones, under 3 chars, are not)."""
        with self._lock:
            merged = set(self._secrets) | {s for s in secrets if s}
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is
            message = f"{record.msg} {record.args}"
        record.msg = self.redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self.redact(value))
        return True


class _ProcessFilter(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.process_name = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.es_process = self.process_name
        return True


class TextFormatter(logging.Formatter):
    """``<UTC time> <LEVEL> <process>[<pid>] <logger>: <message>`` (+ the traceback)."""

    def __init__(self, redact: RedactFilter) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        process = getattr(record, "es_process", record.processName)
        line = (
            f"{_iso(record.created)} {record.levelname:<5} {process}[{record.process}] "
            f"{record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return self._redact.redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, process, pid, logger, msg, extras, exc."""

    def __init__(self, redact: RedactFilter) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "process": getattr(record, "es_process", record.processName),
            "pid": record.process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = (
                    value if isinstance(value, (int, float, bool, type(None))) else str(value)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return self._redact.redact(json.dumps(out, ensure_ascii=False, default=str))


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written (not when logging was set up)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup_logging(
    level: str | int = "INFO",
    fmt: LogFormat = "text",
    process_name: str | None = None,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> RedactFilter:
    """Configure this process's root logger; returns its `RedactFilter` (add secrets later).

    Replaces the root logger's stream handlers (so calling it again, e.g. in a child after
    the parent's settings were inherited, or after ``logging.basicConfig``, does not double
    lines). Every ``edgestream`` command starts with it (`pipeline.cli.main`), so all of them
    log in one format. process_name: what the lines
    say (``"decode"``, ``"preprocess[1]"``); default: ``"main"`` for the main process, else
    multiprocessing's process name.
    """
    import multiprocessing

    if process_name is None:
        current = multiprocessing.current_process()
        process_name = "main" if current.name == "MainProcess" else current.name
    redact = RedactFilter(secrets)
    handler = logging.StreamHandler(stream if stream is not None else _Stderr())
    handler._edgestream = True  # type: ignore[attr-defined]
    handler.addFilter(_ProcessFilter(process_name))
    handler.addFilter(redact)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        # ours from an earlier call and logging.basicConfig's; others (a file, a test
        # harness's capture) stay
        if getattr(old, "_edgestream", False) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    return redact


def setup_from_config(cfg: Any, process_name: str | None = None) -> RedactFilter:
    """`setup_logging` from a `pipeline.config.PipelineConfig` (level, format, its secrets)."""
    return setup_logging(
        cfg.logging.level, cfg.logging.format, process_name=process_name, secrets=cfg.secrets()
    )


# ------------------------------------------------------------------------------------------
# One line per camera state change
# ------------------------------------------------------------------------------------------

_WARN_STATES = {"stalled", "backoff"}


class CameraStateLog:
    """Logs a camera's state only when it changes: one line per transition.

    ``update(camera, state, reason)`` may be called on every poll; repeated states are
    silent. Stalls and backoffs are WARNING, the rest INFO; the reason is redacted by the
    handler's filter like everything else. Extras for JSON: camera, state, previous, reason,
    event="camera_state".
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("edgestream.cameras")
        self._states: dict[str, str] = {}
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()

    def update(self, camera: str, state: Any, reason: str = "", now: float | None = None) -> bool:
        """Record ``state`` (a `CameraState` or its value); True when it was a change."""
        name = str(getattr(state, "value", state))
        now = time.monotonic() if now is None else now
        with self._lock:
            previous = self._states.get(camera)
            if previous == name:
                return False
            since = self._since.get(camera)
            self._states[camera] = name
            self._since[camera] = now
        held = f" after {now - since:.1f} s" if since is not None else ""
        message = f"camera {camera}: {previous or 'new'} -> {name}{held}"
        if reason:
            message += f" ({reason})"
        level = logging.WARNING if name in _WARN_STATES else logging.INFO
        self.log.log(
            level,
            message,
            extra={
                "event": "camera_state",
                "camera": camera,
                "state": name,
                "previous": previous,
                "reason": reason or None,
            },
        )
        return True

    def state(self, camera: str) -> str | None:
        return self._states.get(camera)


# ------------------------------------------------------------------------------------------
# The periodic summary
# ------------------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}"


def summary_line(stats: Mapping[str, Any], interval_s: float | None = None) -> str:
    """One line for the periodic summary.

    stats: ``{"cameras": {id: {"up", "published", "fps", "dropped": {reason: n},
    "latency_p50_ms", "latency_p99_ms"}}, "batches": {"mean_size"}, "restarts": {key: n}}``
    (`pipeline.run.pipeline_stats`); missing keys are shown as ``-``. The slowest camera
    (highest p99) is named, since an average hides the one camera that is in trouble.
    """
    cams: Mapping[str, Mapping[str, Any]] = stats.get("cameras") or {}
    up = sum(1 for c in cams.values() if c.get("up"))
    published = sum(int(c.get("published") or 0) for c in cams.values())
    fps = sum(float(c.get("fps") or 0.0) for c in cams.values())
    drops: dict[str, int] = {}
    for c in cams.values():
        for reason, n in (c.get("dropped") or {}).items():
            drops[reason] = drops.get(reason, 0) + int(n)
    drop_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items()) if v) or "none"
    with_p99 = [(c.get("latency_p99_ms"), cid) for cid, c in cams.items()]
    with_p99 = [(v, cid) for v, cid in with_p99 if v is not None]
    if with_p99:
        worst_p99, worst = max(with_p99)
        p50s = [c["latency_p50_ms"] for c in cams.values() if c.get("latency_p50_ms") is not None]
        p50 = sorted(p50s)[len(p50s) // 2] if p50s else None
        lat = f"e2e p50 {_ms(p50)} ms, worst p99 {_ms(worst_p99)} ms ({worst})"
    else:
        lat = "e2e -"
    down = sorted(cid for cid, c in cams.items() if not c.get("up"))
    down_text = f" (down: {', '.join(down[:5])}{'...' if len(down) > 5 else ''})" if down else ""
    mean_batch = (stats.get("batches") or {}).get("mean_size")
    batch = "-" if mean_batch is None else f"{float(mean_batch):.1f}"
    restarts = sum(int(v) for v in (stats.get("restarts") or {}).values())
    head = f"summary {interval_s:g}s" if interval_s else "summary"
    return (
        f"{head}: cameras up {up}/{len(cams)}{down_text} | published {published} "
        f"({fps:.1f} fps) | dropped {sum(drops.values())} ({drop_text}) | batch {batch} | "
        f"{lat} | restarts {restarts}"
    )


def process_label(stage: str, index: int | None = None) -> str:
    """``"preprocess[1]"`` for the second preprocess worker, ``"detect"`` for a lone stage."""
    return stage if index is None else f"{stage}[{index}]"
