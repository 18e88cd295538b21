"""What each stage process runs: process set-up, then its stage between its sockets.

`child_main` is the target of every process the supervisor spawns: it names the process
(``setproctitle``, else ``prctl(PR_SET_NAME)``), enables `faulthandler`, asks the kernel to kill
it when the supervisor dies (``PR_SET_PDEATHSIG``: no orphans even after a SIGKILL of the
supervisor), turns SIGTERM into a graceful stop and leaves SIGINT to the supervisor. A
configuration problem found here (a weights file of the wrong kind...) exits with
`EXIT_CONFIG`, which the supervisor treats as fatal instead of restarting.

Each process sends a small stats snapshot to the supervisor every ``report_interval_s`` over a
multiprocessing queue (`pipeline.stats`), which serves the summary line and `Pipeline.stats()`.

This is the one runtime module that builds stages from the config (the stage configs
`camera_config`, `track_stage_config`, ... and the stages themselves), so it is the one core
module that imports `stages`, and only inside functions: the supervisor imports this module,
and must not load a stage (see `pipeline`).
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import resolve_device
from pipeline.edges import EdgePlan
from pipeline.flags import RunFlags
from pipeline.messages import Message
from pipeline.policy import RealtimePolicy
from pipeline.runner import StageCounters, run_stage
from pipeline.stats import Reporter

if TYPE_CHECKING:
    from pipeline.config import CameraEntry, CameraSettings, PipelineConfig
    from stages.decode.config import CameraConfig
    from stages.detect.types import NMSParams
    from stages.sinks.config import JsonlSinkConfig
    from stages.sinks.redis.config import RedisSinkConfig
    from stages.track.config import TrackerConfig
    from stages.track.stage import TrackStageConfig

log = logging.getLogger("edgestream.procs")

EXIT_CONFIG = 78  # EX_CONFIG: do not restart
EXIT_RESULTS_LOST = 3  # the run's exit status when results of offline cameras were not written
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChildSpec:
    role: str  # decode | preprocess | detect | track | sink
    index: int
    pipeline: str
    parent_pid: int
    incarnation: int = 0  # 0 for the first start, then the restart count
    model: Any = None  # the weights' ModelInfo, described once by the supervisor
    control: Any = None  # decode, track: a queue of live camera changes (pipeline.cameras_api)
    shards: int = 1  # decode: how many decode processes share the cameras (this is ``index``)
    run_dir: str = ""  # the run folder (ipc sockets, the shedding caps file)

    @property
    def indexed(self) -> bool:
        """Whether this role runs as several numbered processes (preprocess workers, decode
        shards)."""
        return self.role == "preprocess" or self.shards > 1

    @property
    def key(self) -> str:
        return f"{self.role}{self.index}" if self.indexed else self.role

    @property
    def title(self) -> str:
        return f"edgestream[{self.pipeline}] {self.key}"


def set_title(title: str) -> None:
    """Name the process in ps/top: setproctitle when installed, else the kernel comm name."""
    try:
        import setproctitle

        setproctitle.setproctitle(title)
        return
    except ImportError:
        pass
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, title.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when its parent dies (checked once for a parent already
    gone before the call)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def child_main(
    spec: ChildSpec,
    cfg: PipelineConfig,
    edges: dict[str, EdgePlan],
    stop: Any,
    flags: RunFlags,
    stats_q: Any,
    log_level: str = "INFO",
) -> None:
    die_with_parent(spec.parent_pid)
    set_title(spec.title)
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from pipeline.logs import process_label, setup_logging
    from pipeline.metrics import process_metrics

    index = spec.index if spec.indexed else None
    setup_logging(log_level, cfg.logging.format, process_label(spec.role, index), cfg.secrets())
    reporter = Reporter(spec.key, stats_q, metrics=process_metrics())
    try:
        ROLES[spec.role](spec, cfg, edges, stop, flags, reporter)
    except (ValueError, FileNotFoundError) as e:  # config-like: the same on every restart
        log.error("%s: cannot start: %s", spec.key, cfg.redact(str(e)))
        reporter.close()
        sys.exit(EXIT_CONFIG)
    reporter.close()
    from pipeline import transport

    transport.shutdown()


def _realtime(cfg: PipelineConfig) -> RealtimePolicy:
    return RealtimePolicy.from_config(cfg)


def _offline_blocks(cfg: PipelineConfig) -> Callable[[Message], bool]:
    live = _realtime(cfg)
    return lambda m: m.camera_id not in live


# After detect nothing is dropped, live or not: what the model computed is published. A slow
# track or sink holds detect back (its sends block), and ahead of detect the newest frame of
# each camera wins, so the loss under any overload is a counted ``superseded`` frame that the
# model never ran on, and latency stays bounded by the small queues after detect.
_AFTER_DETECT = frozenset({"detect", "track"})
# A stage waits this long for its downstream peer before it reads anything: a frame received
# while the output is not connected yet would be refused (a live send drops at once).
_CONNECT_WAIT_S = 10.0


# ---------------------------------------------------------------------------- stage configs


def camera_config(camera: CameraEntry | CameraSettings | str, cfg: PipelineConfig) -> CameraConfig:
    """`stages.decode.CameraConfig` for one camera (entry, effective settings or id): its
    decode settings as they are, the url with the password file's password, its live policy."""
    from pipeline.config import CameraEntry, camera_url_with_password
    from stages.decode.config import CameraConfig, DecodeSettings

    if isinstance(camera, str):
        settings = cfg.camera(camera)
    elif isinstance(camera, CameraEntry):
        settings = cfg.camera(camera.id)
    else:
        settings = camera
    # already validated (and ${VAR} substituted) when the config was loaded
    return CameraConfig.model_construct(
        **settings.model_dump(include=set(DecodeSettings.model_fields)),
        url=camera_url_with_password(settings),
        realtime=settings.realtime,
    )


def redis_sink_config(cfg: PipelineConfig) -> RedisSinkConfig | None:
    """`stages.sinks.redis.RedisSinkConfig`, or None when the redis sink is off."""
    return cfg.sinks.redis  # the section is the sink's own model


def jsonl_sink_config(cfg: PipelineConfig) -> JsonlSinkConfig | None:
    """`stages.sinks.jsonl.JsonlSinkConfig`, or None when the jsonl sink is off."""
    return cfg.sinks.jsonl  # the section is the sink's own model


def tracker_config(cfg: PipelineConfig) -> TrackerConfig:
    """`stages.track.TrackerConfig` from the tracker section."""
    return cfg.tracker.tracker()


def track_stage_config(cfg: PipelineConfig) -> TrackStageConfig:
    """`stages.track.TrackStageConfig`: the tracker, per-camera frame rates, state folder."""
    from stages.track.stage import TrackStageConfig

    rates = {c.id: c.frame_rate_hz for c in cfg.effective_cameras() if c.frame_rate_hz}
    return TrackStageConfig(
        tracker=tracker_config(cfg),
        frame_rates_hz=rates,
        default_frame_rate_hz=cfg.tracker.default_frame_rate_hz,
        state_dir=cfg.tracker.state_dir,
    )


def nms_params(cfg: PipelineConfig) -> NMSParams:
    """`stages.detect.types.NMSParams` from the model section."""
    from stages.detect.types import NMSParams

    m = cfg.model
    return NMSParams(
        conf=m.conf_threshold,
        iou=m.iou_threshold,
        multi_label=m.multi_label,
        top_k=m.top_k,
        max_det=m.max_detections,
    )


# ------------------------------------------------------------------------------------ roles


def run_decode(spec: ChildSpec, cfg: PipelineConfig, edges: dict[str, EdgePlan],
               stop: Any, flags: RunFlags, reporter: Reporter) -> None:  # fmt: skip
    from pipeline.shedding import CapsReader
    from pipeline.shm import ShmPool
    from stages.decode.feeder import DecodeFeeder

    cameras = _decode_cameras(spec, cfg)
    if spec.shards > 1:
        log.info("decode %d of %d: cameras %s", spec.index + 1, spec.shards,
                 ", ".join(cid for cid, _ in cameras) or "none (yet)")  # fmt: skip
    sender: Any
    if cfg.letterbox_in_decode():  # straight to detect: each decode process connects to it
        from stages.preprocess import LetterboxSender

        edge = edges["items"]
        pool = ShmPool(cfg.name, "items", slots=_item_slots(cfg, cameras=1))
        sender = edge.open_sender(stop, name="decode", pool=pool)
        sender = LetterboxSender(sender, model_info_of(cfg, spec).input_hw)
    else:
        edge = edges["frames"]
        pool = ShmPool(cfg.name, "frames", slots=cfg.preprocess.workers + 4)
        sender = edge.open_sender(stop, name="decode", pool=pool, shard=spec.index)
    sender = _preview_tap(cfg, sender, stop)
    _report_auth(reporter, edge)
    feeder = DecodeFeeder(cameras, sender, on_state=reporter.camera_state)
    reporter.source(lambda: {"decode": feeder.counters})
    control = _decode_control(spec, cfg, feeder, reporter)
    if cfg.runs("detect") and not flags.model_ready.is_set():
        log.info("decode: cameras open once the model is loaded")
        while not flags.model_ready.wait(0.2):
            reporter.maybe_send()
            if stop.is_set():
                sender.close()
                pool.close()
                return
    feeder.start()
    caps = CapsReader(spec.run_dir if cfg.decode.shed else None)
    try:
        while not stop.wait(0.2):
            control.poll()
            got = caps.poll()
            if got is not None:
                feeder.set_caps(got)
            reporter.maybe_send()
    finally:
        feeder.stop()
        sender.close()
        pool.close()


def _decode_cameras(spec: ChildSpec, cfg: PipelineConfig) -> list[tuple[str, CameraConfig]]:
    """The cameras this decode process runs: all of them, or with several decode processes
    the ones `stages.decode.config.decode_shard` gives this one."""
    from stages.decode.config import decode_shard

    return [(c.id, camera_config(c, cfg)) for c in cfg.effective_cameras()
            if decode_shard(c.id, spec.shards) == spec.index]  # fmt: skip


def _decode_control(spec: ChildSpec, cfg: PipelineConfig, feeder: Any, reporter: Reporter
                    ) -> Any:  # fmt: skip
    """Live camera changes for decode: each config from the supervisor's queue becomes the
    camera list the feeder runs (`stages.decode.control.CameraControl`), this process's
    share of it."""
    from stages.decode.control import CameraControl

    control = CameraControl(
        feeder,
        spec.control,
        lambda new: _decode_cameras(spec, new),
        on_applied=_force_send(reporter),
    )
    reporter.source(control.report)
    return control


def _force_send(reporter: Reporter) -> Callable[[], None]:
    return lambda: reporter.maybe_send(force=True)


def _control_thread(spec: ChildSpec, stage_name: str, apply: Callable[[PipelineConfig], str],
                    stop: Any, reporter: Reporter) -> None:  # fmt: skip
    """Live camera changes from a thread: each new config from the supervisor's queue
    (``spec.control``) goes to ``apply``, which returns what it changed for the log line; the
    generation applied is reported at once. Inert without a control queue."""
    from pipeline.control import read_control

    if spec.control is None:
        return
    generation = -1
    reporter.source(lambda: {"control_generation": generation})

    def loop() -> None:
        nonlocal generation
        while not stop.wait(0.1):
            got = read_control(spec.control)
            if got is None:
                continue
            gen, new = got
            if new is not None:
                what = apply(new)
                log.info("%s: %s (generation %d)", stage_name, what, gen)
            generation = gen
            reporter.maybe_send(force=True)

    threading.Thread(target=loop, name=f"{stage_name}-control", daemon=True).start()


def _track_control(spec: ChildSpec, stage: Any, names: list[str], stop: Any,
                   reporter: Reporter) -> None:  # fmt: skip
    """Live camera changes for track: the class filters, live cameras and frame rates of the
    new config replace the stage's (each is swapped whole, read per message); a removed
    camera's tracker is dropped in-band, at its end marker."""
    import dataclasses

    def apply(new: PipelineConfig) -> str:
        stage.config = dataclasses.replace(
            stage.config, classes=class_filter_of(new, names), realtime_cameras=_realtime(new)
        )
        stage.tracker.config = track_stage_config(new)
        return f"cameras now {', '.join(new.camera_ids)}"

    _control_thread(spec, "track", apply, stop, reporter)


def run_preprocess(spec: ChildSpec, cfg: PipelineConfig, edges: dict[str, EdgePlan],
                   stop: Any, flags: RunFlags, reporter: Reporter) -> None:  # fmt: skip
    from pipeline.shm import ShmPool, ring_name
    from stages.preprocess import PreprocessStage, PreprocessStageConfig

    items = edges["items"]
    stage = PreprocessStage(
        PreprocessStageConfig(
            slab_name=ring_name(cfg.name, f"slab{spec.index}") if items.shm else None,
            slab_slots=_item_slots(cfg),
            input_hw=model_info_of(cfg, spec).input_hw,
            inline=not items.shm,
        )
    )
    _run(
        stage,
        "preprocess",
        edges["frames"],
        items,
        cfg,
        stop,
        reporter,
        pool=ShmPool(cfg.name, f"items{spec.index}", slots=_item_slots(cfg)),
    )


def _item_slots(cfg: PipelineConfig, cameras: int | None = None) -> int:
    """Slab slots of one preprocess worker: a batch being gathered, the next one filling, and
    every camera's waiting frames (newest frame wins: one may wait a whole batch time while
    the other cameras' frames go round the ring; any one worker may have written it).
    ``cameras=1``: one camera's item ring in a decode process that letterboxes. An item
    overwritten before detect read it is a counted drop (``overwritten``)."""
    b = cfg.batching
    n = len(cfg.cameras) if cameras is None else cameras
    return 2 * b.max_batch + 4 + 2 * n * b.slots_per_camera


def detect_instances(cfg: PipelineConfig) -> tuple[int, int]:
    """``(model instances, threads per instance)`` the detect stage runs (`model.instances`,
    `stages.detect.config.model_instances`), for the backend and device the config resolves
    to and the cores this process may use."""
    from stages.detect.config import model_instances
    from stages.detect.describe import backend_for_path

    m = cfg.model
    backend = m.backend
    if backend == "auto":
        backend = "torch" if m.weights is None else backend_for_path(Path(m.weights))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return model_instances(m.instances, backend, resolve_device(m.device), m.threads, cpus)


def open_backend_from(cfg: PipelineConfig, threads: int | None = None) -> Any:
    """The detect backend the config asks for (random weights: seeded, like ``detect``);
    ``threads``: intra-op threads instead of ``model.threads`` (one of several instances)."""
    from stages.detect.backends import open_backend

    m = cfg.model
    device = resolve_device(m.device)
    if m.random_weights:
        import torch

        from stages.detect.backends.torch_backend import TorchBackend
        from stages.detect.nn.yolo_nas import ARCHS

        torch.manual_seed(0)
        assert m.arch is not None
        model = ARCHS[m.arch](num_classes=m.num_classes or 80)
        return TorchBackend(model, device=device, half=m.half, max_batch=cfg.batching.max_batch,
                            nms_params=nms_params(cfg))  # fmt: skip
    assert m.weights is not None
    return open_backend(
        m.backend,
        m.weights,
        arch=m.arch,
        num_classes=m.num_classes,
        device=device,
        max_batch=cfg.batching.max_batch,
        nms_params=nms_params(cfg),
        threads=m.threads if threads is None else threads,
        half=m.half,
    )


def run_detect(spec: ChildSpec, cfg: PipelineConfig, edges: dict[str, EdgePlan],
               stop: Any, flags: RunFlags, reporter: Reporter) -> None:  # fmt: skip
    from stages.detect.stage import DetectStage, DetectStageConfig

    b = cfg.batching
    instances, threads = detect_instances(cfg)
    stage = DetectStage(
        lambda: open_backend_from(cfg, threads),
        DetectStageConfig(
            **b.model_dump(),
            instances=instances,
            realtime_cameras=_realtime(cfg),
            appearance=cfg.tracker.appearance_weight > 0,  # only if the tracker uses them
            calibration=_calibration(cfg, threads),
        ),
        on_batch=reporter.batch,
        on_ready=flags.model_ready.set,
    )
    reporter.source(lambda: {"ready": stage.backend is not None})
    _run(stage, "detect", edges["items"], edges["detections"], cfg, stop, reporter)


def _calibration(cfg: PipelineConfig, threads: int) -> Any:
    """What keys detect's batch calibration (None with ``batching.calibrate: false``)."""
    from stages.detect.batch_calibration import CalibrationSpec

    m = cfg.model
    if not cfg.batching.calibrate:
        return None
    weights = None if m.weights is None else Path(m.weights)
    return CalibrationSpec(weights, resolve_device(m.device), threads, m.arch)


def cpu_onnx_config(cfg: PipelineConfig) -> tuple[PipelineConfig, str]:
    """``cfg`` with a PyTorch checkpoint swapped for its ONNX export on ONNX Runtime when
    ``model.backend`` is auto and the model runs on the CPU (`stages.detect.onnx_cache.cpu_onnx`:
    exported once, cached by the checkpoint's hash), plus a line for the start-up log."""
    from stages.detect.onnx_cache import cpu_onnx, default_cache_dir

    m = cfg.model
    if m.weights is None:
        return cfg, ""
    model_info_of(cfg)  # a file that cannot run is refused as itself, not as a failed export
    chosen = cpu_onnx(Path(m.weights), m.backend, m.device, default_cache_dir())
    if chosen.path is None:
        return cfg, chosen.note
    model = m.model_copy(update={"weights": chosen.path, "backend": "onnxruntime"})
    return cfg.model_copy(update={"model": model}), chosen.note


def model_info_of(cfg: PipelineConfig, spec: ChildSpec | None = None) -> Any:
    """The model the config runs, as `stages.detect.describe.describe` reads it from the
    weights file (format, arch, classes, input size, backend) without building the network:
    preprocess letterboxes to the model's own input size, the sink names classes as the
    model was trained. A process the supervisor started gets the supervisor's description
    (``spec.model``) instead of reading the file again.

    The supervisor calls this once before it starts any process: a file that cannot run as
    configured (not weights, truncated, another network, the wrong backend, arch or class
    count) raises `stages.detect.describe.ModelFileError` (a ValueError) naming the file
    and the problem. A TensorRT engine without its sidecar says only its format (its input
    size is checked by the detect stage against what preprocess sends)."""
    from pipeline.extras import require_backend
    from stages.detect.describe import ModelFileError, config_mismatch, describe
    from stages.detect.types import ModelInfo

    if spec is not None and spec.model is not None:
        return spec.model
    m = cfg.model
    if m.weights is None:  # random_weights: what the config says is all there is
        require_backend("torch")
        return ModelInfo(arch=m.arch, num_classes=m.num_classes, backend="torch")
    info = describe(m.weights)
    require_backend(info.backend if m.backend == "auto" else m.backend)
    problem = config_mismatch(info, backend=m.backend, weights=m.weights, arch=m.arch,
                              num_classes=m.num_classes, class_names=m.class_names)  # fmt: skip
    if problem is not None:
        raise ModelFileError(f"{m.weights}: {problem}")
    return info


def class_names_of(
    cfg: PipelineConfig, spec: ChildSpec | None = None, model: Any = None
) -> list[str]:
    """Class names for published objects: the config's, the weights file's, or COCO's.
    ``model``: the `model_info_of` answer when the caller has it already."""
    from stages.detect.classes import class_names_for

    m = cfg.model
    if m.class_names:
        return list(m.class_names)
    try:
        names = list((model if model is not None else model_info_of(cfg, spec)).class_names)
    except (ValueError, OSError):  # a file that cannot run: the detect stage says why
        log.debug("no class names in %s", m.weights, exc_info=True)
        names = []
    if names:
        return [str(n) for n in names]
    return class_names_for(m.num_classes or 80)


def class_filter_of(cfg: PipelineConfig, names: list[str]) -> dict[str, frozenset[int]]:
    """Per camera with a ``classes`` filter, the class ids it publishes (names resolved with
    ``names``, the model's class names). Raises `pipeline.config.ConfigError` naming every
    unknown class, so the supervisor refuses the config before any process starts."""
    from pipeline.config import ConfigError
    from pipeline.config.zones import region_class_problems

    index = {name: i for i, name in reversed(list(enumerate(names)))}
    out: dict[str, frozenset[int]] = {}
    problems: list[str] = []
    for n, cam in enumerate(cfg.effective_cameras()):
        problems += region_class_problems(n, cam.zones, cam.lines, names)  # zones, lines
        if cam.classes is None:
            continue
        ids: set[int] = set()
        where = f"cameras[{n}].classes"
        known = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        for item in cam.classes:
            if isinstance(item, int) or item.isdigit():
                if 0 <= int(item) < len(names):
                    ids.add(int(item))
                else:
                    problems.append(f"{where}: no class id {item} (0..{len(names) - 1})")
            elif item in index:
                ids.add(index[item])
            else:
                problems.append(f"{where}: the model has no class {item!r} ({known})")
        out[cam.id] = frozenset(ids)
    if problems:
        raise ConfigError(problems)
    return out


def run_track(spec: ChildSpec, cfg: PipelineConfig, edges: dict[str, EdgePlan],
              stop: Any, flags: RunFlags, reporter: Reporter) -> None:  # fmt: skip
    from stages.track.pipeline_stage import OrderedTrackConfig, OrderedTrackStage

    stage = OrderedTrackStage(
        OrderedTrackConfig(
            track=track_stage_config(cfg),
            class_names=(names := class_names_of(cfg, spec)),
            classes=class_filter_of(cfg, names),
            realtime_cameras=_realtime(cfg),
            reorder_timeout_ms=max(100.0, 2 * (cfg.batching.max_frame_age_ms or 250.0)),
        )
    )
    _track_control(spec, stage, names, stop, reporter)
    _run(stage, "track", edges["detections"], edges["tracked"], cfg, stop, reporter)


def run_sink(spec: ChildSpec, cfg: PipelineConfig, edges: dict[str, EdgePlan],
             stop: Any, flags: RunFlags, reporter: Reporter) -> None:  # fmt: skip
    from stages.sinks.stage import SinkStage

    sinks: list[Any] = []
    live = _realtime(cfg)
    redis_cfg = redis_sink_config(cfg)
    if redis_cfg is not None:
        from stages.sinks.redis import RedisSink

        # offline cameras' results are never dropped: the sink holds the pipeline instead
        sinks.append(
            RedisSink(
                redis_cfg,
                lossless=lambda cam: cam not in live,
                stop_requested=lambda: stop.is_set() or flags.stopping.is_set(),
            )
        )
    jsonl_cfg = jsonl_sink_config(cfg)
    if jsonl_cfg is not None:
        from stages.sinks.jsonl import JsonlSink

        if spec.incarnation > 0:  # a restarted sink must not truncate what was written
            jsonl_cfg = jsonl_cfg.model_copy(update={"append": True})

        sinks.append(JsonlSink(jsonl_cfg))
    if cfg.sinks.video is not None:
        from stages.sinks.video import FileVideoSink, VideoSinkConfig

        video = cfg.sinks.video
        paths = {c.id: c.url for c in cfg.effective_cameras() if c.kind == "file"}
        video_cfg = VideoSinkConfig(Path(video.dir), fps=video.fps, untracked=video.untracked)
        sinks.append(FileVideoSink(video_cfg, paths))
    files = [c.id for c in cfg.effective_cameras() if c.kind == "file" and not c.loop]
    everything_ends = len(files) == len(cfg.cameras)  # live or offline: the input ends
    stage = SinkStage(
        sinks,
        expected_cameras=files if everything_ends else (),
        on_published=reporter.published_frame,
        on_done=flags.done.set,
        file_cameras=frozenset(c.id for c in cfg.effective_cameras() if c.kind == "file"),
        enrich=_sink_enrich(spec, cfg, reporter, stop),
    )
    reporter.source(lambda: {"sinks": stage.stats()})
    _run(stage, "sink", edges["tracked"], None, cfg, stop, reporter)


def _sink_control(spec: ChildSpec, apply: Callable[[PipelineConfig], None], stop: Any,
                  reporter: Reporter) -> None:  # fmt: skip
    """Live camera changes for the sink: each new config's zones and lines replace the
    analytics' (a camera whose zones or lines changed counts afresh)."""

    def applied(new: PipelineConfig) -> str:
        apply(new)
        return f"zones and lines of {', '.join(new.camera_ids)}"

    _control_thread(spec, "sink", applied, stop, reporter)


def _sink_enrich(spec: ChildSpec, cfg: PipelineConfig, reporter: Reporter, stop: Any) -> Any:
    """What every frame goes through before the sinks: the cameras' zones and lines
    (`stages.analytics.ZoneAnalytics`), then the preview's look at it
    (`stages.analytics.preview.PreviewServer`); None when neither is configured."""
    from pipeline.preview import preview_dir
    from stages.analytics import CameraRegions, ZoneAnalytics

    def regions_of(c: PipelineConfig) -> dict[str, CameraRegions]:
        return {e.id: CameraRegions(tuple(e.zones), tuple(e.lines))
                for e in c.effective_cameras() if e.zones or e.lines}  # fmt: skip

    steps: list[Callable[[Any], Any]] = []
    analytics = ZoneAnalytics(regions_of(cfg), metrics=reporter.metrics)
    if analytics.cameras or spec.control is not None:
        reporter.source(lambda: {"analytics": analytics.stats()})
        steps.append(analytics.process)
        _sink_control(spec, lambda new: analytics.set_cameras(regions_of(new)), stop, reporter)
    folder = preview_dir()
    if cfg.preview.enabled and folder is not None:
        from stages.analytics.preview import PreviewServer

        preview = PreviewServer(cfg.preview, folder, stop, analytics.regions)
        reporter.source(lambda: {"preview": preview.stats()})
        steps.append(preview.observe)
    if not steps:
        return None

    def enrich(frame: Any) -> Any:
        for step in steps:
            frame = step(frame)
        return frame

    return enrich


def _preview_tap(cfg: PipelineConfig, sender: Any, stop: Any) -> Any:
    """Decode's frames sender, wrapped to keep each camera's last frame for the preview
    (`stages.analytics.preview.FrameTap`) when ``preview.enabled``."""
    from pipeline.preview import preview_dir

    folder = preview_dir()
    if not cfg.preview.enabled or folder is None:
        return sender
    from stages.analytics.preview import FrameTap

    return FrameTap(sender, folder, stop)


def _run(stage: Any, name: str, inp: EdgePlan, out: EdgePlan | None, cfg: PipelineConfig,
         stop: Any, reporter: Reporter, pool: Any = None) -> None:  # fmt: skip
    receiver = inp.open_receiver(name=f"{name}-in")
    sender = out.open_sender(stop, name=name, pool=pool) if out is not None else None
    if sender is not None and not sender.wait_connected(_CONNECT_WAIT_S):
        log.warning("%s: %s has no peer after %.0f s; live frames are dropped until it has",
                    name, out.name if out is not None else "?", _CONNECT_WAIT_S)  # fmt: skip
    counters = StageCounters()
    reporter.source(lambda: {"stage": counters.snapshot()})
    _report_auth(reporter, inp, out)
    pump = threading.Thread(target=_report_loop, args=(reporter, stop), daemon=True)
    pump.start()
    try:
        block = True if name in _AFTER_DETECT else _offline_blocks(cfg)
        run_stage(stage, receiver, sender, stop, name=name, block=block,
                  counters=counters)  # fmt: skip
    finally:
        receiver.close()
        if sender is not None:
            sender.close()
        if pool is not None:
            pool.close()


def _report_auth(reporter: Reporter, *edges: EdgePlan | None) -> None:
    """Refused CURVE clients (per edge) in the stats, where this process has a CURVE edge."""
    if any(e is not None and e.curve is not None for e in edges):
        from pipeline.curve import refused

        reporter.source(lambda: {"transport": {"auth_refused": refused()}})


def _report_loop(reporter: Reporter, stop: Any) -> None:
    while not stop.wait(0.5):
        reporter.maybe_send()


ROLES: dict[str, Callable[..., None]] = {
    "decode": run_decode,
    "preprocess": run_preprocess,
    "detect": run_detect,
    "track": run_track,
    "sink": run_sink,
}
