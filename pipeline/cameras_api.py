"""Live camera changes: ``/cameras`` and ``/reload`` on the metrics port, and ``SIGHUP``.

Every change — one camera over the API, or a re-read config file — becomes a new running
config that differs from the old one in its cameras (and ``camera_defaults``) only; the
supervisor hands it to the stages that keep per-camera state without restarting any process
(`pipeline.supervisor.Supervisor.apply_cameras`): the track stage first (class filters and
frame rates of new cameras), then decode, which opens the added cameras, closes the removed
ones and reopens the changed ones. A removed camera's last frames drain through the pipeline
and its end marker drops its tracker (a re-added camera starts with fresh track ids); its
Redis stream stays.

What an added camera inherits: the running ``camera_defaults`` (those of the config file the
pipeline last started or reloaded with, never edited over the API), merged with the JSON
entry exactly as a YAML entry is (`pipeline.config.CameraEntry`: the same validation, the
same ``key.path: message`` errors, ``${VAR}`` substitution, relative paths from the config
file's folder).

What cannot change live (reported, never silently ignored): a camera's ``realtime`` differing
from what the running stages were started with for it (the drop/block policy of every stage);
every setting outside ``cameras``/``camera_defaults``/``control`` (model, batching, sinks,
transport...): a reload lists those as "needs restart" and keeps the running values.
Sharded replicas (`pipeline.shard`) take only the cameras they own; a reload re-applies the
shard to the new file, so every replica reads the same file and keeps its own cameras.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pydantic import BaseModel, ValidationError, create_model

from pipeline.config.base import ConfigError, ConfigProblems, _path_str, read_secret_file
from pipeline.config.errors import format_errors
from pipeline.control import TokenError, check_bearer, load_token, mask_in_logs
from pipeline.policy import RealtimePolicy
from pipeline.redact import redact_url, url_secrets

if TYPE_CHECKING:  # the composed config loads stage config models: imported where used
    from pipeline.config import CameraEntry, PipelineConfig
    from pipeline.supervisor import Supervisor

log = logging.getLogger("edgestream.cameras")

Answer = tuple[int, dict[str, Any]]
MAX_BODY_BYTES = 64 * 1024


class ChangeRefused(Exception):
    """A change that is not applied: HTTP ``status`` and ``errors`` (``key.path: message``)."""

    def __init__(self, status: int, errors: list[str], message: str = "") -> None:
        super().__init__("; ".join(errors))
        self.status = status
        self.errors = errors
        self.message = message or "change refused"

    def answer(self) -> Answer:
        return self.status, {"error": self.message, "errors": self.errors}


@functools.cache
def _one_camera() -> type[BaseModel]:
    """``{"cameras": [entry]}``: validates one entry at the same key path as in the file, so
    the errors (and their did-you-mean hints) are the YAML ones."""
    from pipeline.config import CameraEntry

    return create_model("_OneCamera", cameras=(list[CameraEntry], ...))


# ------------------------------------------------------------------------------ validation


def camera_entry(data: Any, *, base_dir: Path | None, env: Mapping[str, str] | None = None
                 ) -> tuple[CameraEntry, set[str]]:  # fmt: skip
    """One camera entry from JSON, validated as a YAML entry; (entry, secrets it revealed).
    Raises `ChangeRefused` (422) with ``key.path: message`` lines."""
    if not isinstance(data, dict):
        raise ChangeRefused(422, ["(top level): a camera is a JSON object"], "invalid camera")
    secrets: set[str] = set()
    context = {
        "env": os.environ if env is None else env,
        "secrets": secrets,
        "base_dir": base_dir,
        "check_files": True,
    }
    try:
        one: Any = _one_camera().model_validate({"cameras": [data]}, context=context)
    except ValidationError as exc:
        errors = [_relative(line) for line in format_errors(exc)]
        raise ChangeRefused(422, errors, "invalid camera") from None
    entry = one.cameras[0]
    secrets.update(url_secrets(entry.url))
    if entry.password_file is not None:
        secrets.add(read_secret_file(entry.password_file))
    return entry, secrets


def _relative(line: str, index: int = 0) -> str:
    prefix = f"cameras[{index}]"
    if line.startswith(prefix + "."):
        return line[len(prefix) + 1 :]
    if line.startswith(prefix + ":"):
        return "(camera)" + line[len(prefix) :]
    return line


def with_cameras(base: PipelineConfig, update: dict[str, Any],
                 secrets: Collection[str] = ()) -> PipelineConfig:  # fmt: skip
    """``base`` with ``update`` (cameras, camera_defaults, control) and the config's own
    cross-checks run again (duplicate ids, backoff after merging defaults, at least one
    camera); raises `ChangeRefused` (409) naming the key paths."""
    new = base.model_copy(update=update)
    try:
        checks: Any = type(base)._cross_checks  # the model validator, run again
        checks(new)
    except ConfigProblems as exc:
        raise ChangeRefused(
            409, [f"{_path_str(loc)}: {msg}" for loc, msg in exc.problems], "change refused"
        ) from None
    new._secrets = base._secrets | new._secrets | frozenset(secrets)
    return new


def _effective(cfg: PipelineConfig) -> dict[str, dict[str, Any]]:
    return {c.id: c.model_dump(mode="json") for c in cfg.effective_cameras()}


def diff(old: PipelineConfig, new: PipelineConfig) -> dict[str, list[str]]:
    """Camera ids ``added``, ``removed`` and ``changed`` (effective settings differ)."""
    a, b = _effective(old), _effective(new)
    return {
        "added": [c for c in b if c not in a],
        "removed": [c for c in a if c not in b],
        "changed": [c for c in b if c in a and a[c] != b[c]],
    }


def needs_restart(old: PipelineConfig, new: PipelineConfig) -> list[str]:
    """Key paths outside cameras/camera_defaults/control whose values differ."""
    skip = {"cameras", "camera_defaults", "control"}
    a = old.model_dump(mode="json", exclude=skip)
    b = new.model_dump(mode="json", exclude=skip)
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k), y.get(k), f"{path}.{k}" if path else str(k))
        elif x != y:
            out.append(path)

    walk(a, b, "")
    return out


# ------------------------------------------------------------------------------ the manager


class CameraManager:
    """The ``/cameras`` and ``/reload`` endpoints of one supervisor (`handle`), and SIGHUP
    (`reload`). One change at a time (a lock); every refusal is logged with its reasons."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self._lock = threading.Lock()
        # a token configured but unusable stops the start (TokenError, a ValueError: exit 2)
        self.token: str | None = load_token(sup.cfg.control)

    @property
    def base_dir(self) -> Path | None:
        path = self.sup.config_path
        return Path(path).resolve().parent if path is not None else None

    # -------------------------------------------------------------------------- HTTP
    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes
               ) -> Answer | None:  # fmt: skip
        """The answer to a request, or None when the path is not ours (404 elsewhere)."""
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if not parts or parts[0] not in ("cameras", "reload") or len(parts) > 2:
            return None
        if parts == ["reload"]:
            if method != "POST":
                return 405, {"error": "use POST /reload"}
            return self._write(headers, lambda: self.reload("POST /reload"))
        camera = parts[1] if len(parts) == 2 else None
        if method == "GET":
            return self.list() if camera is None else self.one(camera)
        if method == "POST" and camera is None:
            return self._write(headers, lambda: self.add(_json(body)))
        if method == "PATCH" and camera is not None:
            return self._write(headers, lambda: self.patch(camera, _json(body)))
        if method == "DELETE" and camera is not None:
            return self._write(headers, lambda: self.remove(camera))
        allowed = "GET, POST" if camera is None else "GET, PATCH, DELETE"
        return 405, {"error": f"{method} {path}: allowed here: {allowed}"}

    def _write(self, headers: Mapping[str, str], fn: Any) -> Answer:
        auth = headers.get("Authorization") or headers.get("authorization")
        refused = check_bearer(auth, self.token)
        if refused is not None:
            status, reason = refused
            log.warning("camera change refused (%d): %s", status, reason)
            return status, {"error": reason}
        try:
            answer: Answer = fn()
            return answer
        except ChangeRefused as exc:
            log.warning("camera change refused (%d): %s", exc.status, "; ".join(exc.errors))
            return exc.answer()

    # -------------------------------------------------------------------------- reads
    def list(self) -> Answer:
        sup = self.sup
        stats, decode = self._stats()
        return 200, {
            "cameras": [self._view(c, stats, decode) for c in sup.cfg.camera_ids],
            "writes": "on" if self.token is not None else "off",
            "shard": None if sup.shard is None else str(sup.shard),
            "config_file": None if sup.config_path is None else str(sup.config_path),
            "generation": sup.control_generation,
        }

    def one(self, camera: str) -> Answer:
        if camera not in self.sup.cfg.camera_ids:
            return 404, {"error": f"no camera {camera!r}", "cameras": self.sup.cfg.camera_ids}
        return 200, self._view(camera, *self._stats())

    def _stats(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The board's per-camera view and decode's camera states. The poll thread updates
        the board meanwhile: a read that raced with it is taken again."""
        for attempt in range(3):
            try:
                return self.sup.board.cameras(), self.sup.decode_cameras()
            except RuntimeError:  # "changed size during iteration"
                if attempt == 2:
                    raise
                time.sleep(0.01)
        raise AssertionError("unreachable")

    def _view(self, camera: str, all_stats: dict[str, Any], all_decode: dict[str, Any]
              ) -> dict[str, Any]:  # fmt: skip
        sup = self.sup
        settings = sup.cfg.camera(camera)
        stats = all_stats.get(camera, {})
        decode = all_decode.get(camera, {})
        return {
            "id": camera,
            "url": sup.cfg.redact(redact_url(settings.url)),
            "kind": settings.kind,
            "state": decode.get("state", "unknown"),
            "up": bool(stats.get("up", False)),
            "fps": stats.get("fps", 0.0),
            "detect_fps": settings.detect_fps,
            "sent": stats.get("sent", 0),
            "published": stats.get("published", 0),
            "dropped": stats.get("dropped", {}),
            "dropped_total": stats.get("dropped_total", 0),
            "reconnects": decode.get("reconnects", 0),
            "last_error": decode.get("last_error"),
            "latency_p50_ms": stats.get("latency_p50_ms"),
        }

    # -------------------------------------------------------------------------- writes
    def add(self, data: Any) -> Answer:
        with self._lock:
            cfg = self.sup.cfg
            entry, secrets = camera_entry(data, base_dir=self.base_dir)
            if entry.id in cfg.camera_ids:
                raise ChangeRefused(
                    409, [f"id: camera {entry.id!r} exists; PATCH /cameras/{entry.id} changes it"]
                )
            self._check_shard(entry.id)
            new = with_cameras(cfg, {"cameras": [*cfg.cameras, entry]}, secrets)
            return self._apply(new, f"camera {entry.id} added", status=201)

    def patch(self, camera: str, data: Any) -> Answer:
        with self._lock:
            cfg = self.sup.cfg
            if camera not in cfg.camera_ids:
                return 404, {"error": f"no camera {camera!r}", "cameras": cfg.camera_ids}
            if not isinstance(data, dict):
                raise ChangeRefused(422, ["(top level): send a JSON object of the keys to change"])
            if data.get("id", camera) != camera:
                raise ChangeRefused(422, ["id: cannot be changed (remove and add instead)"])
            old = next(e for e in cfg.cameras if e.id == camera)
            merged = {**_escaped(old.model_dump(exclude_unset=True, mode="json")), **data}
            merged["id"] = camera
            entry, secrets = camera_entry(merged, base_dir=self.base_dir)
            cameras = [entry if e.id == camera else e for e in cfg.cameras]
            new = with_cameras(cfg, {"cameras": cameras}, secrets)
            return self._apply(new, f"camera {camera} changed")

    def remove(self, camera: str) -> Answer:
        with self._lock:
            cfg = self.sup.cfg
            if camera not in cfg.camera_ids:
                return 404, {"error": f"no camera {camera!r}", "cameras": cfg.camera_ids}
            new = with_cameras(cfg, {"cameras": [e for e in cfg.cameras if e.id != camera]})
            return self._apply(new, f"camera {camera} removed")

    def reload(self, why: str = "SIGHUP") -> Answer:
        """Re-read the config file and apply its camera changes; an invalid file is refused
        (its errors logged and returned) and the running config kept."""
        try:
            return self._reload(why)
        except ChangeRefused as exc:
            log.error("%s: %s; the running config is kept:\n  %s",
                      why, exc.message, "\n  ".join(exc.errors))  # fmt: skip
            raise

    def _reload(self, why: str) -> Answer:
        with self._lock:
            sup = self.sup
            if sup.config_path is None:
                raise ChangeRefused(
                    409, ["the pipeline was started from flags, not a config file (-c)"],
                    "nothing to reload",
                )  # fmt: skip
            from pipeline.config import load_config

            try:
                fresh = load_config(sup.config_path)
            except ConfigError as exc:
                errors = [str(p) for p in getattr(exc, "problems", [str(exc)])]
                raise ChangeRefused(422, errors, f"{sup.config_path} is invalid") from None
            if sup.shard is not None:
                from pipeline.shard import apply_shard

                fresh = apply_shard(fresh, sup.shard)
            fresh = _as_run(fresh)
            cfg = sup.cfg
            restart = needs_restart(cfg, fresh)
            held: list[str] = []
            known = RealtimePolicy.from_config(sup.start_cfg)
            old_entries = {e.id: e for e in cfg.cameras}
            cameras = []
            for entry, eff in zip(fresh.cameras, fresh.effective_cameras(), strict=True):
                if eff.realtime != (eff.id in known):
                    held.append(f"cameras.{eff.id}.realtime")
                    if eff.id in old_entries:
                        cameras.append(old_entries[eff.id])
                    continue
                cameras.append(entry)
            update = {
                "cameras": cameras,
                "camera_defaults": fresh.camera_defaults,
                "control": fresh.control,  # the token is read again below
            }
            new = with_cameras(cfg, update, set(fresh.secrets()))
            try:
                token = load_token(new.control)  # rotated with the file, or refused with it
            except TokenError as exc:
                raise ChangeRefused(422, [str(exc)], "the new token cannot be used") from None
            restart += held
            if restart:
                log.warning("%s: these changes need a restart and are not applied: %s",
                            why, ", ".join(restart))  # fmt: skip
            status, body = self._apply(new, f"{why}: reloaded {sup.config_path}", check=False)
            self.token = token
            body["needs_restart"] = restart
            return status, body

    # -------------------------------------------------------------------------- applying
    def _check_shard(self, camera: str) -> None:
        shard = self.sup.shard
        if shard is not None and not shard.owns(camera):
            from pipeline.shard import owner

            raise ChangeRefused(
                409,
                [f"id: camera {camera!r} belongs to replica {owner(camera, shard.count)} of "
                 f"{shard.count}, this is replica {shard.index}: add it to the config file "
                 "every replica reads and reload them, or send it to its owner"],
                "not this replica's camera",
            )  # fmt: skip

    def _check_frozen(self, new: PipelineConfig) -> None:
        """A camera's realtime must be what the running stages treat it as."""
        known = RealtimePolicy.from_config(self.sup.start_cfg)
        problems = [
            f"realtime: the running stages treat camera {c.id!r} as "
            f"{'live (realtime: true)' if c.id in known else 'offline (realtime: false)'}; "
            "changing that needs a restart"
            for c in new.effective_cameras()
            if c.realtime != (c.id in known)
        ]
        if problems:
            raise ChangeRefused(409, problems, "needs a restart")

    def _check_classes(self, new: PipelineConfig) -> None:
        from pipeline.procs import class_filter_of, class_names_of

        if not any(c.classes is not None for c in new.effective_cameras()):
            return
        try:
            class_filter_of(new, class_names_of(new, model=self.sup.model))
        except ConfigError as exc:
            ids = new.camera_ids
            errors = []
            for p in getattr(exc, "problems", [str(exc)]):
                text = str(p)
                for i, cid in enumerate(ids):
                    text = text.replace(f"cameras[{i}].", f"cameras.{cid}.")
                errors.append(text)
            raise ChangeRefused(422, errors, "invalid camera") from None

    def _apply(self, new: PipelineConfig, what: str, status: int = 200, check: bool = True
               ) -> Answer:  # fmt: skip
        if getattr(self.sup, "stopping", False):
            raise ChangeRefused(503, ["the pipeline is stopping"], "stopping")
        if check:
            self._check_frozen(new)
        self._check_classes(new)
        changes = diff(self.sup.cfg, new)
        mask_in_logs(*new.secrets())
        applied = self.sup.apply_cameras(new)
        log.info("%s: added %s, removed %s, changed %s (generation %d%s)", what,
                 changes["added"] or "none", changes["removed"] or "none",
                 changes["changed"] or "none", self.sup.control_generation,
                 "" if applied else "; decode has not confirmed yet")  # fmt: skip
        body: dict[str, Any] = {
            "status": what,
            **changes,
            "applied": applied,
            "generation": self.sup.control_generation,
            "cameras": new.camera_ids,
        }
        return status, body


def _as_run(cfg: PipelineConfig) -> PipelineConfig:
    """``cfg`` as `pipeline.run.run_pipeline` runs it (a checkpoint on the CPU becomes its
    cached ONNX export), so a reload compares like with like; unchanged if that fails (the
    model section then shows up as needing a restart, which it does)."""
    from pipeline.procs import cpu_onnx_config

    try:
        return cpu_onnx_config(cfg)[0]
    except (ValueError, OSError):
        log.debug("reload: the model of the new config cannot run as it is", exc_info=True)
        return cfg


def _json(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise ChangeRefused(413, [f"(body): over {MAX_BODY_BYTES} bytes"], "body too large")
    try:
        return json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChangeRefused(400, [f"(body): not JSON: {exc}"], "invalid JSON") from None


def _escaped(value: Any) -> Any:
    """Strings already substituted (``${VAR}`` expanded) with ``$`` doubled, so validating
    them again as an entry leaves them as they are."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    return value
