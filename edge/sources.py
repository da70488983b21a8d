"""Capture sources named by URI, and the thread that keeps only the newest frame.

URIs, as Jetson users write them (``parse_uri``)::

    0, /dev/video0, v4l2:///dev/video0   USB camera (V4L2, MJPG, one-frame buffer)
    csi://0                              CSI camera (nvarguscamerasrc pipeline)
    clip.mp4, file:///path/clip.mp4      video file
    rtsp://host/stream                   network stream (GStreamer with latency, or FFmpeg)
    gst://<raw pipeline>                 any GStreamer pipeline ending in appsink
    synthetic://?fps=30&frames=300       generated moving shapes (edge.synthetic)
    photo.jpg, photos/                   an image, or every image in a folder

Every source gives ``read() -> uint8 [H, W, 3] BGR frame or None``. The
GStreamer pipeline strings are built by pure functions (tested without a camera).
"""
import os
import re
from collections import namedtuple

import cv2

from edge.errors import NanocapError
from edge.image import IMAGE_EXTENSIONS, check_pixels, list_images, read_image
from edge.synthetic import SyntheticSource, synthetic_options

SourceSpec = namedtuple("SourceSpec", "kind location options")
KINDS = ("v4l2", "csi", "file", "rtsp", "gst", "synthetic", "image", "folder")
APPSINK = "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
DEFAULT_FPS = 30.0


def parse_uri(uri):
    """``uri`` -> ``SourceSpec(kind, location, options)``; pure (touches no device).

    ``kind`` is one of ``KINDS``; ``location`` is a device path, sensor id,
    file path, URL or pipeline; ``options`` holds ``synthetic://`` query values.
    """
    text = str(uri).strip()
    if not text:
        raise NanocapError("empty input URI")
    if re.match(r"^\d+$", text):
        return SourceSpec("v4l2", "/dev/video%d" % int(text), {})
    if text.startswith("v4l2://"):
        rest = text[len("v4l2://"):]
        return SourceSpec("v4l2", "/dev/video%d" % int(rest) if rest.isdigit() else rest, {})
    if re.match(r"^/dev/video\d+$", text):
        return SourceSpec("v4l2", text, {})
    if text.startswith("csi://"):
        rest = text[len("csi://"):] or "0"
        if not rest.isdigit():
            raise NanocapError("csi:// takes a sensor id, e.g. csi://0 (got %r)" % text)
        return SourceSpec("csi", int(rest), {})
    if re.match(r"^(rtsp|rtsps|rtmp|https?)://", text):
        return SourceSpec("rtsp", text, {})
    if text.startswith("gst://"):
        return SourceSpec("gst", text[len("gst://"):], {})
    if text.startswith("synthetic://"):
        return SourceSpec("synthetic", "", _query(text[len("synthetic://"):]))
    path = text[len("file://"):] if text.startswith("file://") else text
    if re.match(r"^[a-z][a-z0-9+.-]*://", path):
        raise NanocapError("unknown input URI scheme: %s" % text)
    if os.path.isdir(path):
        return SourceSpec("folder", path, {})
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return SourceSpec("image", path, {})
    return SourceSpec("file", path, {})


def _query(rest):
    """``"?fps=30&frames=10"`` -> ``{"fps": 30.0, "frames": 10.0}`` (numbers only)."""
    options = {}
    for item in rest.lstrip("?/").split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        try:
            options[key] = float(value)
        except ValueError:
            raise NanocapError("synthetic:// option %s must be a number (got %r)" % (key, value))
    return options


# -- GStreamer pipelines (pure) -------------------------------------------------

def gst_usb_mjpg(device, width, height, fps, hw_decode=False):
    """USB camera delivering MJPG, decoded to BGR; ``hw_decode`` uses the Jetson's
    NVJPG engine (``nvv4l2decoder mjpeg=1``) instead of ``jpegdec``."""
    caps = "image/jpeg, width=%d, height=%d, framerate=%d/1" % (width, height, int(round(fps)))
    decode = ("nvv4l2decoder mjpeg=1 ! nvvidconv ! video/x-raw, format=BGRx"
              if hw_decode else "jpegdec")
    return "v4l2src device=%s io-mode=2 ! %s ! %s ! %s" % (device, caps, decode, APPSINK)


def gst_csi(sensor_id, width, height, fps, flip=0):
    """Jetson CSI camera through ``nvarguscamerasrc``, scaled by ``nvvidconv``."""
    return ("nvarguscamerasrc sensor-id=%d ! video/x-raw(memory:NVMM), width=%d, height=%d, "
            "format=NV12, framerate=%d/1 ! nvvidconv flip-method=%d ! video/x-raw, width=%d, "
            "height=%d, format=BGRx ! %s"
            % (int(sensor_id), width, height, int(round(fps)), int(flip), width, height, APPSINK))


def gst_rtsp(url, latency_ms=200):
    """RTSP stream with a jitter buffer of ``latency_ms``, decoded by ``decodebin``."""
    return "rtspsrc location=%s latency=%d ! decodebin ! %s" % (url, int(latency_ms), APPSINK)


def has_gstreamer():
    """True where this OpenCV was built with GStreamer (JetPack's is)."""
    info = cv2.getBuildInformation()
    return bool(re.search(r"GStreamer:\s*YES", info))


# -- sources -----------------------------------------------------------------

class CaptureSource(object):
    """An OpenCV ``VideoCapture`` made by ``opener()``; the first frame is read at
    open, so a device or file that gives nothing fails here, with one line."""

    def __init__(self, opener, name, live, fps=None):
        self.opener, self.name, self.live = opener, name, live
        self.capture = None
        self._first = None
        self.fps = fps
        self.open()

    def open(self):
        self.close()
        capture = self.opener()
        if capture is None or not capture.isOpened():
            raise NanocapError("cannot open %s" % self.name)
        _check_frame_size(capture, self.name)
        ok, frame = capture.read()
        if not ok or frame is None:
            capture.release()
            raise NanocapError("no frame could be read from %s" % self.name)
        self.capture, self._first = capture, frame
        if not self.fps:
            rate = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(rate) if rate and 0 < rate < 1000 else DEFAULT_FPS

    def read(self):
        """The next frame (``uint8 [H, W, 3]`` BGR), or None when none came."""
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        if self.capture is None:
            return None
        ok, frame = self.capture.read()
        return frame if ok else None

    def reopen(self):
        """Try to open again; True on success (used after a camera stops)."""
        try:
            self.open()
            return True
        except NanocapError:
            return False

    def close(self):
        if self.capture is not None:
            self.capture.release()
            self.capture = None


def _check_frame_size(capture, name):
    """Refuse (and release) a capture whose frames are larger than
    ``edge.image.MAX_PIXELS``, before the first frame is read."""
    width = capture.get(cv2.CAP_PROP_FRAME_WIDTH)
    height = capture.get(cv2.CAP_PROP_FRAME_HEIGHT)
    try:
        check_pixels(width, height, "each frame of %s" % name)
    except NanocapError:
        capture.release()
        raise


class ImageSource(object):
    """Image files as frames, one each (``edge.image.read_image``: corrupt and
    truncated files are damaged). A damaged one is skipped and named in
    ``damaged`` (a list of its messages); a single image is read at open, so a
    damaged one fails there with one line."""

    live = False
    fps = 1.0
    caption_each = True

    def __init__(self, paths, name):
        if not paths:
            raise NanocapError("no images in %s" % name)
        self.paths, self.name, self.damaged, self.index = list(paths), name, [], 0
        self._first = read_image(self.paths[0]) if len(self.paths) == 1 else None

    @property
    def skipped(self):
        return len(self.damaged)

    def read(self):
        if self._first is not None:
            frame, self._first, self.index = self._first, None, 1
            return frame
        while self.index < len(self.paths):
            path = self.paths[self.index]
            self.index += 1
            try:
                return read_image(path)
            except NanocapError as exc:
                self.damaged.append(str(exc))
        return None

    def reopen(self):
        return False

    def close(self):
        pass


def _v4l2_capture(device, width, height, fps):
    """Open a V4L2 camera directly: MJPG, the requested size and rate, one-frame buffer."""
    match = re.match(r"^/dev/video(\d+)$", device)
    capture = cv2.VideoCapture(int(match.group(1)) if match else device, cv2.CAP_V4L2)
    if capture.isOpened():
        capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        capture.set(cv2.CAP_PROP_FPS, fps)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return capture


def _need_gstreamer(what):
    if not has_gstreamer():
        raise NanocapError("%s needs OpenCV built with GStreamer (JetPack's OpenCV is; "
                           "pip's opencv-python is not)" % what)


def open_source(uri, width=640, height=480, fps=DEFAULT_FPS, latency_ms=200,
                gstreamer=False, flip=0, timeout_s=5.0):
    """Open ``uri`` (see ``parse_uri``); one clear ``NanocapError`` if it cannot be.

    ``width/height/fps`` apply to cameras (and ``synthetic://`` unless its query
    says otherwise); ``gstreamer`` opens USB cameras through ``gst_usb_mjpg``;
    ``timeout_s`` bounds a stream's open and each read (FFmpeg).
    """
    spec = parse_uri(uri)
    kind, where = spec.kind, spec.location
    if kind == "v4l2":
        if not os.path.exists(where):
            raise NanocapError("camera not found: %s (no such device; is it plugged in? "
                               "see ls /dev/video*)" % where)
        if gstreamer:
            _need_gstreamer("--gstreamer")
            pipeline = gst_usb_mjpg(where, width, height, fps)
            return CaptureSource(lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER),
                                 "camera %s" % where, live=True, fps=fps)
        return CaptureSource(lambda: _v4l2_capture(where, width, height, fps),
                             "camera %s" % where, live=True, fps=fps)
    if kind == "csi":
        _need_gstreamer("csi://")
        pipeline = gst_csi(where, width, height, fps, flip)
        return CaptureSource(lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER),
                             "CSI camera %d" % where, live=True, fps=fps)
    if kind == "rtsp":
        if has_gstreamer() and where.startswith("rtsp"):
            pipeline = gst_rtsp(where, latency_ms)
            return CaptureSource(lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER),
                                 "stream %s" % where, live=True)
        return CaptureSource(lambda: _ffmpeg_stream(where, int(timeout_s * 1000)),
                             "stream %s" % where, live=True)
    if kind == "gst":
        _need_gstreamer("gst://")
        return CaptureSource(lambda: cv2.VideoCapture(where, cv2.CAP_GSTREAMER),
                             "GStreamer pipeline %r" % where, live=True)
    if kind == "synthetic":
        o = synthetic_options(spec.options, width, height, fps)
        return SyntheticSource(o["width"], o["height"], o["fps"], o["frames"], o["seed"],
                               bool(o["pace"]))
    if kind == "folder":
        return ImageSource(list_images(where), "folder %s" % where)
    if not os.path.isfile(where):
        raise NanocapError("%s not found: %s" % ("image" if kind == "image" else "video file",
                                                 where))
    if kind == "image":
        return ImageSource([where], "image %s" % where)
    return CaptureSource(lambda: cv2.VideoCapture(where), "video file %s" % where, live=False)


def _ffmpeg_stream(url, timeout_ms=5000):
    """A stream through FFmpeg; open/read time out after ``timeout_ms`` where the
    OpenCV has those properties (4.5.2+), so a dead host fails within seconds."""
    if hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    else:
        capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    if capture.isOpened():
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return capture
