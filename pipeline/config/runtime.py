"""The runtime's own sections: transport (edges, CURVE), metrics, logging."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    model_validator,
)

from pipeline.config.base import (
    EDGES,
    STAGES,
    ConfigProblems,
    EnvPath,
    ExistingFile,
    StageName,
    StrictModel,
    _check_files,
    _expand,
    _resolve_path,
)

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


class CurveConfig(StrictModel):
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


class EdgeConfig(StrictModel):
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


class EdgesConfig(StrictModel):
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


class TransportConfig(StrictModel):
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


class MetricsConfig(StrictModel):
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


class LoggingConfig(StrictModel):
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
