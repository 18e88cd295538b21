"""Where each edge of the pipeline binds and connects, and the sockets a stage process opens.

``auto`` endpoints become ``ipc://`` socket files in the run folder (``transport.ipc_dir``, or
a private temporary folder). The binding side of an edge is the side that is one: decode binds
the fan-out ``frames`` edge (preprocess workers connect to it); the single consumer binds the
other edges (``items``: the workers connect to detect). An explicit endpoint is written for
that binding side (``bind:`` is implied for it, its peer connects to the same address); with
``connect:`` it is the side of this process tree when the other side runs on another host.

Pixels: on an ipc edge the sender gets a `pipeline.shm.ShmPool`: live (non-blocking) sends
move pixels into a ring and send a descriptor, offline (blocking) sends go inline (see
`pipeline.transport`). On a tcp edge, descriptors are resolved to inline pixels before sending
(the consumer is on another host).

Authentication: a tcp edge with CURVE keys (its ``curve``, else ``transport.curve``) opens its
binding side as the CURVE server and its connecting side as a client, the edge's name being
the ZAP domain its refusals are counted under (see `pipeline.curve`). ipc edges never use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import EDGES, CurveConfig, EdgeName
from pipeline.curve import CurveKeys
from pipeline.shm import ShmPool
from pipeline.transport import Endpoint, Receiver, Sender, StopFlag

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

FAN_OUT: frozenset[str] = frozenset({"frames"})


@dataclass(frozen=True)
class EdgePlan:
    name: str
    sender: Endpoint
    receiver: Endpoint
    capacity: int
    curve: CurveKeys | None = None
    # the frames edge with several decode processes: the endpoints decode shards 1.. bind
    # (shard 0 binds ``sender``); every receiver connects to all of them
    more_senders: tuple[Endpoint, ...] = ()

    @property
    def shm(self) -> bool:
        """Same host (ipc): pixels may travel as shared-memory descriptors."""
        return self.sender.is_ipc

    def open_sender(
        self,
        stop: StopFlag | None = None,
        name: str = "",
        pool: ShmPool | None = None,
        shard: int = 0,
    ) -> Sender:
        """The PUSH socket (of decode shard ``shard``); ``pool`` carries live pixels on an ipc
        edge (ignored on tcp)."""
        shm = pool if self.shm else None
        endpoint = self.sender if shard == 0 else self.more_senders[shard - 1]
        return Sender(
            endpoint, self.capacity, shm=shm, stop=stop, name=name or self.name, curve=self.curve
        )

    def open_receiver(self, name: str = "") -> Receiver:
        return Receiver(
            self.receiver,
            self.capacity,
            pixels="ref",
            name=name or self.name,
            curve=self.curve,
            also_connect=tuple(e.peer() for e in self.more_senders),
        )


def curve_keys(cfg: CurveConfig | None, edge: str) -> CurveKeys | None:
    """The transport's `CurveKeys` for a config section (None: no CURVE)."""
    if cfg is None:
        return None
    return CurveKeys(
        server_secret_key_file=cfg.server_secret_key_file,
        authorized_clients_dir=cfg.authorized_clients_dir,
        client_secret_key_file=cfg.client_secret_key_file,
        server_public_key_file=cfg.server_public_key_file,
        domain=edge,
    )


def plan_edges(cfg: PipelineConfig, run_dir: Path) -> dict[str, EdgePlan]:
    """Endpoints of every edge for this process tree (``run_dir`` holds auto ipc files)."""
    out: dict[str, EdgePlan] = {}
    edge_name: EdgeName
    for edge_name in EDGES:
        edge = getattr(cfg.transport.edges, edge_name)
        binder_is_sender = edge_name in FAN_OUT
        if edge.endpoint == "auto":
            binder = Endpoint("bind", f"ipc://{run_dir / (edge_name + '.sock')}")
        else:
            binder = Endpoint.parse(edge.endpoint, "bind")
        other = binder.peer()
        sender, receiver = (binder, other) if binder_is_sender else (other, binder)
        src, dst = EDGES[edge_name]
        local_src, local_dst = cfg.runs(src), cfg.runs(dst)
        if edge.endpoint != "auto" and local_src != local_dst:
            # one side runs elsewhere: the written endpoint is this side's
            sender, receiver = (binder, other) if local_src else (other, binder)
        curve = curve_keys(cfg.transport.curve_of(edge_name), edge_name)
        more: tuple[Endpoint, ...] = ()
        if edge_name == "frames" and edge.endpoint == "auto":
            more = tuple(
                Endpoint("bind", f"ipc://{run_dir / f'{edge_name}-{i}.sock'}")
                for i in range(1, cfg.decode_processes())
            )
        out[edge_name] = EdgePlan(edge_name, sender, receiver, edge.capacity, curve, more)
    return out
