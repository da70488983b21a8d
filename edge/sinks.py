"""Where the live loop's frames and captions go: a window, a recording, a JSON-lines log.

Outputs are named like inputs: ``display://0`` (an OpenCV window), a video
file path (``.mp4``, ``.avi``, ``.mkv``; recorded from its own thread by
``edge.recorder``) or ``http://HOST:PORT`` (a web view, ``edge.web``). Every sink has ``write(frame)`` and
``close()``; the window's ``write`` returns the key pressed (-1 for none).

Failures are said when they happen: the live loop sets ``on_failure`` on every
sink (and the log) that has the attribute, a callable taking one line of text;
a sink calls it once when it fails (and may again when it recovers), and the
loop shows it on stderr at once, in ``/status.json`` (``failures``) and in the
summary (``failures``, exit code 1), while the picture and other sinks go on.
"""
import json
import os
import tempfile
import threading
import time

import cv2

from edge.atomic import write_bytes
from edge.display import window_problem
from edge.disk import RotatingLines, drop_oldest, free_bytes, partial_name, prune, segment_name
from edge.errors import NanocapError, say

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

    def for_input(self, index, count):
        """Input ``index`` of ``count``: a tile of this window's mosaic (``edge.mosaic``)."""
        from edge.mosaic import Mosaic, Tile
        if getattr(self, "mosaic", None) is None:
            self.mosaic = Mosaic(self, count)
        return Tile(self.mosaic, index)

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


class DiskFull(Exception):
    """The recording stopped cleanly because its filesystem is nearly full."""


class VideoSink(object):
    """A recording: opened on the first frame (its size) at ``fps`` (which may be
    changed until then), every later frame resized to that size; ``close()``
    finalises the file so it plays.

    Checked at start: the folder exists and a writer opens there (an unwritable
    folder or a missing codec fails before the run, with one line). A file is
    written as ``NAME.partial.EXT`` and renamed when finalised, so a crash leaves
    the old file or a complete new one. ``segment_s``: cut into files of that
    many seconds of video, named ``STEM-YYYYmmdd-HHMMSS.EXT`` (``edge.disk``),
    each playable on its own; ``max_bytes``: the oldest segments are deleted
    while all of them hold more (a dashcam). Before each frame the free space is
    checked: near full, the oldest segment goes, or (none left) the file is
    finalised and ``DiskFull`` raised, so what was written stays playable.
    """

    RESERVE = 256 * 1024        # bytes kept free for the finalising index (mp4 moov)

    def __init__(self, path, fps, segment_s=None, max_bytes=None):
        self.path, self.fps = path, float(fps or 30.0)
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_CODECS:
            raise NanocapError("unknown output %r: give display://0 or a video file (%s)"
                               % (path, ", ".join(sorted(VIDEO_CODECS))))
        self.folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(self.folder):
            raise NanocapError("output folder does not exist: %s" % self.folder)
        if os.path.isdir(path):
            raise NanocapError("output %s is a folder; give a file such as %s"
                               % (path, os.path.join(path, "out" + ext)))
        self.fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[ext])
        self.segment_s, self.max_bytes = segment_s, max_bytes
        self.writer, self.size, self.frames, self.current = None, None, 0, None
        self.part_frames, self.files = 0, []
        self._check_writable()

    def _check_writable(self):
        """Open a writer on a 64x64 probe file beside the output, then remove it."""
        probe = os.path.join(self.folder, ".nanocap-probe-%d%s"
                             % (os.getpid(), os.path.splitext(self.path)[1]))
        writer = cv2.VideoWriter(probe, self.fourcc, 30.0, (64, 64))
        opened = writer.isOpened()
        writer.release()
        if os.path.exists(probe):
            os.remove(probe)
        if not opened:
            why = ("the folder is not writable" if not os.access(self.folder, os.W_OK)
                   or not _can_create(self.folder) else "codec not available")
            raise NanocapError("cannot write video %s (%s)" % (self.path, why))

    def _open(self, frame):
        self.size = (frame.shape[1], frame.shape[0])
        self.current = segment_name(self.path) if self.segment_s else self.path
        self.writer = _open_writer(partial_name(self.current), self.fourcc, self.fps, self.size)
        if not self.writer.isOpened():
            raise NanocapError("cannot write video %s (codec not available at %dx%d, %.2f FPS)"
                               % (self.current, self.size[0], self.size[1], self.fps))
        self.part_frames = 0

    def _finish(self):
        """Finalise the file in hand and give it its name; prune to ``max_bytes``."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        os.rename(partial_name(self.current), self.current)
        self.files.append(self.current)
        if self.max_bytes:
            prune(self.path, self.max_bytes)

    def _partial_bytes(self):
        try:
            return os.path.getsize(partial_name(self.current))
        except OSError:
            return 0

    def _make_room(self):
        """Keep space for the next frame and the index; free it or stop cleanly."""
        written = self._partial_bytes()
        need = self.RESERVE + 64 * self.part_frames + 3 * written // max(1, self.part_frames)
        while free_bytes(self.folder) < need:
            if not (self.segment_s and drop_oldest(self.path)):
                self._finish()
                raise DiskFull("disk full (%.1f MB free in %s); %s kept, playable"
                               % (free_bytes(self.folder) / 1e6, self.folder,
                                  self.files[-1] if self.files else "nothing"))
        if self.max_bytes and self.part_frames % 30 == 0:
            prune(self.path, self.max_bytes, written)
            if self.segment_s and written > self.max_bytes // 2:
                self._finish()          # one segment may not fill the cap

    def write(self, frame):
        if self.writer is None:
            self._open(frame)
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._make_room()
        if self.writer is None:
            self._open(frame)
        self.writer.write(frame)
        self.frames += 1
        self.part_frames += 1
        if self.segment_s and self.part_frames >= max(1, round(self.segment_s * self.fps)):
            self._finish()
        return -1

    def close(self):
        self._finish()


def _can_create(folder):
    """True if a file can be created in ``folder`` (``os.access`` is no help to root
    on a read-only mount)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".nanocap-", dir=folder)
    except (IOError, OSError):
        return False
    os.close(fd)
    os.remove(name)
    return True


def caption_record(start, frame_index, result, when, backend_name, shown=True):
    """One caption as the dict written to the log and sent to ``/events``:
    ``{"t", "frame", "caption", "tokens", "latency_ms", "backend", "shown"}``;
    ``t`` is seconds since ``start`` (``time.perf_counter`` values)."""
    return {"t": round(when - start, 4), "frame": int(frame_index),
            "caption": result.text, "tokens": [int(t) for t in result.tokens],
            "latency_ms": round(float(result.latency_ms), 3), "backend": backend_name,
            "shown": bool(shown)}


class CaptionLog(object):
    """JSON lines, one per caption computed (a ``caption_record``; ``shown``: whether
    it replaced the caption shown) or source event (``{"event": ...}``), written as
    they come (thread-safe). ``max_bytes``/``keep``: rotation (``edge.disk``).

    A write error (a full disk, ``/dev/full``) never reaches the caller: it is
    reported once through ``on_failure(text)``, the records meanwhile are counted
    in ``skipped``, and writing is tried again every ``retry_s`` seconds."""

    def __init__(self, path, backend_name, start=None, max_bytes=None, keep=3, retry_s=30.0):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise NanocapError("--log %s is a folder; give a file such as %s"
                               % (path, os.path.join(path, "captions.jsonl")))
        if not os.path.isdir(folder):
            raise NanocapError("log folder does not exist: %s" % folder)
        try:
            self.handle = RotatingLines(path, max_bytes, keep)
        except (IOError, OSError) as exc:
            raise NanocapError("cannot write log %s: %s" % (path, exc.strerror or exc))
        self.path, self.backend, self.retry_s = path, backend_name, float(retry_s)
        self.start = time.perf_counter() if start is None else start
        self.lock = threading.Lock()
        self.lines, self.skipped, self.failed_at, self.error = 0, 0, None, None
        self.on_failure = None

    def write_caption(self, frame_index, result, when=None, shown=True):
        """Append one caption (a ``CaptionResult``) describing frame ``frame_index``."""
        when = time.perf_counter() if when is None else when
        self.write_record(caption_record(self.start, frame_index, result, when,
                                         self.backend, shown))

    def write_record(self, record):
        """Append one dict as a line (dropped and counted while the disk refuses)."""
        with self.lock:
            if self.handle is None:
                return
            if self.failed_at is not None and time.time() - self.failed_at < self.retry_s:
                self.skipped += 1
                return
            try:
                self.handle.write(json.dumps(record) + "\n")
            except (IOError, OSError) as exc:
                self._failed(exc)
                return
            if self.failed_at is not None:
                self.failed_at = None
                _tell(self.on_failure, "log %s: writing again (%d record(s) skipped)"
                      % (self.path, self.skipped))
            self.lines += 1

    def _failed(self, exc):
        self.skipped += 1
        first = self.failed_at is None and self.error is None
        self.failed_at = time.time()
        self.error = "log %s: write failed: %s" % (self.path, getattr(exc, "strerror", None)
                                                    or exc)
        if first:
            _tell(self.on_failure, self.error + "; captions go on, unlogged (retried every "
                                                "%g s)" % self.retry_s)

    def close(self):
        with self.lock:
            if self.handle is not None:
                self.handle.close()
                self.handle = None


def _tell(report, text):
    """``report(text)`` if a failure hook is set, else one stderr line."""
    if report is not None:
        report(text)
    else:
        say(text)


def open_outputs(outputs, fps, headless=False, web_options=None, record_options=None,
                 publish_options=None):
    """Sinks for output names: ``display://N`` windows (skipped when ``headless``),
    ``http://HOST:PORT`` web views (``edge.web.WebView(name, **web_options)``),
    ``mqtt://`` brokers and ``webhook+http(s)://`` receivers (``edge.publish``, with
    ``publish_options``) and video files (``VideoSink(name, fps, **record_options)``).
    With no outputs, a window if a display exists."""
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
                sinks.append(VideoSink(name, fps, **(record_options or {})))
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
