"""The pipeline configuration: one YAML file validated by pydantic v2 models.

Every model forbids unknown keys, every field says its unit and bounds. Read a file with
`load_config`; build one without YAML with `quick_config` (``edgestream run --camera ...``).

Rules the loader enforces, and why:

* **Unknown keys** are errors, reported with their path and the closest known key
  (``cameras[0].stal_timeout_s: unknown key (did you mean 'stall_timeout_s'?)``): a typo
  that silently falls back to a default is the worst kind of config bug.
* **Every problem at once**: a `ConfigError` lists each one as ``key.path: message``.
  Problems that involve several keys (duplicate camera ids, a remote stage's edge left on
  ``auto``, a sink stage with no sink) are checked once every key is valid on its own.
* **Secrets** never sit in the file. A string field may contain ``${VAR}`` (or
  ``${VAR:-default}``; ``$$`` is a literal ``$``), replaced from the environment when the file
  is loaded; a missing variable is an error naming the key path and the variable. Number and
  boolean fields take no substitution (a port from the environment would turn a typo into a
  runtime surprise). Files mounted from a secret store go in ``*_file`` fields. Errors never
  quote a value that could be a secret, and `PipelineConfig.redacted_dump` masks URL
  passwords, password fields and the values of secret-looking variables (name containing
  PASS, SECRET, TOKEN, KEY, CRED or AUTH) for logging.
* **Relative paths** (weights, secret files, file cameras, sink outputs) are relative to the
  directory of the YAML file, like docker compose, so ``configs/offline.yaml`` runs from any
  working directory.
* **Per-camera overrides**: ``camera_defaults`` holds every decode setting; an entry of
  ``cameras`` may set any of them again for itself. `PipelineConfig.camera` returns the merge
  (``options`` dicts are merged key by key, everything else is replaced).
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from pipeline.redact import REDACTED, redact_text, redact_url

# The names of stages.detect.nn.ARCHS, spelled out so that validating a config does not import
# torch (a test checks they agree).
ARCH_NAMES = ("yolo_nas_n", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l")
Arch = Literal["yolo_nas_n", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l"]
StageName = Literal["decode", "preprocess", "detect", "track", "sink"]
STAGES: tuple[StageName, ...] = ("decode", "preprocess", "detect", "track", "sink")
EdgeName = Literal["frames", "items", "detections", "tracked"]
# edge -> (producer stage, consumer stage)
EDGES: dict[EdgeName, tuple[StageName, StageName]] = {
    "frames": ("decode", "preprocess"),
    "items": ("preprocess", "detect"),
    "detections": ("detect", "track"),
    "tracked": ("track", "sink"),
}
CAMERA_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
_SECRET_VAR = re.compile(r"PASS|SECRET|TOKEN|KEY|CRED|AUTH", re.IGNORECASE)
_SECRET_FIELD = re.compile(r"(^|_)(password|passwd|secret|token|api_key)$", re.IGNORECASE)
_ENV_REF = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$\{")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# query parameters redact_url masks (pipeline/redact.py): their values are secrets too
_SECRET_QUERY_KEY = re.compile(
    r"^(password|passwd|pwd|pass|token|auth|key|secret|signature)$", re.IGNORECASE
)


class ConfigError(ValueError):
    """A configuration that cannot be used; ``problems`` holds one ``path: message`` each."""

    def __init__(self, problems: list[str], source: str | os.PathLike[str] | None = None) -> None:
        self.problems = list(problems)
        self.source = str(source) if source is not None else None
        where = f" in {self.source}" if self.source else ""
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''}{where}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))


class ConfigProblems(ValueError):
    """Raised inside validators to report several problems, each at its own relative path."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{_path_str(p)}: {m}" for p, m in problems))


# ------------------------------------------------------------------------------------------
# ${VAR} substitution and paths
# ------------------------------------------------------------------------------------------


def _context(info: ValidationInfo) -> dict[str, Any]:
    return info.context if isinstance(info.context, dict) else {}


def expand_env(text: str, env: Mapping[str, str], secrets: set[str] | None = None) -> str:
    """``${VAR}`` / ``${VAR:-default}`` replaced from ``env``; ``$$`` is a literal ``$``.

    Raises ValueError naming the variable (never its value) when it is unset or the reference
    is malformed. Values of secret-looking variables are added to ``secrets``.
    """

    def sub(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "$$":
            return "$"
        body = m.group("body")
        if body is None:
            raise ValueError("'${' without a closing '}' (write $$ for a literal $)")
        name, sep, default = body.partition(":-")
        if not _ENV_NAME.match(name):
            raise ValueError(f"${{{body}}} is not a valid variable reference")
        value = env.get(name)
        if value is None or (sep and value == ""):
            if sep:
                return default
            raise ValueError(f"environment variable {name} is not set")
        if secrets is not None and _SECRET_VAR.search(name) and value:
            secrets.add(value)
        return value

    return _ENV_REF.sub(sub, text)


def _expand(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str) or "$" not in value:
        return value
    ctx = _context(info)
    env = ctx.get("env", os.environ)
    return expand_env(value, env, ctx.get("secrets"))


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    value = value.expanduser()
    base = _context(info).get("base_dir")
    if base is not None and not value.is_absolute():
        value = Path(os.path.normpath(Path(base) / value))
    return value


def _check_files(info: ValidationInfo) -> bool:
    return bool(_context(info).get("check_files", True))


def _existing_file(value: Path, info: ValidationInfo) -> Path:
    value = _resolve_path(value, info)
    if _check_files(info) and not value.is_file():
        raise ValueError(
            f"file not found: {value}" if not value.exists() else f"not a file: {value}"
        )
    return value


EnvStr = Annotated[str, BeforeValidator(_expand)]
"""A string in which ``${VAR}`` is substituted."""
EnvPath = Annotated[Path, BeforeValidator(_expand), AfterValidator(_resolve_path)]
"""A path (``${VAR}`` substituted, relative to the config file's directory)."""
ExistingFile = Annotated[Path, BeforeValidator(_expand), AfterValidator(_existing_file)]
"""A path that must name an existing file (checked when the config is loaded)."""


def _weights_file(value: Path, info: ValidationInfo) -> Path:
    """A weights path, or a known/cached model's name (`pipeline.models_registry`)."""
    from pipeline.models_registry import resolve_weights

    if _check_files(info):
        base = _context(info).get("base_dir")
        value = resolve_weights(value, None if base is None else Path(base))
    return _existing_file(value, info)


WeightsFile = Annotated[Path, BeforeValidator(_expand), AfterValidator(_weights_file)]
"""An existing weights file, or the name of a model `edgestream models pull` cached."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)

    def __repr_args__(self) -> Any:
        # repr() and str() end up in logs and tracebacks: never show a credential there.
        for name, value in super().__repr_args__():
            if isinstance(value, str):
                secret = name is not None and _SECRET_FIELD.search(name) and value
                value = REDACTED if secret else redact_url(value)
            yield name, value


# ------------------------------------------------------------------------------------------
# Cameras
# ------------------------------------------------------------------------------------------


class CameraDefaults(_Strict):
    """Decode settings shared by every camera (`stages.decode.CameraConfig`, less the url).

    Any camera entry may set any of these again for itself.
    """

    transport: Literal["tcp", "udp"] = Field(
        default="tcp",
        description="RTSP lower transport: tcp (no packet loss, works through NAT; default) or "
        "udp (lowest latency on a clean LAN, loses packets under load). Ignored for other sources.",
    )
    loop: bool = Field(
        default=False, description="File sources only: restart at end of file instead of ending."
    )
    detect_fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Forward at most this many frames per second to detection (frames/s, "
        "0 < fps <= 1000), spread over the stream's timeline; null forwards every frame.",
    )
    open_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Bound on connecting up to the first packet (s, 0 < t <= 600).",
    )
    read_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Bound on one blocking demuxer read (s, 0 < t <= 600).",
    )
    stall_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="No decoded frame for this long while streaming marks the camera stalled "
        "and reconnects (s, 0 < t <= 600).",
    )
    first_frame_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="After connecting, how long packets may flow without a decodable frame "
        "(s, 0 < t <= 600); longer than the stall timeout for long-GOP cameras.",
    )
    backoff_min_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="First reconnect delay (s, 0 < t <= 3600); doubles per failure.",
    )
    backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest reconnect delay (s, 0 < t <= 3600, >= backoff_min_s).",
    )
    backoff_jitter: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Relative random jitter on each reconnect delay (fraction, 0 <= j < 1), so "
        "cameras behind one failed switch do not reconnect in lock-step.",
    )
    backoff_reset_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Streaming this long resets the reconnect delay to the minimum (s, 0..3600).",
    )
    hwaccel: EnvStr | None = Field(
        default=None,
        description="FFmpeg hardware decoder device type (cuda, vaapi, qsv...); null decodes in "
        "software. Falls back to software once, with a warning, when unavailable.",
    )
    decoder_threads: int = Field(
        default=1,
        ge=0,
        le=64,
        description="FFmpeg decoder threads per camera (count, 0..64; 0 lets FFmpeg choose). "
        "1 suits many cameras per host; each extra frame thread adds a frame of latency.",
    )
    decoder_thread_type: Literal["auto", "frame", "slice"] = Field(
        default="auto",
        description="FFmpeg threading: auto (frame + slice), frame or slice (no latency).",
    )
    options: dict[str, EnvStr] = Field(
        default_factory=dict,
        description="Extra FFmpeg demuxer options passed as they are (strings); a camera's "
        "options are merged over these key by key.",
    )
    frame_rate_hz: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="The camera's real frame rate (frames/s, 0 < f <= 1000), used by the tracker "
        "to turn lost_track_seconds into frames; null uses tracker.default_frame_rate_hz.",
    )
    classes: list[int | str] | None = Field(
        default=None,
        min_length=1,
        description="Publish only these classes (class names as the model names them, or class "
        "ids); the others are dropped before tracking. null: every class.",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraDefaults:
        if self.backoff_max_s < self.backoff_min_s:
            raise ConfigProblems(
                [(("backoff_max_s",), f"must be >= backoff_min_s ({self.backoff_min_s})")]
            )
        return self


_DEFAULT_FIELDS = tuple(CameraDefaults.model_fields)


def url_kind(url: str) -> Literal["rtsp", "http", "file", "v4l2"]:
    """Which opener serves ``url`` (the same rule as `stages.decode.CameraConfig.kind`)."""
    lower = url.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lower.startswith(("http://", "https://")):
        return "http"
    if lower.startswith("v4l2://") or lower.startswith("/dev/video"):
        return "v4l2"
    return "file"


def _camera_url(value: str, info: ValidationInfo) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if url_kind(value) != "file":
        if "://" not in value or not value.split("://", 1)[1]:
            raise ValueError(f"{redact_url(value)} has no host")
        return value
    raw = value[len("file://") :] if value.startswith("file://") else value
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", raw):
        raise ValueError(
            f"unsupported URL scheme in {redact_url(value)} (rtsp, rtsps, http, https, file, "
            "v4l2 or a file path)"
        )
    path = _resolve_path(Path(raw), info)
    if _check_files(info) and not path.is_file():
        raise ValueError(f"video file not found: {path}")
    return str(path)


class CameraEntry(CameraDefaults):
    """One camera: its id and url, plus any `CameraDefaults` field as an override."""

    id: str = Field(
        ...,
        pattern=CAMERA_ID_PATTERN,
        description="Camera id: 1-64 of [A-Za-z0-9_.-]; unique; names Redis keys and metrics.",
    )
    url: Annotated[str, BeforeValidator(_expand), AfterValidator(_camera_url)] = Field(
        ...,
        description="rtsp[s]://[user[:${PASSWORD}]@]host[:port]/path, http(s):// (MJPEG, HLS), a "
        "video file path (relative to this file) or /dev/videoN. Passwords belong in ${VAR} or "
        "password_file; they are redacted in every log line and error.",
    )
    password_file: ExistingFile | None = Field(
        default=None,
        description="File holding the password of the url's user (a mounted secret; trailing "
        "newline stripped), inserted into the url when the camera opens.",
    )
    realtime: bool | None = Field(
        default=None,
        description="Override of the top-level realtime for this camera (null: inherit).",
    )

    @model_validator(mode="after")
    def _password_needs_user(self) -> CameraEntry:
        if self.password_file is not None:
            parts = urlsplit(self.url)
            if url_kind(self.url) == "file" or not parts.username:
                raise ConfigProblems(
                    [(("password_file",), "needs a user name in the url (scheme://user@host/...)")]
                )
            if parts.password:
                raise ConfigProblems(
                    [(("password_file",), "the url already has a password; keep only one")]
                )
        return self


class CameraSettings(CameraDefaults):
    """The effective settings of one camera: `camera_defaults` merged with its entry."""

    id: str = Field(..., description="Camera id.")
    url: str = Field(..., description="Camera url (may hold a password: log `redacted_url`).")
    password_file: Path | None = Field(
        default=None, description="Password file for the url's user."
    )
    realtime: bool = Field(
        default=True, description="Live policy: drop oldest (true) or block (false)."
    )

    @property
    def kind(self) -> Literal["rtsp", "http", "file", "v4l2"]:
        return url_kind(self.url)

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)


# ------------------------------------------------------------------------------------------
# Model, batching, preprocess, tracker
# ------------------------------------------------------------------------------------------


class ModelConfig(_Strict):
    """The detector: YOLO-NAS weights and the backend that runs them."""

    arch: Arch | None = Field(
        default=None,
        description="Network: yolo_nas_n, _s, _m or _l; null takes it from the "
        "weights file (checkpoints, safetensors, ONNX and engines say or show their arch).",
    )
    weights: WeightsFile | None = Field(
        default=None,
        description="Weights file (.pt/.pth checkpoint, .safetensors, .onnx, .engine/.plan), "
        "relative to this file, or a model name from `edgestream models`; must exist. "
        "Exactly one of weights and random_weights.",
    )
    random_weights: bool = Field(
        default=False,
        description="Seeded random network instead of weights (demo and tests only: every "
        "stage runs, the boxes are meaningless). Needs arch and the torch backend.",
    )
    num_classes: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Class count (1..100000); null: from the weights.",
    )
    class_names: list[EnvStr] | None = Field(
        default=None,
        description="Class names in class-id order; null: from the weights file or COCO's 80.",
    )
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt"] = Field(
        default="auto",
        description="Inference backend; auto picks by suffix (.onnx onnxruntime, "
        ".engine/.plan tensorrt, else torch), except that a PyTorch checkpoint on the CPU runs "
        "as its ONNX export on onnxruntime (exported once, cached by the checkpoint's hash "
        "under ~/.cache/edgestream/onnx; about 2x faster there).",
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="auto (cuda when present, else cpu), cpu, cuda or cuda:N.",
    )
    half: bool = Field(default=False, description="FP16 inference (torch backend on CUDA only).")
    threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Intra-op CPU threads for the backend (count, 0..256; 0: default).",
    )
    conf_threshold: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Score threshold (0..1); lower finds more, and more noise.",
    )
    iou_threshold: float = Field(
        default=0.7, ge=0, le=1, description="NMS IoU above which the lower-scored box goes (0..1)."
    )
    max_detections: int = Field(
        default=300, ge=1, le=10_000, description="Detections kept per image after NMS (1..10000)."
    )
    top_k: int = Field(
        default=1024,
        ge=1,
        le=100_000,
        description="Candidates kept before NMS (1..100000); bounds NMS cost.",
    )
    multi_label: bool = Field(
        default=False,
        description="A box may yield several (class, score) pairs: one object published as "
        "car, person and bicycle at once. false (the runtime default): one box per object, "
        "its best class. true is the reference predict()'s default, which `edgestream detect` "
        "and the parity tests keep.",
    )

    @model_validator(mode="after")
    def _weights_choice(self) -> ModelConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.weights is None and not self.random_weights:
            problems.append((("weights",), "required (or set random_weights: true for a demo)"))
        if self.weights is not None and self.random_weights:
            problems.append((("random_weights",), "set either weights or random_weights, not both"))
        if self.random_weights and self.arch is None:
            problems.append((("arch",), "random_weights needs an arch (yolo_nas_s, _m or _l)"))
        if self.random_weights and self.backend not in ("auto", "torch"):
            problems.append((("backend",), "random_weights runs on the torch backend only"))
        names, n = self.class_names, self.num_classes
        if names is not None and n is not None and len(names) != n:
            problems.append(
                (
                    ("class_names",),
                    f"has {len(names)} names but num_classes is {n}",
                )
            )
        if problems:
            raise ConfigProblems(problems)
        return self


class BatchingConfig(_Strict):
    """Deadline-aware batching in the detect stage."""

    max_batch: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Frames per inference batch (1..64); a batch leaves as soon as it is full. "
        "TensorRT engines need an optimization profile up to this size.",
    )
    max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        le=1000,
        description="A batch leaves at most this long after its first frame arrived, full or "
        "not (ms, 0..1000): the latency a frame may spend waiting for company.",
    )
    slots_per_camera: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Realtime cameras: frames of one camera that may wait ahead of the model "
        "(1..16). Newest frame wins: when they are all taken, the oldest waiting frame is "
        "replaced by the new one and counted as superseded. 1 gives the lowest latency under "
        "overload; more lets a camera fill a batch on its own when the model is idle.",
    )
    max_frame_age_ms: float | None = Field(
        default=500.0,
        ge=1,
        le=60_000,
        description="Realtime cameras with slots_per_camera > 1: a waiting frame older than "
        "this (capture to batch, ms, 1..60000) is superseded by a newer frame of the same "
        "camera. The newest frame of a camera is never dropped for age, and nothing is "
        "dropped after detection. null: only slots decide. Ignored for realtime: false cameras.",
    )


class PreprocessConfig(_Strict):
    """Letterbox workers between decode and detect."""

    workers: int = Field(
        default=2,
        ge=1,
        le=32,
        description="Preprocess processes (1..32). Each letterboxes ~1 frame per 2-5 ms of CPU; "
        "more than the cores left after decode and detect only adds contention.",
    )


class TrackerSection(_Strict):
    """Tracker parameters (`stages.track.TrackerConfig`); defaults are the product defaults."""

    high_score: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Score (0..1) for the first association and new tracks.",
    )
    low_score: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Scores in [low_score, high_score) only keep tracks alive (0..1).",
    )
    new_track_score: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="An unmatched detection starts a track at this score (0..1).",
    )
    match_iou: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Minimum score-fused IoU of the first association (0..1).",
    )
    low_match_iou: float = Field(
        default=0.5, ge=0, le=1, description="Minimum IoU of the low-score association (0..1)."
    )
    tentative_match_iou: float = Field(
        default=0.3, ge=0, le=1, description="Minimum IoU to match a tentative track (0..1)."
    )
    min_hits: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Matched frames before a track is confirmed (frames, 1..1000).",
    )
    lost_track_seconds: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="How long a lost track is kept to take its id back (s, 0..3600).",
    )
    direction_weight: float = Field(
        default=0.2,
        ge=0,
        le=100,
        description="Weight of the motion-direction term (0..100; 0 disables).",
    )
    direction_delta_frames: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Frames between the observations giving direction (1..1000).",
    )
    observation_recovery: bool = Field(
        default=True,
        description="Re-run the Kalman filter along a virtual path when a lost track returns.",
    )
    last_box_match_iou: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Minimum IoU with a track's last box (0..1; 1 disables).",
    )
    min_box_area: float = Field(
        default=10.0, ge=0, le=1e8, description="Smaller detections are ignored (px², 0..1e8)."
    )
    per_class: bool = Field(
        default=False, description="Match detections only to tracks of their class."
    )
    position_noise: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="Kalman position noise (fraction of box height/frame, 0 < x <= 10).",
    )
    velocity_noise: float = Field(
        default=0.00625,
        gt=0,
        le=10,
        description="Kalman velocity noise (fraction of box height/frame, 0 < x <= 10).",
    )
    appearance_weight: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="Weight of the appearance cue (colour layout of each box, computed by the "
        "detect stage when > 0) when overlapping tracks and detections are matched (0..10; "
        "0 disables). Helps keep ids apart when people cross.",
    )
    appearance_momentum: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Weight of a track's old look per frame in its running average (0..1).",
    )
    output_kalman_box: bool = Field(
        default=False, description="Report the filtered box instead of the matched detection's box."
    )
    default_frame_rate_hz: float = Field(
        default=30.0,
        gt=0,
        le=1000,
        description="Frame rate (frames/s, 0 < f <= 1000) for cameras without frame_rate_hz.",
    )
    state_dir: EnvPath | None = Field(
        default=None,
        description="Folder where each camera's next track id is kept so ids stay unique "
        "across restarts; null keeps ids in memory (they restart at 1).",
    )

    @model_validator(mode="after")
    def _scores(self) -> TrackerSection:
        if self.low_score > self.high_score:
            raise ConfigProblems([(("low_score",), f"must be <= high_score ({self.high_score})")])
        return self


# ------------------------------------------------------------------------------------------
# Sinks
# ------------------------------------------------------------------------------------------


def _redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
    return value


def _camera_template(value: str | None) -> str | None:
    if value is not None and "{camera}" not in value:
        raise ValueError("must contain {camera}")
    return value


CameraTemplate = Annotated[str, BeforeValidator(_expand), AfterValidator(_camera_template)]


def _env_var_set(value: str, info: ValidationInfo) -> str:
    ctx = _context(info)
    env = ctx.get("env", os.environ)
    if not _ENV_NAME.match(value):
        raise ValueError("must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
    if value not in env:
        raise ValueError(f"environment variable {value} is not set")
    secret = env[value]
    if secret and ctx.get("secrets") is not None:
        ctx["secrets"].add(secret)
    return value


class RedisSection(_Strict):
    """Redis Streams sink (`stages.sinks.redis.RedisSinkConfig`)."""

    url: Annotated[str, BeforeValidator(_expand), AfterValidator(_redis_url)] = Field(
        default="redis://localhost:6379/0",
        description="redis://host:port/db, rediss:// (TLS) or unix://path. A password here "
        "should come from ${VAR}; better, use password_env or password_file.",
    )
    username: EnvStr | None = Field(
        default=None, description="ACL user (Redis 6+); null: from the url."
    )
    password_env: Annotated[str, AfterValidator(_env_var_set)] | None = Field(
        default=None,
        description="Name of the environment variable holding the password (must be set).",
    )
    password_file: ExistingFile | None = Field(
        default=None,
        description="File holding the password (a mounted secret); wins over password_env.",
    )
    tls_ca_file: ExistingFile | None = Field(default=None, description="PEM CA for rediss://.")
    tls_cert_file: ExistingFile | None = Field(default=None, description="PEM client certificate.")
    tls_key_file: ExistingFile | None = Field(default=None, description="PEM client key.")
    tls_check_hostname: bool = Field(
        default=True, description="Verify the server certificate names the url's host."
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, le=600, description="Connect bound (s, 0 < t <= 600)."
    )
    socket_timeout_s: float = Field(
        default=2.0, gt=0, le=600, description="Reply bound (s, 0 < t <= 600)."
    )
    key_template: CameraTemplate = Field(
        default="edgestream:{camera}:detections", description="Detections stream key; has {camera}."
    )
    events_key_template: CameraTemplate | None = Field(
        default="edgestream:{camera}:events",
        description="Track events stream key with {camera}; null: events are not published.",
    )
    maxlen: int = Field(
        default=18_000,
        ge=1,
        le=100_000_000,
        description="Approximate entries kept per detections stream (count, 1..1e8; 30 fps x "
        "10 min = 18000).",
    )
    events_maxlen: int = Field(
        default=10_000,
        ge=1,
        le=100_000_000,
        description="Approximate entries per events stream (1..1e8).",
    )
    publish_channel: CameraTemplate | None = Field(
        default=None,
        description="Also PUBLISH each message on this channel (has {camera}); null: off.",
    )
    latest_hash: CameraTemplate | None = Field(
        default=None,
        description="Hash per camera keeping the newest message (has {camera}); null: off.",
    )
    flush_interval_ms: float = Field(
        default=10.0,
        gt=0,
        le=10_000,
        description="Longest a message waits before its flush (ms, 0..10000).",
    )
    max_batch_messages: int = Field(
        default=500, ge=1, le=100_000, description="Messages per pipelined round trip (1..100000)."
    )
    max_buffer_messages: int = Field(
        default=100_000,
        ge=1,
        le=100_000_000,
        description="Outage buffer in messages (1..1e8); when full, the oldest result of a live "
        "camera is dropped (counted) and realtime: false cameras wait for room.",
    )
    max_buffer_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        le=64 * 1024**3,
        description="Outage buffer in bytes of JSON (1 KiB..64 GiB).",
    )
    reconnect_backoff_min_s: float = Field(
        default=0.1, gt=0, le=3600, description="First reconnect wait (s, 0 < t <= 3600)."
    )
    reconnect_backoff_max_s: float = Field(
        default=5.0, gt=0, le=3600, description="Longest reconnect wait (s, 0 < t <= 3600)."
    )
    close_timeout_s: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="How long shutdown keeps writing the buffer (s, 0..600).",
    )
    give_up_after_s: float | None = Field(
        default=None,
        gt=0,
        le=31_536_000,
        description="realtime: false cameras lose nothing to a Redis outage: the sink holds the "
        "pipeline and the run ends once every result is written. After an outage this long "
        "(s) it stops holding them; what is then lost is counted and the run exits 3. "
        "null: never give up.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RedisSection:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.events_key_template == self.key_template:
            problems.append((("events_key_template",), "must differ from key_template"))
        if self.reconnect_backoff_max_s < self.reconnect_backoff_min_s:
            problems.append((("reconnect_backoff_max_s",), "must be >= reconnect_backoff_min_s"))
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if any(f is not None for f in tls) and not self.url.startswith("rediss://"):
            problems.append((("url",), "tls_* files are set but the url is not rediss://"))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append((("tls_key_file",), "tls_cert_file and tls_key_file go together"))
        if problems:
            raise ConfigProblems(problems)
        return self


class JsonlSection(_Strict):
    """JSON lines files (`stages.sinks.jsonl.JsonlSinkConfig`), one message per line."""

    path: EnvPath = Field(
        ...,
        description="Output file, relative to this file; with {camera} in it, one file per camera.",
    )
    events: bool = Field(default=True, description="Also write track lifecycle events.")
    append: bool = Field(
        default=False, description="Append to existing files instead of replacing them."
    )
    flush_each_line: bool = Field(
        default=False, description="Flush after every line (for tail -f)."
    )
    fsync_on_close: bool = Field(default=True, description="Make the data durable before exit.")


class VideoSection(_Strict):
    """Annotated video files, one per camera (for inspection, not production)."""

    dir: EnvPath = Field(..., description="Output folder, relative to this file.")
    fps: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description="Output frame rate (frames/s, 0..1000); null: the camera's.",
    )
    untracked: bool = Field(
        default=False,
        description="Also draw boxes no track holds (grey); default: tracked boxes only.",
    )


class SinksConfig(_Strict):
    """Where results go; any combination, at least one when the sink stage runs here."""

    redis: RedisSection | None = Field(default=None, description="Redis Streams sink; null: off.")
    jsonl: JsonlSection | None = Field(default=None, description="JSON lines sink; null: off.")
    video: VideoSection | None = Field(default=None, description="Annotated video sink; null: off.")


# ------------------------------------------------------------------------------------------
# Transport, metrics, logging
# ------------------------------------------------------------------------------------------

_ENDPOINT = re.compile(r"^(?:(?P<mode>bind|connect):)?(?P<scheme>ipc|tcp)://(?P<addr>.+)$")


def parse_endpoint(value: str) -> tuple[str | None, str, str]:
    """``"bind:tcp://*:5555"`` -> ``("bind", "tcp", "*:5555")``; mode None when not written.

    Raises ValueError for anything but ``auto`` handled by the caller.
    """
    m = _ENDPOINT.match(value)
    if not m:
        raise ValueError(
            "must be 'auto', 'bind:ipc:///path', 'connect:ipc:///path', "
            "'bind:tcp://*:PORT' or 'connect:tcp://host:PORT'"
        )
    mode, scheme, addr = m.group("mode"), m.group("scheme"), m.group("addr")
    if scheme == "tcp":
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"tcp endpoint needs host:port with port 1..65535, got {addr!r}")
        if mode == "connect" and host == "*":
            raise ValueError("a connect endpoint needs a host name or address, not '*'")
    return mode, scheme, addr


def _endpoint(value: str) -> str:
    value = value.strip()
    if value != "auto":
        parse_endpoint(value)
    return value


def _existing_dir(value: Path, info: ValidationInfo) -> Path:
    value = _resolve_path(value, info)
    if _check_files(info) and not value.is_dir():
        raise ValueError(
            f"folder not found: {value}" if not value.exists() else f"not a folder: {value}"
        )
    return value


class CurveConfig(_Strict):
    """ZeroMQ CURVE keys for tcp edges (encrypted; only authorized clients get through).

    The side that binds is the CURVE server and needs server_secret_key_file and
    authorized_clients_dir; the side that connects needs client_secret_key_file and
    server_public_key_file. Each host gives only its own side's two (both when one process
    tree runs both ends). Files from `edgestream keys generate DIR` (pyzmq certificate format);
    in Kubernetes mount them from a Secret. A client whose key is not authorized is refused
    and counted (transport.auth_refused in the stage's stats, one warning per key)."""

    server_secret_key_file: ExistingFile | None = Field(
        default=None,
        description="Binding side: the server's key pair (server.key_secret, mode 0600).",
    )
    authorized_clients_dir: (
        Annotated[Path, BeforeValidator(_expand), AfterValidator(_existing_dir)] | None
    ) = Field(
        default=None,
        description="Binding side: folder of client public keys (*.key); only these connect. "
        "Read when the stage starts.",
    )
    client_secret_key_file: ExistingFile | None = Field(
        default=None,
        description="Connecting side: this client's key pair (client.key_secret, mode 0600).",
    )
    server_public_key_file: ExistingFile | None = Field(
        default=None,
        description="Connecting side: the server's public key (server.key).",
    )


class EdgeConfig(_Strict):
    """One ZeroMQ edge between two stages."""

    endpoint: Annotated[str, BeforeValidator(_expand), AfterValidator(_endpoint)] = Field(
        default="auto",
        description="auto (ipc:// plus shared memory inside this process tree), "
        "'bind:ipc:///path', 'bind:tcp://*:PORT' or 'connect:tcp://host:PORT'. Across hosts use "
        "tcp (pixels travel inline); one side binds, the other connects.",
    )
    capacity: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description="Messages queued on this edge (ZeroMQ high-water mark, 1..10000). When full, "
        "realtime cameras drop (counted), realtime: false blocks. Small keeps latency bounded.",
    )
    curve: CurveConfig | None = Field(
        default=None,
        description="CURVE keys for this tcp edge (replaces transport.curve for it); refused "
        "on an auto or ipc edge.",
    )


class EdgesConfig(_Strict):
    """The four edges of the pipeline, named by what travels on them."""

    frames: EdgeConfig = Field(default_factory=EdgeConfig, description="decode -> preprocess.")
    items: EdgeConfig = Field(
        default_factory=lambda: EdgeConfig(capacity=32),
        description="preprocess -> detect (letterboxed frames; deep enough for two batches).",
    )
    detections: EdgeConfig = Field(
        default_factory=lambda: EdgeConfig(capacity=64), description="detect -> track."
    )
    tracked: EdgeConfig = Field(
        default_factory=lambda: EdgeConfig(capacity=64), description="track -> sink."
    )


class TransportConfig(_Strict):
    """How stages talk and which of them this process tree runs."""

    stages: list[StageName] = Field(
        default_factory=lambda: list(STAGES),
        min_length=1,
        description="Stages this process tree runs (decode, preprocess, detect, track, sink); "
        "the others run elsewhere, reached over the edges' tcp endpoints.",
    )
    edges: EdgesConfig = Field(default_factory=EdgesConfig, description="Per-edge settings.")
    ipc_dir: EnvPath | None = Field(
        default=None,
        description="Folder for auto ipc:// socket files; null: a private temporary folder.",
    )
    curve: CurveConfig | None = Field(
        default=None,
        description="CURVE keys for every tcp edge (an edge's own curve replaces it); auto and "
        "ipc edges stay as they are. null: tcp edges accept anyone who reaches the port.",
    )

    def curve_of(self, edge: str) -> CurveConfig | None:
        """The CURVE keys of ``edge``: its own, else transport.curve on a tcp edge."""
        cfg: EdgeConfig = getattr(self.edges, edge)
        if cfg.endpoint == "auto" or parse_endpoint(cfg.endpoint)[1] != "tcp":
            return None
        return cfg.curve or self.curve

    @model_validator(mode="after")
    def _consistent(self) -> TransportConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            if stage in seen:
                problems.append((("stages", i), f"{stage} is listed twice"))
            seen.add(stage)
        for name, (src, dst) in EDGES.items():
            edge: EdgeConfig = getattr(self.edges, name)
            here = (src in seen, dst in seen)
            if not any(here):
                continue
            if all(here):
                continue
            remote = dst if here[0] else src
            if edge.endpoint == "auto":
                problems.append(
                    (
                        ("edges", name, "endpoint"),
                        f"the {remote} stage runs elsewhere (not in transport.stages), so this "
                        "edge needs an explicit endpoint such as 'connect:tcp://host:5555', "
                        "not 'auto'",
                    )
                )
            elif parse_endpoint(edge.endpoint)[1] == "ipc":
                pass  # another process tree on this host: allowed
        for name, (src, dst) in EDGES.items():
            edge = getattr(self.edges, name)
            if edge.curve is not None and self.curve_of(name) is None:
                problems.append(
                    (("edges", name, "curve"), "CURVE is for tcp edges; this edge is auto/ipc")
                )
            keys = self.curve_of(name)
            if keys is None or not (src in seen or dst in seen):
                continue
            written = parse_endpoint(edge.endpoint)[0] or "bind"
            sides = (
                {"bind", "connect"}
                if src in seen and dst in seen
                else {written}  # one side here: the written endpoint is this side's
            )
            for side in sorted(sides):
                need = (
                    ("server_secret_key_file", "authorized_clients_dir")
                    if side == "bind"
                    else ("client_secret_key_file", "server_public_key_file")
                )
                lacking = [n for n in need if getattr(keys, n) is None]
                if lacking:
                    where = ("edges", name, "curve") if edge.curve is not None else ("curve",)
                    what = " and ".join(lacking)
                    problems.append((where, f"the {side} side of {name} runs here: needs {what}"))
        if problems:
            raise ConfigProblems(problems)
        return self


DEFAULT_METRICS_PORT = 9752
"""/metrics, /healthz, /readyz: a port no widely deployed exporter or service takes (9100 is
node_exporter's, 9400 DCGM's, 9464 OpenTelemetry's; 9752 is in no IANA or nmap-services
entry). The Prometheus list of exporter ports is full from 9100 to 9999, so some niche
exporter may have claimed it there: ``--metrics-port`` / ``metrics.port`` move it."""


class MetricsConfig(_Strict):
    """The HTTP endpoint serving /metrics, /healthz and /readyz."""

    host: str = Field(
        default="0.0.0.0", description="Address to listen on (0.0.0.0: every interface)."
    )
    port: int = Field(
        default=DEFAULT_METRICS_PORT,
        ge=0,
        le=65535,
        description="TCP port (0..65535); 0 disables the server. The default, 9752, is no "
        "common exporter's (9100 is node_exporter's); --metrics-port overrides it.",
    )


class LoggingConfig(_Strict):
    """Log lines on stderr."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR (any case).")
    format: Literal["text", "json"] = Field(
        default="text",
        description="text (one readable line per record) or json (one JSON object per line).",
    )
    summary_interval_s: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="A one-line summary (fps, drops, latency per camera) every this many "
        "seconds (s, 0..86400; 0: no summary).",
    )


# ------------------------------------------------------------------------------------------
# The whole pipeline
# ------------------------------------------------------------------------------------------


class PipelineConfig(_Strict):
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
    model: ModelConfig = Field(..., description="The detector.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Batching.")
    preprocess: PreprocessConfig = Field(
        default_factory=PreprocessConfig, description="Preprocess workers."
    )
    tracker: TrackerSection = Field(default_factory=TrackerSection, description="Tracker.")
    sinks: SinksConfig = Field(default_factory=SinksConfig, description="Result sinks.")
    transport: TransportConfig = Field(
        default_factory=TransportConfig, description="Edges and the stages run here."
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics/health.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")

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


# ------------------------------------------------------------------------------------------
# Loading and errors
# ------------------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            line = key_node.start_mark.line + 1
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} at line {line} (first at line {first})"
            )
        seen[key] = key_node
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_yaml(text: str, source: str = "<config>") -> dict[str, Any]:
    """The YAML document as a dict; `ConfigError` for syntax errors, duplicates, non-mappings."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}invalid YAML: {problem}"], source) from None
    if data is None:
        raise ConfigError(["the file is empty"], source)
    if not isinstance(data, dict):
        raise ConfigError(
            ["the top level must be a mapping of keys (model:, cameras:, ...)"], source
        )
    return data


def load_config(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
) -> PipelineConfig:
    """Read and validate the YAML file at ``path``.

    env: where ``${VAR}`` comes from (default ``os.environ``).
    check_files: check that weights, secret files and video files exist (``config check``
        on another machine may turn it off).
    Raises `ConfigError` listing every problem with its key path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read the file: {exc.strerror or exc}"], path) from None
    data = parse_yaml(text, str(path))
    return validate_config(
        data, base_dir=path.resolve().parent, env=env, check_files=check_files, source=str(path)
    )


def validate_config(
    data: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    check_files: bool = True,
    source: str | None = None,
) -> PipelineConfig:
    """Validate already parsed data (see `load_config`)."""
    secrets: set[str] = set()
    context = {
        "env": os.environ if env is None else env,
        "secrets": secrets,
        "base_dir": Path(base_dir) if base_dir is not None else None,
        "check_files": check_files,
    }
    try:
        cfg = PipelineConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc), source) from None
    cfg._secrets = cfg._secrets | frozenset(secrets) | frozenset(_file_secrets(cfg, check_files))
    return cfg


def _file_secrets(cfg: PipelineConfig, check_files: bool) -> set[str]:
    out: set[str] = set()
    files = [c.password_file for c in cfg.cameras]
    if cfg.sinks.redis is not None:
        files.append(cfg.sinks.redis.password_file)
    for f in files:
        if f is not None and check_files:
            try:
                value = read_secret_file(f)
            except OSError:
                continue
            if value:
                out.add(value)
    return out


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """A secret file's content with the trailing newline stripped."""
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n")


def _path_str(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _unwrap(annotation: Any) -> Iterator[Any]:
    """Every type inside an annotation (Optional, list, dict values, Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is None:
        yield annotation
        return
    if origin is typing.Annotated:
        yield from _unwrap(typing.get_args(annotation)[0])
        return
    if origin in (typing.Union, types.UnionType, list, dict, tuple):
        args = typing.get_args(annotation)
        if origin is dict:
            args = args[1:]
        for arg in args:
            yield from _unwrap(arg)
        return
    yield annotation


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` (for did-you-mean hints)."""
    model: type[BaseModel] | None = PipelineConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = next(
            (t for t in _unwrap(annotation) if isinstance(t, type) and issubclass(t, BaseModel)),
            None,
        )
    return model


def _num(value: Any) -> Any:
    """1000.0 -> 1000 in messages; other values unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    got = (
        f", got {value!r}"
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else ""
    )
    if kind == "missing":
        return "required key is missing"
    if kind == "greater_than_equal":
        return f"must be >= {_num(ctx.get('ge'))}{got}"
    if kind == "greater_than":
        return f"must be > {_num(ctx.get('gt'))}{got}"
    if kind == "less_than_equal":
        return f"must be <= {_num(ctx.get('le'))}{got}"
    if kind == "less_than":
        return f"must be < {_num(ctx.get('lt'))}{got}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    msg = str(err.get("msg", kind))
    if kind == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    parsing = kind in ("int_parsing", "float_parsing", "bool_parsing")
    if parsing and isinstance(value, str) and "${" in value:
        msg += " (${VAR} is substituted in string fields only)"
    return msg


def format_errors(exc: ValidationError) -> list[str]:
    """One ``path: message`` line per problem, never quoting a string value (secrets)."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, ConfigProblems):
            for rel, msg in error.problems:
                lines.append(f"{_path_str(loc + rel)}: {msg}")
            continue
        if err["type"] == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            model = _model_at(loc[:-1])
            hint = ""
            if model is not None:
                close = difflib.get_close_matches(key, list(model.model_fields), n=2, cutoff=0.6)
                if close:
                    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)"
                elif len(model.model_fields) <= 12:
                    hint = f" (known keys: {', '.join(model.model_fields)})"
            lines.append(f"{_path_str(loc)}: unknown key{hint}")
            continue
        lines.append(f"{_path_str(loc)}: {_message(err)}")
    return lines


# ------------------------------------------------------------------------------------------
# Helpers for the stage configs (the conversions themselves are in `pipeline.procs`, the one
# module that imports the stages)
# ------------------------------------------------------------------------------------------


def camera_url_with_password(settings: CameraSettings) -> str:
    """The url to open, with ``password_file``'s password inserted (percent-encoded)."""
    if settings.password_file is None:
        return settings.url
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(settings.url)
    password = quote(read_secret_file(settings.password_file), safe="")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:{password}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; others unchanged."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------------
# Building a config without YAML
# ------------------------------------------------------------------------------------------


def quick_config(
    cameras: Mapping[str, str],
    weights: str | os.PathLike[str] | None = None,
    arch: str | None = None,
    backend: str = "auto",
    redis_url: str | None = None,
    realtime: bool = True,
    metrics_port: int = DEFAULT_METRICS_PORT,
    *,
    random_weights: bool = False,
    jsonl_path: str | os.PathLike[str] | None = None,
    device: str = "auto",
    name: str = "edgestream",
    detect_fps: float | None = None,
    conf: float | None = None,
    classes: Sequence[int | str] | None = None,
    video_dir: str | os.PathLike[str] | None = None,
) -> PipelineConfig:
    """The config of ``edgestream run --camera ID=URL ... --weights FILE`` (no YAML).

    Results go to Redis when ``redis_url`` is given, to ``jsonl_path`` when given (both may
    be), else to ``runs/<name>/{camera}.jsonl`` (`default_jsonl_path`); annotated videos to
    ``video_dir`` when given. ``detect_fps`` and ``classes`` apply to every camera
    (``camera_defaults``), ``conf`` is ``model.conf_threshold``. ``${VAR}`` in urls is
    substituted from the environment. Raises `ConfigError` like `load_config`.
    """
    sinks: dict[str, Any] = {}
    if redis_url is not None:
        sinks["redis"] = {"url": redis_url}
    if jsonl_path is not None or redis_url is None:
        sinks["jsonl"] = {"path": str(jsonl_path or default_jsonl_path(name))}
    if video_dir is not None:
        sinks["video"] = {"dir": str(video_dir)}
    defaults: dict[str, Any] = {}
    if detect_fps is not None:
        defaults["detect_fps"] = detect_fps
    if classes is not None:
        defaults["classes"] = list(classes)
    model: dict[str, Any] = {"backend": backend, "device": device}
    if conf is not None:
        model["conf_threshold"] = conf
    if arch is not None:
        model["arch"] = arch
    if weights is not None:
        model["weights"] = str(weights)
    if random_weights:
        model["random_weights"] = True
    data: dict[str, Any] = {
        "name": name,
        "realtime": realtime,
        "camera_defaults": defaults,
        "cameras": [{"id": cid, "url": url} for cid, url in cameras.items()],
        "model": model,
        "sinks": sinks,
        "metrics": {"port": metrics_port},
    }
    return validate_config(data, base_dir=Path.cwd(), source="command line")


def default_jsonl_path(name: str) -> Path:
    """Where `quick_config` writes results when neither Redis nor JSONL was asked for."""
    return Path("runs") / name / "{camera}.jsonl"


def parse_camera_arg(text: str) -> tuple[str, str]:
    """``"ID=URL"`` (the ``--camera`` flag) -> ``(id, url)``, with a clear error."""
    cid, sep, url = text.partition("=")
    if not sep or not cid or not url:
        raise ValueError(f"--camera takes ID=URL, got {redact_url(text)!r}")
    if not re.match(CAMERA_ID_PATTERN, cid):
        raise ValueError(f"--camera id {cid!r} must be 1-64 of [A-Za-z0-9_.-]")
    return cid, url
