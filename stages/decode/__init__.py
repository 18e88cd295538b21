"""Camera ingest: PyAV demux + decode of RTSP, HTTP (MJPEG, HLS), files and V4L2 devices.

One :class:`CameraSource` per camera runs in its own thread, survives disconnects, stalls and
corrupt data through a connecting → streaming → stalled → backoff state machine, and hands
:class:`DecodedFrame` objects (RGB, capture time, monotonic frame id) to a :class:`FrameSink`.
``feeder`` is the decode stage adapter (`DecodeFeeder`: cameras → `FrameMsg`s on the frames
edge). Credential redaction is the runtime's (`pipeline.redact`), re-exported here.
"""

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "redact_text": "pipeline.redact",
    "redact_url": "pipeline.redact",
    "CameraConfig": "stages.decode.config",
    "CameraSource": "stages.decode.source",
    "CameraState": "stages.decode.types",
    "CameraStats": "stages.decode.types",
    "DecodedFrame": "stages.decode.types",
    "FrameSink": "stages.decode.types",
}
__all__ = [
    "CameraConfig",
    "CameraSource",
    "CameraState",
    "CameraStats",
    "DecodedFrame",
    "FrameSink",
    "redact_text",
    "redact_url",
]

if TYPE_CHECKING:
    from pipeline.redact import redact_text, redact_url
    from stages.decode.config import CameraConfig
    from stages.decode.source import CameraSource
    from stages.decode.types import CameraState, CameraStats, DecodedFrame, FrameSink


__getattr__ = lazy_exports(__name__, _EXPORTS)  # the names above, imported on first use
