"""Opening a source with PyAV: demuxer options per kind, decoder threading, hardware decode.

Every blocking FFmpeg call made through the container returned here is bounded: PyAV's
``timeout=(open_s, read_s)`` installs FFmpeg's interrupt callback, which aborts connecting,
probing and every later read. FFmpeg 8 ignores the old ``stimeout`` option; its RTSP socket
``timeout`` option (µs) is deliberately not set: it also cuts the handshake short at the read
timeout (a silent port failed after ``read_timeout_s``, not ``open_timeout_s``) and adds
nothing to the interrupt callback once streaming. Measured with FFmpeg 8 on a SIGSTOPped RTSP
server: the read gives up after about twice ``read_s``, which is why stall *detection* is the
watchdog's job (:mod:`stages.decode.source`), not FFmpeg's. For HTTP, ``rw_timeout`` (µs)
bounds each socket read, as HTTP has no interrupt-aware retry loop of its own.
"""

from __future__ import annotations

import logging
from typing import Any

import av
import av.container
import av.stream
import av.video.stream
from av.codec.hwaccel import HWAccel

from stages.decode.config import CameraConfig

log = logging.getLogger(__name__)

_THREAD_TYPES = {"auto": "AUTO", "frame": "FRAME", "slice": "SLICE"}


def demuxer_options(cfg: CameraConfig) -> tuple[str | None, dict[str, str]]:
    """(FFmpeg input format or None to probe, demuxer options) for ``cfg``'s kind of source."""
    read_us = str(int(cfg.read_timeout_s * 1_000_000))
    fmt: str | None = None
    opts: dict[str, str] = {}
    if cfg.kind == "rtsp":
        opts = {
            "rtsp_transport": cfg.transport,
            "allowed_media_types": "video",  # do not set up (or pay for) audio
            "max_delay": "500000",  # µs the RTP reorder buffer may wait (UDP)
        }
        if cfg.transport == "udp":
            opts["buffer_size"] = str(4 * 1024 * 1024)  # socket buffer: a burst of I-frame packets
    elif cfg.kind == "http":
        opts = {"rw_timeout": read_us}
    elif cfg.kind == "v4l2":
        fmt = "v4l2"
    opts.update(cfg.options)
    return fmt, opts


def hwaccel_usable(device_type: str) -> str | None:
    """None if an FFmpeg ``device_type`` device can be created here, else the reason it cannot.

    Creating the device context is the only reliable probe: ``hwdevices_available()`` lists
    what FFmpeg was built with (``cuda`` shows up on machines without a GPU).
    """
    try:
        HWAccel(device_type=device_type).create(av.Codec("h264", "r"))
    except Exception as e:  # av.error.*, ValueError for an unknown type
        return f"{type(e).__name__}: {e}"
    return None


def open_input(cfg: CameraConfig, hwaccel: bool) -> av.container.InputContainer:
    """Open ``cfg`` with bounded timeouts; ``hwaccel`` asks for ``cfg.hwaccel`` decoding.

    With hardware decoding, PyAV's software fallback stays enabled, so a codec or profile the
    device cannot decode (H.265 4:4:4 on NVDEC, say) still decodes on the CPU; frames decoded on
    the device are downloaded to system memory by PyAV before conversion.
    """
    fmt, opts = demuxer_options(cfg)
    kwargs: dict[str, Any] = {}
    if hwaccel and cfg.hwaccel:
        kwargs["hwaccel"] = HWAccel(device_type=cfg.hwaccel, allow_software_fallback=True)
    return av.open(
        cfg.path,
        mode="r",
        format=fmt,
        options=opts,
        timeout=(cfg.open_timeout_s, cfg.read_timeout_s),
        **kwargs,
    )


def configure_video_stream(
    container: av.container.InputContainer, cfg: CameraConfig
) -> av.video.stream.VideoStream:
    """Pick the first video stream, set decoder threading, and discard the other streams."""
    if not container.streams.video:
        raise ValueError("the source has no video stream")
    stream = container.streams.video[0]
    stream.codec_context.thread_count = cfg.decoder_threads
    stream.thread_type = _THREAD_TYPES[cfg.decoder_thread_type]
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    return stream
