"""The published JSON Schemas (draft 2020-12), versioned by file name: ``<type>.v<major>``.

They are the contract with consumers: a change that is not a pure addition of optional fields
gets a new major file and ``SCHEMA_VERSION`` major, never an edit of an existing one.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

DETECTIONS_V1 = "detections.v1.schema.json"
TRACK_EVENT_V1 = "track_event.v1.schema.json"
ANALYTICS_EVENT_V1 = "analytics_event.v1.schema.json"  # since 1.1: zone and line events


@cache
def load(name: str) -> dict[str, Any]:
    """The parsed schema file ``name`` (one of the constants above)."""
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc
