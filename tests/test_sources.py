"""edge.sources: URI parsing, GStreamer strings, real capture sources, the frame grabber."""
import os
import shutil
import time

import cv2
import numpy as np
import pytest

from edge.errors import NanocapError
from edge.grabber import FrameGrabber
from edge.sources import (ImageSource, SyntheticSource, gst_csi, gst_rtsp,
                          gst_usb_mjpg, has_gstreamer, open_source, parse_uri)
from edge.synthetic import SyntheticScene


def test_parse_cameras():
    assert parse_uri("0") == ("v4l2", "/dev/video0", {})
    assert parse_uri("2").location == "/dev/video2"
    assert parse_uri("/dev/video1") == ("v4l2", "/dev/video1", {})
    assert parse_uri("v4l2:///dev/video3") == ("v4l2", "/dev/video3", {})
    assert parse_uri("v4l2://4").location == "/dev/video4"
    assert parse_uri("csi://0") == ("csi", 0, {})
    assert parse_uri("csi://1").location == 1
    with pytest.raises(NanocapError):
        parse_uri("csi://front")


def test_parse_files_streams_and_others(tmp_path):
    assert parse_uri("clip.mp4") == ("file", "clip.mp4", {})
    assert parse_uri("file:///data/clip.avi") == ("file", "/data/clip.avi", {})
    assert parse_uri("photo.JPG").kind == "image"
    assert parse_uri(str(tmp_path)) == ("folder", str(tmp_path), {})
    assert parse_uri("file://" + str(tmp_path)).kind == "folder"
    assert parse_uri("rtsp://cam.local:554/live") == ("rtsp", "rtsp://cam.local:554/live", {})
    assert parse_uri("gst://videotestsrc ! appsink") == ("gst", "videotestsrc ! appsink", {})
    spec = parse_uri("synthetic://?fps=10&frames=5")
    assert spec.kind == "synthetic" and spec.options == {"fps": 10.0, "frames": 5.0}
    assert parse_uri("synthetic://").options == {}
    for bad in ("ftp://x/y.mp4", "", "synthetic://?fps=fast"):
        with pytest.raises(NanocapError):
            parse_uri(bad)


def test_hardware_writer_pipeline():
    from edge.sinks import gst_h264_writer
    assert gst_h264_writer("/data/out run.mp4", 14.98, 1920, 1080) == (
        "appsrc ! video/x-raw, format=BGR, width=1920, height=1080, framerate=14980/1000 ! "
        "videoconvert ! video/x-raw, format=BGRx ! nvvidconv ! video/x-raw(memory:NVMM), "
        "format=NV12 ! nvv4l2h264enc bitrate=8000000 insert-sps-pps=true ! h264parse ! "
        "qtmux ! filesink location=\"/data/out run.mp4\"")
    mkv = gst_h264_writer("a.mkv", 30, 640, 480, bitrate=2000000)
    assert "framerate=30000/1000" in mkv and "bitrate=2000000" in mkv
    assert "! matroskamux ! filesink" in mkv


def test_gstreamer_pipelines():
    assert gst_usb_mjpg("/dev/video0", 640, 480, 30) == (
        "v4l2src device=/dev/video0 io-mode=2 ! image/jpeg, width=640, height=480, "
        "framerate=30/1 ! jpegdec ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false")
    hw = gst_usb_mjpg("/dev/video1", 1280, 720, 60, hw_decode=True)
    assert "nvv4l2decoder mjpeg=1 ! nvvidconv" in hw and "framerate=60/1" in hw
    assert gst_csi(0, 1280, 720, 30, flip=2) == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), width=1280, height=720, "
        "format=NV12, framerate=30/1 ! nvvidconv flip-method=2 ! video/x-raw, width=1280, "
        "height=720, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false")
    rtsp = gst_rtsp("rtsp://h/s", 120)
    assert rtsp.startswith("rtspsrc location=rtsp://h/s latency=120 ! decodebin !")
    assert rtsp.endswith("appsink drop=true max-buffers=1 sync=false")


def test_open_errors_are_clear(tmp_path):
    with pytest.raises(NanocapError, match="camera not found: /dev/video97"):
        open_source("/dev/video97")
    with pytest.raises(NanocapError, match="video file not found"):
        open_source(str(tmp_path / "none.mp4"))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(NanocapError, match="junk.avi"):
        open_source(str(junk))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(NanocapError, match="no images"):
        open_source(str(tmp_path / "empty_dir"))
    if not has_gstreamer():
        with pytest.raises(NanocapError, match="GStreamer"):
            open_source("csi://0")


def _write_video(path, frames, fps=30.0):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_file_source_reads_every_frame(tmp_path):
    scene = SyntheticScene(96, 64)
    path = str(tmp_path / "clip.avi")
    _write_video(path, [scene.frame(i) for i in range(12)], fps=25.0)
    source = open_source("file://" + path)
    assert not source.live and abs(source.fps - 25.0) < 0.01
    frames = []
    while True:
        frame = source.read()
        if frame is None:
            break
        frames.append(frame)
    source.close()
    assert len(frames) == 12 and frames[0].shape == (64, 96, 3)


def test_image_folder_skips_corrupt(real_data, tmp_path):
    names = sorted(os.listdir(os.path.join(real_data, "flickr8k", "images")))[:2]
    for name in names:
        shutil.copy(os.path.join(real_data, "flickr8k", "images", name), str(tmp_path))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageSource) and source.caption_each
    frames = [source.read() for _ in range(4)]
    assert [f is None for f in frames] == [False, False, True, True]
    assert frames[0].ndim == 3 and source.skipped == 1


def test_synthetic_source_is_deterministic_and_moves():
    a, b = SyntheticScene(80, 60, seed=1), SyntheticScene(80, 60, seed=1)
    assert np.array_equal(a.frame(7), b.frame(7))
    assert not np.array_equal(a.frame(0), a.frame(10))
    source = open_source("synthetic://?width=80&height=60&frames=3&pace=0")
    assert [source.read() is None for _ in range(4)] == [False, False, False, True]
    assert source.ended


def _drain(grabber, delay=0.0, limit=1000):
    got = []
    while len(got) < limit:
        item = grabber.get(timeout=2.0)
        if item is None:
            break
        got.append(item[0])
        time.sleep(delay)
    return got


def test_grabber_keeps_only_newest_frame():
    source = SyntheticSource(32, 24, fps=400, frames=120)  # a fast camera
    grabber = FrameGrabber(source, drop=True).start()
    got = _drain(grabber, delay=0.02)                         # a slow consumer
    grabber.stop()
    assert grabber.finished and grabber.read_count == 120
    assert grabber.dropped > 0 and len(got) + grabber.dropped == 120
    assert got == sorted(got) and len(set(got)) == len(got)
    assert got[-1] == 119                                     # the newest, never a stale one


def test_grabber_without_drop_delivers_every_frame():
    source = SyntheticSource(32, 24, frames=40, pace=False)
    grabber = FrameGrabber(source, drop=False).start()
    got = _drain(grabber, delay=0.002)
    grabber.stop()
    assert got == list(range(40)) and grabber.dropped == 0


class FlakyCamera(object):
    """A live source that stops after ``frames``; ``reopen`` works ``revive`` times."""
    live = True
    name = "camera /dev/videoX"

    def __init__(self, frames, revive):
        self.frames, self.revive, self.reopens, self.left = frames, revive, 0, frames

    def read(self):
        if self.left <= 0:
            return None
        self.left -= 1
        return np.zeros((4, 4, 3), np.uint8)

    def reopen(self):
        self.reopens += 1
        if self.reopens <= self.revive:
            self.left = self.frames
            return True
        return False

    def close(self):
        pass


def test_lost_camera_reopened_then_gives_up():
    camera = FlakyCamera(frames=5, revive=1)
    grabber = FrameGrabber(camera, drop=False, retries=3, backoff_s=0.01).start()
    start = time.time()
    got = _drain(grabber)
    grabber.stop()
    assert time.time() - start < 2.0
    assert got == list(range(10))                 # 5 frames, reopened, 5 more
    assert camera.reopens == 4 and grabber.reopens == 4
    assert "stopped delivering frames" in grabber.error and "3 reopen attempts" in grabber.error


def test_grabber_stops_promptly():
    grabber = FrameGrabber(SyntheticSource(32, 24, fps=5), drop=True).start()
    assert grabber.get(timeout=2.0) is not None
    start = time.time()
    grabber.stop()
    assert time.time() - start < 1.0 and not grabber.thread.is_alive()


class RebootingCamera(FlakyCamera):
    """Stops after ``frames``; its first ``down`` reopen attempts fail (an IP camera
    rebooting), then it delivers ``frames`` more."""

    def __init__(self, frames, down):
        FlakyCamera.__init__(self, frames, revive=0)
        self.down = down

    def reopen(self):
        self.reopens += 1
        if self.reopens > self.down:
            self.left = self.frames
            return True
        return False


def test_lost_camera_waited_for_by_default():
    """No ``retries``: a camera down for 12 reopen attempts is still waited for, the
    backoff capped; the outage is reported when it goes and when it comes back."""
    events = []
    camera = RebootingCamera(frames=5, down=12)
    grabber = FrameGrabber(camera, drop=False, backoff_s=0.01, max_backoff_s=0.02,
                           on_event=events.append).start()
    start = time.time()
    got = []
    while len(got) < 10 and time.time() - start < 5:
        item = grabber.get(timeout=0.5)
        if item is not None:
            got.append(item[0])
    grabber.stop()
    assert got == list(range(10)) and grabber.error is None
    assert time.time() - start < 2.0                    # capped: not 0.01 * 2**12 s
    assert [e["event"] for e in events][:2] == ["source_lost", "source_back"]
    assert events[1]["reopens"] == 13 and events[1]["outage_s"] >= 0


class HangingCamera(FlakyCamera):
    """A stream connected but silent: the 3rd read blocks for ``hang`` s, then gives
    a stale frame (as FFmpeg does at its read timeout)."""

    def __init__(self, hang):
        FlakyCamera.__init__(self, frames=10 ** 9, revive=10)
        self.hang, self.reads = hang, 0

    def read(self):
        self.reads += 1
        time.sleep(self.hang if self.reads == 3 else 0.01)
        return FlakyCamera.read(self)


def test_blocked_read_is_lost_by_timeout():
    events = []
    grabber = FrameGrabber(HangingCamera(hang=1.2), drop=True, backoff_s=0.01,
                           read_timeout_s=0.4, on_event=events.append).start()
    seen_lost, start = None, time.time()
    while time.time() - start < 0.9:
        grabber.get(timeout=0.05)          # the consumer's watchdog, while the read hangs
        seen_lost = seen_lost or grabber.lost_seconds()
    assert seen_lost is not None and events[0]["event"] == "source_lost"
    assert "read blocked" in events[0]["reason"]
    while time.time() - start < 3 and len(events) < 2:
        grabber.get(timeout=0.05)
    grabber.stop()
    assert [e["event"] for e in events] == ["source_lost", "source_back"]
    assert events[1]["outage_s"] >= 0.4 and grabber.outages == 1
    assert events[1]["reopens"] >= 1        # the stale frame ended nothing: a reopen did
