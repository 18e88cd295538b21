"""Which cameras a replica runs: shard k of N by rendezvous (highest-random-weight) hashing.

Every replica reads the same camera list and keeps the cameras for which its own index scores
highest: ``score(camera, k) = blake2b(k, camera)``, owner = argmax over k < N. No coordination:
each replica decides alone, and all agree because they hash the same strings. Adding replica N
moves to it exactly the cameras it now scores highest for (about 1/(N+1) of them, taken
evenly from the others) and moves nothing between the old replicas; removing the last one
moves only its own cameras. A ``camera_id % N`` or ring-less hash would move most of them.

Where k and N come from (`shard_from`): ``edgestream run --shard K/N``, else the environment:
``EDGESTREAM_SHARD_COUNT`` = N and ``EDGESTREAM_SHARD_INDEX`` = k, or, when the index is not
set, the ordinal of a StatefulSet pod name (``edgestream-3`` -> 3) from ``EDGESTREAM_POD_NAME``
or ``HOSTNAME``.

When a camera moves (N changes), the replica that lost it stops reading it at its next
restart (a StatefulSet rolls every pod when N changes in the manifest) and the new owner starts
it; results keep going to the same per-camera Redis stream, with the new owner's frame ids.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_INDEX = "EDGESTREAM_SHARD_INDEX"
ENV_COUNT = "EDGESTREAM_SHARD_COUNT"
ENV_POD_NAME = "EDGESTREAM_POD_NAME"
_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class Shard:
    """Replica ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in 0..{self.count - 1}, got {self.index}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` (``--shard 2/5``)."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if m is None:
            raise ValueError(f"--shard {text!r}: expected K/N, e.g. 0/3")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, camera_id: str) -> bool:
        return owner(camera_id, self.count) == self.index


def score(camera_id: str, replica: int) -> int:
    """The replica's weight for the camera: 64 bits of blake2b, stable across machines,
    Python versions and processes (unlike ``hash()``)."""
    digest = hashlib.blake2b(
        camera_id.encode("utf-8"), digest_size=8, key=str(replica).encode("ascii")
    ).digest()
    return int.from_bytes(digest, "big")


def owner(camera_id: str, replicas: int) -> int:
    """The replica (0..replicas-1) that runs ``camera_id``."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    return max(range(replicas), key=lambda k: score(camera_id, k))


def owned(camera_ids: Iterable[str], shard: Shard) -> list[str]:
    """The ids ``shard`` runs, in the given order."""
    return [c for c in camera_ids if owner(c, shard.count) == shard.index]


def ordinal_of(pod_name: str) -> int | None:
    """A StatefulSet pod's ordinal: ``edgestream-3`` -> 3; None without one."""
    m = _ORDINAL.search(pod_name.strip())
    return int(m.group(1)) if m else None


def shard_from(flag: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard this process runs: ``--shard K/N`` (``flag``), else the environment (see the
    module docstring), else None (every camera). Raises ValueError on a half-given or bad
    setting, naming it."""
    if flag:
        return Shard.parse(flag)
    env = os.environ if env is None else env
    count = env.get(ENV_COUNT, "").strip()
    index = env.get(ENV_INDEX, "").strip()
    if not count:
        if index:
            raise ValueError(f"{ENV_INDEX} is set but {ENV_COUNT} is not: give both")
        return None
    if not count.isdigit():
        raise ValueError(f"{ENV_COUNT}={count!r}: expected a whole number")
    if index:
        if not index.isdigit():
            raise ValueError(f"{ENV_INDEX}={index!r}: expected a whole number")
        return Shard(int(index), int(count))
    for var in (ENV_POD_NAME, "HOSTNAME"):
        k = ordinal_of(env.get(var, ""))
        if k is not None:
            return Shard(k, int(count))
    raise ValueError(
        f"{ENV_COUNT}={count} but no index: set {ENV_INDEX}, or run as a StatefulSet pod "
        f"whose name ({ENV_POD_NAME} or HOSTNAME) ends in its ordinal"
    )


def apply_shard(cfg: Any, shard: Shard | None) -> Any:
    """``cfg`` (a `PipelineConfig`) with only the cameras ``shard`` owns, and a pipeline name
    that carries the shard index (several replicas on one host must not share shared-memory
    or socket names). None: ``cfg`` unchanged. The result may have no camera at all."""
    if shard is None:
        return cfg
    keep = set(owned(cfg.camera_ids, shard))
    suffix = f"-{shard.index}"
    name = cfg.name[: 32 - len(suffix)] + suffix
    cameras = [c for c in cfg.cameras if c.id in keep]
    return cfg.model_copy(update={"cameras": cameras, "name": name})


# ------------------------------------------------------------------------------------ CLI


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "shard",
        help="print the camera ids one replica owns (rendezvous hashing)",
        description="Print, one per line, the ids of the cameras in CONFIG that replica "
        "--index of --replicas runs (`edgestream run --shard K/N` runs exactly those).",
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="YAML config")
    p.add_argument("--replicas", type=int, required=True, metavar="N", help="replica count")
    p.add_argument("--index", type=int, required=True, metavar="K", help="replica 0..N-1")
    p.set_defaults(func=cmd_shard)


def cmd_shard(args: argparse.Namespace) -> int:
    from pipeline.config import load_config

    shard = Shard(args.index, args.replicas)
    cfg = load_config(args.config, check_files=False)
    for cam in owned(cfg.camera_ids, shard):
        print(cam)
    return 0


def run_idle(cfg: Any, shard: Shard, total_cameras: int, stop: Any = None) -> int:
    """A replica that owns no camera (more replicas than cameras, or an unlucky hash) stays
    up, idle, until SIGTERM/SIGINT (exit 0) instead of exiting: a StatefulSet would restart
    an exited pod forever. It serves ``/healthz`` and ``/readyz`` (200: nothing to do is not a
    failure) and an empty ``/metrics`` on the configured port. ``stop``: a
    `threading.Event` that ends it (tests); default: the signals."""
    import logging
    import signal
    import threading

    from pipeline.health import start_health_server

    log = logging.getLogger("edgestream.shard")
    log.warning(
        "shard %s owns none of the %d camera(s) in the config: idle until stopped",
        shard,
        total_cameras,
    )
    done = stop if stop is not None else threading.Event()
    previous = {}
    if stop is None:
        for s in (signal.SIGTERM, signal.SIGINT):
            previous[s] = signal.signal(s, lambda *_: done.set())
    server = start_health_server(
        cfg.metrics.host, cfg.metrics.port, liveness=lambda: {"shard": True}, readiness=tuple
    )
    try:
        done.wait()
    finally:
        if server is not None:
            server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
