"""The supervisor: starts the stage processes, keeps them alive, stops them cleanly.

* **Start**: the weights file is described once (`pipeline.procs.model_info_of`; a file that
  cannot run is refused before anything starts) and the description handed to every child;
  stale shared-memory segments of dead owners are removed (a SIGKILLed run leaves
  them), the run folder for ipc socket files is created, and one process per stage is spawned
  (``multiprocessing`` spawn context: no forked locks or CUDA state), preprocess ``workers``
  times, or none where the decode processes letterbox (``preprocess.where``). See
  `pipeline.procs.child_main` for what each child sets up (title, faulthandler, death signal).
* **Restart**: a child that exits while the pipeline runs is restarted after a delay that
  doubles per consecutive failure (``restart_backoff_min_s`` .. ``restart_backoff_max_s``) and
  resets once it ran ``restart_reset_s``. A child exiting with `EXIT_CONFIG` (its
  configuration cannot work: bad weights...) is fatal: the supervisor stops and returns non-zero.
* **Stop** (`stop`, on SIGTERM/SIGINT in `run`): upstream first — decode stops its cameras,
  then each stage in pipeline order gets its stop signal after the one before it exited, so
  what is in flight drains downstream; the whole stop is bounded by ``stop_timeout_s`` (10 s),
  after which stragglers are SIGKILLed. Then its shared-memory segments and socket files are
  removed. Children also die with the supervisor (``PR_SET_PDEATHSIG``), so even a SIGKILL of
  the supervisor leaves no orphans; the next start removes the segments they left.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import logging
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import STAGES
from pipeline.edges import EdgePlan, plan_edges
from pipeline.flags import RunFlags, SharedFlag
from pipeline.procs import (
    EXIT_CONFIG,
    EXIT_RESULTS_LOST,
    ChildSpec,
    child_main,
    class_filter_of,
    class_names_of,
    model_info_of,
    set_title,
)
from pipeline.shedding import CAPS_FILE, ShedController, write_caps
from pipeline.shm import NAME_PREFIX, cleanup_stale, list_segments
from pipeline.stats import StatsBoard

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

log = logging.getLogger("edgestream.supervisor")

# the stages told of live camera changes (pipeline.cameras_api), in this order: decode last,
# so a new camera's first frame finds the track stage and the sink ready for it
_CONTROLLED = ("track", "sink", "decode")


@dataclass
class _Child:
    spec: ChildSpec
    stop: Any = None  # a fresh SharedFlag per incarnation
    stats_q: Any = None  # a fresh queue per incarnation: a SIGKILL can leave a queue's lock held
    proc: Any = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    restarts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    control_q: Any = None  # _CONTROLLED: live camera changes (a fresh queue per incarnation)


class Supervisor:
    """Owns the process tree of one pipeline. ``start()``, then ``poll()`` regularly (or
    ``run()`` which does both and handles signals), ``stop()`` at the end."""

    def __init__(
        self,
        cfg: PipelineConfig,
        *,
        log_level: str = "INFO",
        stop_timeout_s: float = 10.0,
        restart_backoff_min_s: float = 0.5,
        restart_backoff_max_s: float = 10.0,
        restart_reset_s: float = 30.0,
        model: Any = None,
    ) -> None:
        self.cfg = cfg
        self.model = model  # the weights' ModelInfo: described by start() unless given
        self.log_level = log_level
        self.stop_timeout_s = stop_timeout_s
        self.backoff_min_s = restart_backoff_min_s
        self.backoff_max_s = restart_backoff_max_s
        self.restart_reset_s = restart_reset_s
        self._mp = mp.get_context("spawn")
        self.flags = RunFlags(self._mp)
        self.done = self.flags.done  # set by the sink when every file camera's results are out
        self.board = StatsBoard()
        self.children: dict[str, _Child] = {}
        self.edges: dict[str, EdgePlan] = {}
        self.fatal: str | None = None
        self.started = False
        self.stopping = False
        self._run_dir: Path | None = None
        self._own_run_dir = False
        self._shed: ShedController | None = None
        self._shed_at = 0.0
        self.on_poll: list[Callable[[Supervisor], None]] = []
        self.metrics_dir: Path | None = None
        self.health: Any = None
        self.metrics: Any = None
        # live camera changes (pipeline.cameras_api): the config file to re-read on SIGHUP,
        # this replica's shard, and the config the stages started with
        self.config_path: Path | None = None
        self.shard: Any = None
        self.start_cfg = cfg
        self.control_generation = 0
        self.cameras_api: Any = None
        self._control_lock = threading.Lock()

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        if self.model is None:  # before anything starts: a bad weights file is one error
            self.model = model_info_of(self.cfg)
        if any(c.classes is not None for c in self.cfg.effective_cameras()):
            # an unknown class name is a config error, refused before anything starts
            class_filter_of(self.cfg, class_names_of(self.cfg, model=self.model))
        removed = cleanup_stale(NAME_PREFIX)
        if removed:
            log.info("removed %d stale shared-memory segment(s) of dead processes", len(removed))
        ipc_dir = self.cfg.transport.ipc_dir
        if ipc_dir is not None:
            Path(ipc_dir).mkdir(parents=True, exist_ok=True)
            self._run_dir = Path(ipc_dir)
        else:
            self._run_dir = Path(tempfile.mkdtemp(prefix=f"edgestream-{self.cfg.name}-"))
            self._own_run_dir = True
        self.edges = plan_edges(self.cfg, self._run_dir)
        (self._run_dir / CAPS_FILE).unlink(missing_ok=True)  # an earlier run's caps
        if self.cfg.decode.shed and self.cfg.runs("decode") and self.cfg.runs("detect"):
            self._shed = ShedController()
        self._start_metrics()
        for role in STAGES:
            if not self.cfg.runs(role):
                continue
            count = {"preprocess": self.cfg.preprocess_workers(),
                     "decode": self.cfg.decode_processes()}.get(role, 1)  # fmt: skip
            shards = count if role == "decode" else 1
            for i in range(count):
                spec = ChildSpec(role, i, self.cfg.name, os.getpid(), model=self.model,
                                 shards=shards, run_dir=str(self._run_dir))  # fmt: skip
                self.children[spec.key] = _Child(spec)
        if self.cfg.runs("decode") and self.cfg.runs("preprocess"):
            workers = self.cfg.preprocess_workers()
            log.info("letterbox: %s (preprocess.where: %s)",
                     f"in {workers} preprocess worker(s)" if workers
                     else "in the decode processes", self.cfg.preprocess.where)  # fmt: skip
        for child in reversed(list(self.children.values())):  # consumers first: binders up
            self._spawn(child)
        self.started = True
        log.info("pipeline %s started: %s", self.cfg.name,
                 ", ".join(f"{k}={c.proc.pid}" for k, c in self.children.items()))  # fmt: skip

    def _start_metrics(self) -> None:
        """Multiprocess Prometheus files (children inherit the folder through the
        environment) and the /metrics /healthz /readyz server."""
        from pipeline import metrics
        from pipeline.health import start_health_server

        parent = metrics.default_multiproc_parent()
        for stale in parent.glob(f"{NAME_PREFIX}*-metrics"):  # left by a SIGKILLed supervisor
            owner = re.search(r"-(\d+)-metrics$", stale.name)
            if owner and stale.is_dir() and not _pid_alive(int(owner.group(1))):
                shutil.rmtree(stale, ignore_errors=True)
        folder = parent / f"{NAME_PREFIX}{self.cfg.name}-{os.getpid()}-metrics"
        self.metrics_dir = metrics.setup_multiprocess(folder)
        self.metrics = metrics.process_metrics()
        from pipeline.cameras_api import CameraManager

        self.cameras_api = CameraManager(self)
        m = self.cfg.metrics
        from pipeline.preview import preview_client

        self.health = start_health_server(
            m.host, m.port, liveness=self.liveness, readiness=self.readiness,
            api=self.cameras_api.handle,
            preview=preview_client(self, self._run_dir),  # before the children: sets their env
        )  # fmt: skip

    def liveness(self) -> dict[str, bool | str]:
        """/healthz: every stage process alive (a restarting one reports why it is down)."""
        out: dict[str, bool | str] = {}
        for key, c in self.children.items():
            if c.proc is not None and c.proc.is_alive():
                out[key] = True
            elif c.restart_at is not None:
                out[key] = f"exited with {c.exit_codes[-1] if c.exit_codes else '?'}, restarting"
            else:
                out[key] = False
        return out

    def readiness(self) -> list[str]:
        """/readyz: why the pipeline cannot do its job yet (empty: ready)."""
        reasons = [f"{k} not running" for k, v in self.liveness().items() if v is not True]
        procs = self.board.procs
        if "detect" in self.children and not ("detect" in procs and procs["detect"].snap.ready):
            reasons.append("model not loaded")
        if "sink" in self.children and self.cfg.sinks.redis is not None:
            redis = procs["sink"].snap.sinks.redis if "sink" in procs else None
            if not (redis or {}).get("connected"):
                reasons.append("redis sink not connected")
        return reasons

    def _spawn(self, child: _Child) -> None:
        if child.stats_q is not None:
            self.board.drain(child.stats_q)
            _close_queue(child.stats_q)
        child.stop = SharedFlag(self._mp)
        child.stats_q = self._mp.Queue(maxsize=100)
        with self._control_lock:  # it starts with the newest cameras, or is told of them
            cfg, control = self.cfg, self._control_queue(child)
        proc = self._mp.Process(
            target=child_main,
            args=(
                dataclasses.replace(child.spec, incarnation=child.restarts, control=control),
                cfg,
                self.edges,
                child.stop,
                self.flags,
                child.stats_q,
                self.log_level,
            ),
            name=child.spec.title,
            daemon=True,
        )
        proc.start()
        child.proc = proc
        child.started_at = time.monotonic()
        child.restart_at = None

    # ------------------------------------------------------------------ live camera changes
    def _control_queue(self, child: _Child) -> Any:
        if child.spec.role not in _CONTROLLED:
            return None
        if child.control_q is not None:
            _close_queue(child.control_q)
        child.control_q = self._mp.Queue(maxsize=8)
        child.control_q.put((self.control_generation, None))  # what it starts with
        return child.control_q

    def apply_cameras(self, new: PipelineConfig, ack_timeout_s: float = 5.0) -> bool:
        """Run ``new`` (a config that differs in its cameras only): tell the track stage
        (class filters, frame rates) and the sink (zones and lines), waiting for each, then
        decode (opens, closes, reopens): a new camera's first frame finds them ready.
        Children restarted meanwhile start with ``new``. True when decode confirmed."""
        with self._control_lock:
            self.cfg = new
            self.control_generation += 1
            gen = self.control_generation
        confirmed = True
        for role in _CONTROLLED:
            children = self.children_of(role)
            for child in children:
                with self._control_lock:
                    q = child.control_q
                    try:
                        q.put((gen, new), timeout=1.0)
                    except Exception:  # full or closed: a restart brings the new config anyway
                        log.warning("%s did not take the camera change (generation %d)",
                                    child.spec.key, gen)  # fmt: skip
            deadline = time.monotonic() + ack_timeout_s
            keys = [c.spec.key for c in children]
            while time.monotonic() < deadline and any(self._generation_of(k) < gen for k in keys):
                time.sleep(0.05)
            confirmed = all(self._generation_of(k) >= gen for k in keys)
        return confirmed

    def children_of(self, role: str) -> list[_Child]:
        """The processes of ``role`` (several for preprocess workers and decode shards)."""
        return [c for c in self.children.values() if c.spec.role == role]

    def _generation_of(self, key: str) -> int:
        proc = self.board.procs.get(key)
        return proc.snap.control_generation if proc is not None else -1

    def decode_cameras(self) -> dict[str, dict[str, Any]]:
        """Per camera, what decode reports (from whichever decode process runs it): state,
        last_error, reconnects."""
        out: dict[str, dict[str, Any]] = {}
        for child in self.children_of("decode"):
            proc = self.board.procs.get(child.spec.key)
            if proc is not None:
                out.update(proc.snap.decode_cameras)
        return out

    def request_reload(self, why: str = "SIGHUP") -> None:
        """Re-read the config file in a thread (the poll loop keeps running)."""
        from pipeline.cameras_api import ChangeRefused

        def reload() -> None:
            try:
                self.cameras_api.reload(why)
            except ChangeRefused:
                pass  # logged with its reasons by the manager
            except Exception:
                log.exception("%s: reload failed; the running config is kept", why)

        if self.cameras_api is None:
            log.warning("%s: the pipeline is not started; nothing to reload", why)
            return
        threading.Thread(target=reload, name="reload", daemon=True).start()

    def _shed_tick(self, now: float) -> None:
        """Once a second: new forward caps for live cameras detect keeps superseding
        (`pipeline.shedding`), written for the decode processes when they changed."""
        if self._shed is None or self._run_dir is None or now - self._shed_at < 1.0:
            return
        self._shed_at = now
        live = frozenset(c.id for c in self.cfg.effective_cameras() if c.realtime)
        if self._shed.update(self.board.cameras(), now, live):
            try:
                write_caps(self._run_dir, self._shed.caps)
            except OSError as e:
                log.warning("cannot write the shedding caps: %s", e)

    def poll(self) -> None:
        """Collect stats; restart children that died (with backoff); detect fatal exits."""
        self._drain()
        if self.stopping:
            return
        now = time.monotonic()
        self._shed_tick(now)
        for key, child in self.children.items():
            proc = child.proc
            if proc is not None and proc.is_alive():
                if child.failures and now - child.started_at > self.restart_reset_s:
                    child.failures = 0
                continue
            if child.restart_at is None:
                code = proc.exitcode if proc is not None else None
                if proc is not None:
                    from pipeline.metrics import mark_process_dead

                    mark_process_dead(proc.pid)
                    # the dead child's rings and slabs: readers keep their mappings
                    cleanup_stale(f"{NAME_PREFIX}{self.cfg.name}-")
                child.exit_codes.append(code if code is not None else -1)
                if code == EXIT_CONFIG:
                    self.fatal = f"{key} cannot run with this configuration (see its log above)"
                    log.error("%s exited with a configuration error: not restarting", key)
                    return
                if code == 0 and self.done.is_set():
                    continue
                delay = min(self.backoff_max_s, self.backoff_min_s * 2**child.failures)
                child.failures += 1
                child.restart_at = now + delay
                log.warning("%s (pid %s) exited with %s; restarting in %.1f s", key,
                            getattr(proc, "pid", None), _describe_exit(code), delay)  # fmt: skip
            elif now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
                if self.metrics is not None:
                    self.metrics.restart(child.spec.role)
                log.info("%s restarted (pid %d, restart #%d)", key, child.proc.pid, child.restarts)
        for fn in self.on_poll:
            fn(self)

    def alive(self) -> bool:
        """All children running (the /healthz answer)."""
        return self.started and all(
            c.proc is not None and c.proc.is_alive() for c in self.children.values()
        )

    def pids(self) -> dict[str, int]:
        return {k: c.proc.pid for k, c in self.children.items() if c.proc is not None}

    def stop(self) -> None:
        """Drain upstream first and stop everything within ``stop_timeout_s``; clean up."""
        if self.stopping:
            return
        self.stopping = True
        self.flags.stopping.set()
        t0 = time.monotonic()
        deadline = t0 + max(0.5, self.stop_timeout_s - 2.0)  # the rest: kill and clean up
        order = list(self.children.values())  # pipeline order: upstream drains first
        if self.done.is_set():  # an offline run published everything: nothing to drain
            for child in order:
                child.stop.set()
        for i, child in enumerate(order):
            child.stop.set()
            proc = child.proc
            if proc is None:
                continue
            budget = max(0.05, (deadline - time.monotonic()) / (len(order) - i))
            proc.join(budget)
        stragglers = [c for c in order if c.proc is not None and c.proc.is_alive()]
        for child in stragglers:
            log.warning("%s did not stop in time: killing it", child.spec.key)
            child.proc.kill()
        kill_deadline = time.monotonic() + 1.0
        for child in stragglers:
            child.proc.join(max(0.01, kill_deadline - time.monotonic()))
        self._drain()
        if self.health is not None:
            self.health.stop()
            self.health = None
        self.cleanup()
        log.info("pipeline %s stopped", self.cfg.name)

    def cleanup(self) -> None:
        """Remove this pipeline's shm segments (owners are dead now) and socket files."""
        prefix = f"{NAME_PREFIX}{self.cfg.name}-"
        mine = {str(c.proc.pid) for c in self.children.values() if c.proc is not None}
        cleanup_stale(prefix)
        for path in list_segments(prefix):  # segments of our children, dead or not
            if path.name[len(prefix) :].split("-", 1)[0] in mine:
                path.unlink(missing_ok=True)
        if self._run_dir is not None:
            if self._own_run_dir:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            else:
                for plan in self.edges.values():
                    for ep in (plan.sender, plan.receiver):
                        if ep.is_ipc and ep.mode == "bind":
                            Path(ep.url[len("ipc://") :]).unlink(missing_ok=True)
        for child in self.children.values():
            if child.stats_q is not None:
                _close_queue(child.stats_q)
                child.stats_q = None
            if child.control_q is not None:
                _close_queue(child.control_q)
                child.control_q = None

        if self.metrics_dir is not None:
            from pipeline.metrics import teardown_multiprocess

            teardown_multiprocess(self.metrics_dir)
            self.metrics_dir = None

    def _drain(self) -> None:
        for child in self.children.values():
            if child.stats_q is not None:
                self.board.drain(child.stats_q)

    # ------------------------------------------------------------------ main loop
    def run(self, poll_s: float = 0.1, until: Callable[[], bool] | None = None) -> int:
        """Start, supervise until a signal, an offline run's end or a fatal error; stop.

        Returns the exit status: 0 (signal or offline end), 2 (fatal configuration error),
        3 (`pipeline.procs.EXIT_RESULTS_LOST`: results of ``realtime: false`` cameras
        were not written: the run was stopped during a sink outage, or ``give_up_after_s``).
        """
        set_title(f"edgestream[{self.cfg.name}] supervisor")
        faulthandler.enable()
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it?
        stop_requested = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("%s: stopping", signal.Signals(signum).name)
            stop_requested.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(  # systemctl reload, a ConfigMap update
            signal.SIGHUP, lambda *_: self.request_reload("SIGHUP")
        )
        try:
            if not self.started:
                self.start()
            while not stop_requested.is_set():
                self.poll()
                if self.fatal is not None or self.done.is_set():
                    break
                if until is not None and until():
                    break
                stop_requested.wait(poll_s)
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)
        if self.fatal is not None:
            log.error("pipeline %s failed: %s", self.cfg.name, self.fatal)
            return 2
        # the sink's last stats arrived before stop() returned (it drains after the joins)
        lost = {k: v["offline"] for k, v in self.board.unwritten().items() if v["offline"]}
        if lost:
            log.error("pipeline %s: results of offline cameras not written: %s (exit %d)",
                      self.cfg.name, ", ".join(f"{k} {n}" for k, n in lost.items()),
                      EXIT_RESULTS_LOST)  # fmt: skip
            return EXIT_RESULTS_LOST
        return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _close_queue(q: Any) -> None:
    try:
        q.close()
        q.cancel_join_thread()
    except (OSError, ValueError, AssertionError):
        pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
