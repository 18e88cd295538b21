"""The pipeline's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``.

A stdlib `ThreadingHTTPServer` in a daemon thread of the supervisor. It knows nothing of the
pipeline: the supervisor injects two callables, evaluated on every request.

* ``liveness() -> Mapping[str, bool | str]``: one entry per stage process (``"detect"``,
  ``"preprocess[1]"``...): ``True`` when alive, else a short reason (``"exited with -9,
  restarting in 2.0 s"``) or ``False``. ``/healthz`` answers 200 when every entry is True,
  else 503 with a JSON body naming the stages that are down. Kubernetes restarts the pod on
  repeated failures, so a stage the supervisor is already restarting should still report
  down: a pod stuck restarting the same stage *should* be restarted as a whole.
* ``readiness() -> Iterable[str]``: the reasons the pipeline cannot do its job yet (``"model
  not loaded"``, ``"redis sink not connected"``); empty means ready. ``/readyz`` answers 200
  or 503 with the reasons. A load balancer or a rollout waits on it.

``api(method, path, headers, body)``, when given, answers every other request (``GET
/cameras``, ``POST /reload``..., `pipeline.cameras_api`): ``(status, JSON body)``, or None for
a path it does not serve (404); a body over 64 KiB is 413, an api that raises is 500 with the
exception's type only.

A callable that raises answers 503 with the exception's type (never its text: it may quote
a URL with credentials). ``/metrics`` serves a registry in the Prometheus text format; in
multiprocess mode (`pipeline.metrics.setup_multiprocess`) a fresh aggregating registry is
built per scrape, as prometheus_client recommends.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline import metrics as _metrics
from pipeline.config import DEFAULT_METRICS_PORT

log = logging.getLogger("edgestream.health")

Liveness = Callable[[], Mapping[str, bool | str]]
Readiness = Callable[[], Iterable[str]]
# (method, path, headers, body) -> (status, JSON body), or None: not its path (404)
Api = Callable[[str, str, Mapping[str, str], bytes], "tuple[int, dict[str, Any]] | None"]
MAX_BODY_BYTES = 64 * 1024
_PREVIEW_PATH = re.compile(r"^/cameras/([A-Za-z0-9_.\-]{1,64})/(snapshot\.jpg|stream\.mjpg)$")
RegistrySource = CollectorRegistry | Callable[[], CollectorRegistry] | None


def check_liveness(liveness: Liveness) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of ``/healthz``."""
    try:
        stages = dict(liveness())
    except Exception as exc:
        return 503, {"status": "error", "error": f"liveness check failed: {type(exc).__name__}"}
    down = {
        name: (state if isinstance(state, str) else "not running")
        for name, state in stages.items()
        if state is not True
    }
    if down:
        return 503, {"status": "down", "down": down, "stages": sorted(stages)}
    return 200, {"status": "ok", "stages": sorted(stages)}


def check_readiness(readiness: Readiness) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of ``/readyz``."""
    try:
        reasons = [str(r) for r in readiness()]
    except Exception as exc:
        return 503, {"status": "error", "error": f"readiness check failed: {type(exc).__name__}"}
    if reasons:
        return 503, {"status": "not ready", "reasons": reasons}
    return 200, {"status": "ready"}


def _default_registry() -> CollectorRegistry:
    if _metrics.multiprocess_enabled():
        return _metrics.multiprocess_registry()
    registry = _metrics.process_metrics().registry
    return registry if registry is not None else CollectorRegistry()


class HealthServer:
    """Serves /metrics, /healthz and /readyz on ``host:port`` from a daemon thread.

    port: TCP port; 0 picks a free one (tests; read `port` after `start`). A config's
        ``metrics.port: 0`` means "no server" and is handled by `start_health_server`.
    registry: a registry, a function returning one per scrape, or None (multiprocess
        aggregation when enabled, else this process's `process_metrics` registry).
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int = DEFAULT_METRICS_PORT,
        *,
        liveness: Liveness = dict,
        readiness: Readiness = tuple,
        registry: RegistrySource = None,
        api: Api | None = None,
        preview: Any = None,
    ) -> None:
        self.host = host
        self.preview = preview  # /cameras/{id}/snapshot.jpg, stream.mjpg (pipeline.preview)
        self.requested_port = port
        self.liveness = liveness
        self.readiness = readiness
        self._registry = registry
        self.api = api  # /cameras, /reload (pipeline.cameras_api)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            return self.requested_port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def registry(self) -> CollectorRegistry:
        source = self._registry
        if source is None:
            return _default_registry()
        if isinstance(source, CollectorRegistry):
            return source
        return source()

    def start(self) -> HealthServer:
        """Bind and serve; raises OSError (e.g. the port is taken) with the address in it."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "edgestream"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path == "/metrics":
                    try:
                        body = generate_latest(server.registry())
                    except Exception as exc:  # a broken collector must not kill the server
                        log.warning("metrics collection failed: %s", type(exc).__name__)
                        self._send(500, b"metrics collection failed\n", "text/plain")
                        return
                    self._send(200, body, CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._json(*check_liveness(server.liveness))
                elif path == "/readyz":
                    self._json(*check_readiness(server.readiness))
                elif path == "/":
                    self._send(200, b"edgestream: /metrics /healthz /readyz\n", "text/plain")
                elif (m := _PREVIEW_PATH.match(path)) is not None:
                    self._preview(m.group(1), m.group(2))
                elif not self._api("GET", path):
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

            def do_POST(self) -> None:
                self._write("POST")

            def do_PATCH(self) -> None:
                self._write("PATCH")

            def do_DELETE(self) -> None:
                self._write("DELETE")

            def _write(self, method: str) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if not self._api(method, path):
                    self._json(404, {"error": f"not found: {method} {path}"})

            def _api(self, method: str, path: str) -> bool:
                """Hand the request to the injected api; False when it is not its path."""
                if server.api is None:
                    return False
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._json(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
                    return True
                body = self.rfile.read(length) if length > 0 else b""
                try:
                    answer = server.api(method, path, dict(self.headers.items()), body)
                except Exception as exc:  # never the text: it may quote a URL or a token
                    log.exception("%s %s failed", method, path)
                    answer = (500, {"error": f"internal error: {type(exc).__name__}"})
                if answer is None:
                    return False
                self._json(*answer)
                return True

            def _preview(self, camera: str, kind: str) -> None:
                """A camera's annotated snapshot (JPEG) or a low-rate MJPEG stream of them."""
                preview = server.preview
                if preview is None:
                    self._json(404, {"error": "the preview is off (config: preview.enabled)"})
                elif not preview.known(camera):
                    self._json(404, {"error": f"no camera {camera!r}"})
                elif kind == "snapshot.jpg":
                    snap = preview.snapshot(camera)
                    if snap is None:
                        self._json(503, {"error": f"no frame of {camera!r} yet"})
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", str(len(snap.jpeg)))
                    self.send_header("Cache-Control", "no-store")
                    self.send_header("X-Frame-Id", str(snap.frame_id))
                    self.send_header("X-Capture-Ts", f"{snap.capture_ts:.6f}")
                    self.end_headers()
                    self.wfile.write(snap.jpeg)
                elif not preview.open_stream():
                    self._json(503, {"error": "too many preview streams (preview.max_streams)"})
                else:
                    try:
                        self._stream(preview, camera)
                    finally:
                        preview.close_stream()

            def _stream(self, preview: Any, camera: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                last = -1
                try:
                    while True:
                        snap = preview.snapshot(camera, wait_s=2.0)
                        if snap is not None and snap.frame_id != last:
                            last = snap.frame_id
                            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                             b"Content-Length: %d\r\n\r\n%s\r\n"
                                             % (len(snap.jpeg), snap.jpeg))  # fmt: skip
                            self.wfile.flush()
                        time.sleep(1.0 / preview.fps)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the viewer went away

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, (json.dumps(body) + "\n").encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status, HTTPStatus(status).phrase)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

        try:
            httpd = ThreadingHTTPServer((self.host, self.requested_port), Handler)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot serve metrics on {self.host}:{self.requested_port}: {exc.strerror} "
                "(another program has the port? choose a free one with --metrics-port PORT or "
                "the config key metrics.port; 0 disables the server)",
            ) from None
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="health-http",
            daemon=True,
        )
        self._thread.start()
        log.info("serving /metrics /healthz /readyz on %s", self.url)
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_health_server(
    host: str,
    port: int,
    *,
    liveness: Liveness,
    readiness: Readiness,
    registry: RegistrySource = None,
    api: Api | None = None,
    preview: Any = None,
) -> HealthServer | None:
    """Start a `HealthServer` for ``metrics.host``/``metrics.port``; None when port is 0."""
    if port == 0:
        return None
    return HealthServer(
        host,
        port,
        liveness=liveness,
        readiness=readiness,
        registry=registry,
        api=api,
        preview=preview,
    ).start()
