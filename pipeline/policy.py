"""Which cameras are live (drop when behind) and which offline (block, lose nothing).

Stages ask ``camera_id in policy``. A camera the configuration lists follows its own
``realtime``; one it does not list (a detect stage on another host, configured without the
camera list) follows the pipeline's top-level ``realtime``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RealtimePolicy:
    live: frozenset[str] = field(default_factory=frozenset)
    offline: frozenset[str] = field(default_factory=frozenset)
    default: bool = True

    def __contains__(self, camera_id: object) -> bool:
        return camera_id in self.live or (camera_id not in self.offline and self.default)

    @classmethod
    def from_config(cls, cfg: Any) -> RealtimePolicy:
        cams = cfg.effective_cameras()
        return cls(
            live=frozenset(c.id for c in cams if c.realtime),
            offline=frozenset(c.id for c in cams if not c.realtime),
            default=bool(cfg.realtime),
        )
