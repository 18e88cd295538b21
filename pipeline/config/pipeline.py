"""The whole pipeline: every section, cross-checks, effective cameras, secrets.

This module composes the stages' own config models (``stages.<stage>.config``: schema-only
modules importing nothing but pydantic and `pipeline.config.base`), so it and `loading` are
the config's wiring: `pipeline.config` exports them lazily and the runtime core (supervisor,
transport, runner...) never imports them at run time (tests/pipeline/test_layering.py).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    Field,
    PrivateAttr,
    model_validator,
)

from pipeline.config.base import (
    _SECRET_FIELD,
    _SECRET_QUERY_KEY,
    ConfigProblems,
    StageName,
    StrictModel,
)
from pipeline.config.cameras import CameraDefaults, CameraEntry, CameraSettings
from pipeline.config.preview import PreviewConfig
from pipeline.config.runtime import LoggingConfig, MetricsConfig, TransportConfig
from pipeline.control import ControlConfig
from pipeline.redact import REDACTED, redact_text, redact_url
from stages.decode.config import DecodeStageConfig
from stages.detect.config import (
    BatchingConfig,
    ModelConfig,
    PreprocessConfig,
    letterbox_in_decode,
)
from stages.sinks.config import SinksConfig
from stages.track.config import TrackerSection


class PipelineConfig(StrictModel):
    """One pipeline (one process tree): cameras, model, batching, sinks, transport."""

    version: Literal[1] = Field(default=1, description="Config format version (1).")
    name: str = Field(
        default="edgestream",
        pattern=r"^[A-Za-z0-9_.\-]{1,32}$",
        description="Pipeline name: 1-32 of [A-Za-z0-9_.-]; names shared memory, sockets, metrics.",
    )
    realtime: bool = Field(
        default=True,
        description="Live policy for cameras that do not set their own: true drops the oldest "
        "frame when a stage falls behind (counted); false blocks and loses nothing (offline "
        "files; file sources are then read as fast as the pipeline goes).",
    )
    camera_defaults: CameraDefaults = Field(
        default_factory=CameraDefaults, description="Decode settings every camera inherits."
    )
    cameras: list[CameraEntry] = Field(
        default_factory=list,
        description="The cameras; each needs id and url and may override camera_defaults.",
    )
    decode: DecodeStageConfig = Field(
        default_factory=DecodeStageConfig, description="Decode processes."
    )
    model: ModelConfig = Field(..., description="The detector.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Batching.")
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig, description="Where frames are letterboxed."
    )
    tracker: TrackerSection = Field(default_factory=TrackerSection, description="Tracker.")
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="Result sinks.")
    transport: TransportConfig = Field(
        default_factory=TransportConfig, description="Edges and the stages run here."
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics/health.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    control: ControlConfig = Field(
        default_factory=ControlConfig, description="Live camera changes (the API token)."
    )
    preview: PreviewConfig = Field(
        default_factory=PreviewConfig, description="Annotated camera snapshots (off by default)."
    )

    _secrets: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first: dict[str, int] = {}
        for i, cam in enumerate(self.cameras):
            if cam.id in first:
                problems.append(
                    (
                        ("cameras", i, "id"),
                        f"duplicate id {cam.id!r} (also cameras[{first[cam.id]}])",
                    )
                )
            else:
                first[cam.id] = i
        stages = set(self.transport.stages)
        if "decode" in stages and not self.cameras:
            problems.append((("cameras",), "at least one camera is needed to run the decode stage"))
        frames_auto = self.transport.edges.frames.endpoint == "auto"
        if isinstance(self.decode.processes, int) and self.decode.processes > 1 and not frames_auto:
            problems.append(
                (
                    ("decode", "processes"),
                    "more than 1 decode process needs transport.edges.frames.endpoint: auto "
                    "(each process binds its own ipc socket)",
                )
            )
        if self.preprocess.where == "decode" and ("decode" in stages) != ("preprocess" in stages):
            problems.append(
                (
                    ("preprocess", "where"),
                    "decode letterboxes only where decode and preprocess run in the same "
                    "process tree (transport.stages has one of them); use workers or auto",
                )
            )
        if "sink" in stages and not any(
            s is not None for s in (self.sinks.redis, self.sinks.jsonl, self.sinks.video)
        ):
            problems.append((("sinks",), "the sink stage runs here but no sink is configured"))
        for i, eff in enumerate(self.effective_cameras()):
            if eff.backoff_max_s < eff.backoff_min_s:
                problems.append(
                    (
                        ("cameras", i, "backoff_max_s"),
                        f"must be >= backoff_min_s ({eff.backoff_min_s}) after merging "
                        "camera_defaults",
                    )
                )
        if problems:
            raise ConfigProblems(problems)
        self._secrets = frozenset(_url_and_file_secrets(self))
        return self

    # -- effective cameras -----------------------------------------------------------------

    def camera(self, camera_id: str) -> CameraSettings:
        """The effective settings of ``camera_id``: `camera_defaults` merged with its entry."""
        for entry in self.cameras:
            if entry.id == camera_id:
                return _merge(self.camera_defaults, entry, self.realtime)
        raise KeyError(f"no camera {camera_id!r}; known: {', '.join(self.camera_ids) or 'none'}")

    def effective_cameras(self) -> list[CameraSettings]:
        """Every camera's effective settings, in file order."""
        return [_merge(self.camera_defaults, e, self.realtime) for e in self.cameras]

    @property
    def camera_ids(self) -> list[str]:
        return [e.id for e in self.cameras]

    def decode_processes(self) -> int:
        """How many decode processes run the cameras (`DecodeStageConfig.resolve`; 1 when the
        frames edge has a written endpoint)."""
        if self.transport.edges.frames.endpoint != "auto":
            return 1
        return self.decode.resolve(len(self.cameras))

    def letterbox_in_decode(self) -> bool:
        """Whether the decode processes letterbox and send to detect (no preprocess workers):
        ``preprocess.where`` resolved (`stages.detect.config.letterbox_in_decode`)."""
        return letterbox_in_decode(
            self.preprocess.where, self.model.device, self.runs("decode"), self.runs("preprocess")
        )

    def preprocess_workers(self) -> int:
        """Preprocess processes this tree runs: none when it runs no preprocess stage or
        decode letterboxes, else ``preprocess.workers``."""
        if not self.runs("preprocess") or self.letterbox_in_decode():
            return 0
        return self.preprocess.workers

    def runs(self, stage: StageName) -> bool:
        """Whether this process tree runs ``stage``."""
        return stage in self.transport.stages

    # -- secrets ---------------------------------------------------------------------------

    def secrets(self) -> tuple[str, ...]:
        """Literal secret values to redact from any text: URL passwords, secret-looking
        ``${VAR}`` values and secret files' contents (for `pipeline.logs` redaction)."""
        return tuple(sorted(self._secrets, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """``text`` with every credential of this config masked."""
        return redact_text(text, self.secrets())

    def redacted_dump(self) -> dict[str, Any]:
        """The config as plain JSON types, every credential masked: safe to log.

        Cameras appear with their effective settings (defaults merged with overrides).
        """
        data = self.model_dump(mode="json")
        data["cameras"] = [c.model_dump(mode="json") for c in self.effective_cameras()]
        return _redact_tree(data, self.secrets())


def _merge(defaults: CameraDefaults, entry: CameraEntry, realtime: bool) -> CameraSettings:
    values = defaults.model_dump()
    for name in entry.model_fields_set:
        if name in ("id", "url", "password_file", "realtime"):
            continue
        value = getattr(entry, name)
        if name == "options":
            value = {**defaults.options, **value}
        values[name] = value
    return CameraSettings.model_construct(
        **values,
        id=entry.id,
        url=entry.url,
        password_file=entry.password_file,
        realtime=realtime if entry.realtime is None else entry.realtime,
    )


def _url_and_file_secrets(cfg: PipelineConfig) -> set[str]:
    from pipeline.redact import url_secrets

    out: set[str] = set()
    urls = [c.url for c in cfg.cameras]
    if cfg.sinks.redis is not None:
        urls.append(cfg.sinks.redis.url)
    for url in urls:
        out.update(url_secrets(url))
        try:
            query = parse_qsl(urlsplit(url).query)
        except ValueError:
            continue
        out.update(v for k, v in query if _SECRET_QUERY_KEY.match(k) and len(v) >= 3)
    return out


def _redact_tree(value: Any, secrets: tuple[str, ...], key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact_tree(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_tree(v, secrets, key) for v in value]
    if isinstance(value, str):
        if _SECRET_FIELD.search(key) and value:
            return REDACTED
        return redact_text(redact_url(value), secrets)
    return value
