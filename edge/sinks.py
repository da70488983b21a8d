"""Where the live loop's frames and captions go: a window, a recording, a JSON-lines log.

Outputs are named like inputs: ``display://0`` (an OpenCV window), a video
file path (``.mp4``, ``.avi``, ``.mkv``; recorded from its own thread by
``edge.recorder``) or ``http://HOST:PORT`` (a web view, ``edge.web``). Every sink has ``write(frame)`` and
``close()``; the window's ``write`` returns the key pressed (-1 for none).
"""
import json
import os
import threading
import time

import cv2

from edge.atomic import write_bytes
from edge.display import window_problem
from edge.errors import NanocapError

PUBLISH_SCHEMES = ("mqtt://", "mqtts://", "webhook+http://", "webhook+https://")
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".mov": "mp4v"}


def display_available():
    """True where a window can be shown: a display server and an OpenCV with a GUI."""
    return window_problem() is None


class DisplaySink(object):
    """An OpenCV window; ``write`` shows the frame and returns the key code (or -1)."""

    def __init__(self, name="nanocap"):
        self.name = name
        try:
            cv2.namedWindow(name, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise NanocapError("cannot open a window: %s; or use --headless"
                               % (window_problem() or "OpenCV refused"))

    def write(self, frame):
        cv2.imshow(self.name, frame)
        key = cv2.waitKey(1)
        return -1 if key < 0 else key & 0xFF

    def close(self):
        try:
            cv2.destroyWindow(self.name)
        except cv2.error:
            pass


def gst_h264_writer(path, fps, width, height, bitrate=8000000):
    """GStreamer pipeline for ``cv2.VideoWriter(..., cv2.CAP_GSTREAMER, ...)``: BGR
    frames to the Jetson's hardware H.264 encoder (``nvv4l2h264enc``), muxed into
    ``.mp4`` (``qtmux``) or ``.mkv`` (``matroskamux``) at ``path``."""
    mux = "matroskamux" if path.lower().endswith(".mkv") else "qtmux"
    return ("appsrc ! video/x-raw, format=BGR, width=%d, height=%d, framerate=%d/1000 ! "
            "videoconvert ! video/x-raw, format=BGRx ! nvvidconv ! "
            "video/x-raw(memory:NVMM), format=NV12 ! nvv4l2h264enc bitrate=%d "
            "insert-sps-pps=true ! h264parse ! %s ! filesink location=\"%s\""
            % (int(width), int(height), int(round(fps * 1000)), int(bitrate), mux, path))


def is_jetson():
    """True on an NVIDIA Jetson (L4T writes /etc/nv_tegra_release)."""
    return os.path.exists("/etc/nv_tegra_release")


def _open_writer(path, fourcc, fps, size):
    """The hardware H.264 encoder through GStreamer on a Jetson whose OpenCV has
    GStreamer (``.mp4``/``.mkv``); else (or if that fails) OpenCV's ``fourcc`` codec."""
    from edge.sources import has_gstreamer
    if is_jetson() and path.lower().endswith((".mp4", ".mkv")) and has_gstreamer():
        writer = cv2.VideoWriter(gst_h264_writer(path, fps, size[0], size[1]),
                                 cv2.CAP_GSTREAMER, 0, fps, size)
        if writer.isOpened():
            return writer
    return cv2.VideoWriter(path, fourcc, fps, size)


class VideoSink(object):
    """A recording: opened on the first frame (its size) at ``fps`` (which may be
    changed until then), every later frame resized to that size; ``close()``
    finalises the file so it plays."""

    def __init__(self, path, fps):
        self.path, self.fps = path, float(fps or 30.0)
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_CODECS:
            raise NanocapError("unknown output %r: give display://0 or a video file (%s)"
                               % (path, ", ".join(sorted(VIDEO_CODECS))))
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise NanocapError("output folder does not exist: %s" % folder)
        self.fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext])
        self.writer, self.size, self.frames = None, None, 0

    def write(self, frame):
        if self.writer is None:
            self.size = (frame.shape[1], frame.shape[0])
            self.writer = _open_writer(self.path, self.fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise NanocapError("cannot write video %s (codec not available)" % self.path)
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)
        self.frames += 1
        return -1

    def close(self):
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def caption_record(start, frame_index, result, when, backend_name, shown=True):
    """One caption as the dict written to the log and sent to ``/events``:
    ``{"t", "frame", "caption", "tokens", "latency_ms", "backend", "shown"}``;
    ``t`` is seconds since ``start`` (``time.perf_counter`` values)."""
    return {"t": round(when - start, 4), "frame": int(frame_index),
            "caption": result.text, "tokens": [int(t) for t in result.tokens],
            "latency_ms": round(float(result.latency_ms), 3), "backend": backend_name,
            "shown": bool(shown)}


class CaptionLog(object):
    """JSON lines, one per caption computed, flushed as written (thread-safe); each
    line is a ``caption_record`` (``shown``: whether it replaced the caption shown)."""

    def __init__(self, path, backend_name, start=None):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise NanocapError("--log %s is a folder; give a file such as %s"
                               % (path, os.path.join(path, "captions.jsonl")))
        if not os.path.isdir(folder):
            raise NanocapError("log folder does not exist: %s" % folder)
        try:
            self.handle = open(path, "w")
        except (IOError, OSError) as exc:
            raise NanocapError("cannot write log %s: %s" % (path, exc.strerror or exc))
        self.backend = backend_name
        self.start = time.perf_counter() if start is None else start
        self.lock = threading.Lock()
        self.lines = 0

    def write_caption(self, frame_index, result, when=None, shown=True):
        """Append one caption (a ``CaptionResult``) describing frame ``frame_index``."""
        when = time.perf_counter() if when is None else when
        self.write_record(caption_record(self.start, frame_index, result, when,
                                         self.backend, shown))

    def write_record(self, record):
        """Append one ``caption_record`` dict."""
        with self.lock:
            if self.handle is None:
                return
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
            self.lines += 1

    def close(self):
        with self.lock:
            if self.handle is not None:
                self.handle.close()
                self.handle = None


def open_outputs(outputs, fps, headless=False, web_options=None, publish_options=None):
    """Sinks for output names: ``display://N`` windows (skipped when ``headless``),
    ``http://HOST:PORT`` web views (``edge.web.WebView(name, **web_options)``),
    ``mqtt://`` brokers and ``webhook+http(s)://`` receivers (``edge.publish``, with
    ``publish_options``) and video files. With no outputs, a window if a display exists."""
    if not outputs and not headless and display_available():
        outputs = ["display://0"]
    sinks = []
    try:
        for name in outputs:
            if name.startswith("display://"):
                if not headless:
                    sinks.append(DisplaySink("nanocap %s" % name[len("display://"):]))
            elif name.startswith("http://"):
                from edge.web import WebView
                sinks.append(WebView(name, **(web_options or {})))
            elif name.startswith(PUBLISH_SCHEMES):
                from edge.publish import open_publisher
                sinks.append(open_publisher(name, **(publish_options or {})))
            else:
                sinks.append(VideoSink(name, fps))
    except NanocapError:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def save_snapshot(frame, directory=".", index=0):
    """Write ``frame`` as ``nanocap-<time>-<index>.png`` in ``directory``; returns the path."""
    name = "nanocap-%s-%06d.png" % (time.strftime("%Y%m%d-%H%M%S"), int(index))
    path = os.path.join(directory, name)
    ok, png = cv2.imencode(".png", frame)
    try:
        if ok:
            return write_bytes(path, png)   # a crash never leaves half a PNG
    except (IOError, OSError) as exc:
        raise NanocapError("cannot write snapshot %s: %s" % (path, exc))
    raise NanocapError("cannot encode snapshot %s" % path)
