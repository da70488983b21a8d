#!/usr/bin/python3
"""A real RTSP camera for tests and field checks: GStreamer's RTSP server serving
a moving test pattern at ``rtsp://127.0.0.1:PORT/test``.

Run with the system Python, which sees Debian's ``python3-gi`` and
``gir1.2-gst-rtsp-server-1.0`` (the project's venv does not)::

    /usr/bin/python3 scripts/rtsp_server.py --port 0 [--width 320 --height 240 --fps 15]

Prints ``rtsp://127.0.0.1:PORT/test`` on stdout once it listens (``--port 0``:
a free port, chosen by the server), then serves until SIGTERM/SIGINT. H.264
(``x264enc``) where GStreamer has it, else Motion JPEG (``jpegenc``).
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(width, height, fps):
    """The media pipeline: a live ball pattern, encoded, payloaded as ``pay0``."""
    source = ("videotestsrc is-live=true pattern=ball ! video/x-raw,width=%d,height=%d,"
              "framerate=%d/1 ! videoconvert" % (width, height, fps))
    if Gst.ElementFactory.find("x264enc"):
        encode = ("x264enc tune=zerolatency speed-preset=ultrafast key-int-max=%d ! "
                  "rtph264pay name=pay0 pt=96 config-interval=1" % fps)
    else:
        encode = "jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26"
    return "( %s ! %s )" % (source, encode)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args.width, args.height, args.fps))
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.stderr.write("rtsp_server: cannot listen on 127.0.0.1:%d\n" % args.port)
        return 2
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print("rtsp://127.0.0.1:%d/test" % server.get_bound_port(), flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
