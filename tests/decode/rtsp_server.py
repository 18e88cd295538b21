#!/usr/bin/python3
"""A small RTSP test server on GStreamer's gst-rtsp-server, for the decode tests and benchmarks.

Run it with Debian's ``/usr/bin/python3`` (it needs ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0``, which the project's Python does not see)::

    /usr/bin/python3 tests/decode/rtsp_server.py --port 0 \
        --mount /live=live:640x360@25 --mount /car=clip:../shared/data/media/car-detection.mp4 \
        [--auth user:pass]

It prints ``READY <port>`` on stdout once it listens (``--port 0`` picks a free port), serves
every mount over RTSP/TCP and RTSP/UDP, answers 404 for any other path and, with ``--auth``,
401 to clients without the right basic credentials. It runs until SIGTERM/SIGINT.

Mount kinds:

- ``live:WxH@FPS`` — ``videotestsrc is-live=true`` with a clock overlay, encoded by x264
  (zerolatency, ultrafast, a key frame every second): a camera that never ends.
- ``clip:PATH`` — a real H.264 MP4 served looped, without re-encoding. A file through
  ``qtdemux`` plays once per client and ends, so at start the clip is rewritten once as an
  Annex-B elementary stream (``qtdemux ! h264parse ! filesink``), and the mount reads it with
  ``multifilesrc loop=true``: h264parse keeps interpolating DTS across the wrap, a pad probe
  copies DTS to the missing PTS, and the stream runs forever with monotonic RTP timestamps at
  ~2 % of a core. (With B-frames, e.g. bottle-detection.mp4, RTP timestamps are then in decode
  order; the decoder still reorders the pictures correctly.) The media is shared: a second
  client joins mid-GOP and sees its first frame at the next key frame (4.8 s GOP for
  car-detection.mp4, 8.4 s for bottle-detection.mp4).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def annexb_copy(path: str, out_dir: str) -> tuple[str, str]:
    """Rewrite an MP4's H.264 track as Annex-B; return (path, framerate caps string)."""
    out = os.path.join(out_dir, os.path.basename(path) + ".h264")
    pipe = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! h264parse name=p ! '
        "video/x-h264,stream-format=byte-stream,alignment=au ! "
        f'filesink location="{out}" sync=false'
    )
    pipe.set_state(Gst.State.PLAYING)
    msg = pipe.get_bus().timed_pop_filtered(
        60 * Gst.SECOND, Gst.MessageType.EOS | Gst.MessageType.ERROR
    )
    caps = pipe.get_by_name("p").get_static_pad("src").get_current_caps()
    pipe.set_state(Gst.State.NULL)
    if msg is None or msg.type == Gst.MessageType.ERROR:
        raise SystemExit(f"cannot read {path}: {msg.parse_error() if msg else 'timeout'}")
    ok, num, den = caps.get_structure(0).get_fraction("framerate")
    if not ok or num == 0:
        num, den = 25, 1
    return out, f"{num}/{den}"


def launch_line(spec: str, tmp: str) -> str:
    kind, _, arg = spec.partition(":")
    if kind == "live":
        size, _, fps = arg.partition("@")
        width, _, height = size.partition("x")
        fps = fps or "25"
        return (
            f"( videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={width},height={height},framerate={fps}/1 ! "
            f"clockoverlay ! x264enc tune=zerolatency speed-preset=ultrafast "
            f"key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
    if kind == "clip":
        es, rate = annexb_copy(os.path.abspath(arg), tmp)
        return (
            f'( multifilesrc location="{es}" loop=true '
            f'caps="video/x-h264,stream-format=byte-stream,framerate={rate}" ! '
            f"h264parse name=parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
    raise SystemExit(f"unknown mount kind {kind!r} in {spec!r} (use live:WxH@FPS or clip:PATH)")


def _pts_from_dts(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    # h264parse interpolates DTS on a timestamp-less elementary stream but leaves PTS unset,
    # and the payloader and the RTSP server's sinks pace and stamp by PTS. Without B-frames
    # (see annexb_copy) presentation order is decode order, so PTS = DTS is exact.
    buf = info.get_buffer()
    if buf is not None and buf.pts == Gst.CLOCK_TIME_NONE:
        buf.pts = buf.dts
    return Gst.PadProbeReturn.OK


def on_media_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia):
    parse = media.get_element().get_by_name("parse")
    if parse is not None:
        parse.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, _pts_from_dts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mount", action="append", default=[], help="/path=live:WxH@FPS|clip:PATH")
    ap.add_argument("--auth", default=None, help="user:pass — require basic auth")
    args = ap.parse_args()
    Gst.init(None)
    tmp = tempfile.mkdtemp(prefix="rtsp-server-")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    if args.auth:
        user, _, password = args.auth.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
    for item in args.mount or ["/live=live:320x240@25"]:
        path, _, spec = item.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(spec, tmp))
        factory.set_shared(True)
        factory.connect("media-configure", on_media_configure)
        if args.auth:
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("user", "media.factory.access", True)
            perms.add_permission_for_role("user", "media.factory.construct", True)
            factory.set_permissions(perms)
        mounts.add_factory(path, factory)

    if server.attach(None) == 0 or server.get_bound_port() < 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port} (port in use?)")
    print(f"READY {server.get_bound_port()}", flush=True)
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    try:
        loop.run()
    finally:
        for name in os.listdir(tmp):
            os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
    sys.exit(0)


if __name__ == "__main__":
    main()
