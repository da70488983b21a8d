"""The live loop end to end: real video files, real ONNX Runtime, real subprocesses."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from edge.backends import open_backend
from edge.live import run_live
from edge.sinks import CaptionLog, VideoSink
from edge.sources import open_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("torch", "torchvision", "onnx", "train", "export")
BLOCKER = '''import sys
class _Block(object):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in %r:
            raise ImportError("blocked in this test: " + name)
    find_module = find_spec
sys.meta_path.insert(0, _Block())
''' % (BLOCKED,)
LOG_KEYS = ["backend", "caption", "frame", "latency_ms", "shown", "t", "tokens"]
SUMMARY_KEYS = {"frames", "display_fps", "captions", "caption_fps", "caption_latency_ms",
                "backend", "providers", "dropped_frames", "captions_computed", "captions_shown",
                "gated_frames", "recorded_frames", "record_dropped"}


def count_frames(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


@pytest.fixture(scope="module")
def photo_video(real_data, tmp_path_factory):
    """A 160x120 30 FPS MJPG .avi of 4 real Flickr8k photos, each held 6 frames (24)."""
    folder = os.path.join(real_data, "flickr8k", "images")
    names = sorted(os.listdir(folder))[:4]
    path = str(tmp_path_factory.mktemp("video") / "in.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    for name in names:
        photo = cv2.resize(cv2.imread(os.path.join(folder, name)), (160, 120))
        for _ in range(6):
            writer.write(photo)
    writer.release()
    assert len(count_frames(path)) == 24
    return path


def read_log(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_file_loop_keeps_every_frame(tiny_bundle, photo_video, tmp_path):
    out, log_path = str(tmp_path / "out.mp4"), str(tmp_path / "caps.jsonl")
    source = open_source(photo_video)
    backend = open_backend(tiny_bundle, backend="ort")
    sink, log = VideoSink(out, source.fps), CaptionLog(log_path, backend.name)
    summary = run_live(source, backend, [sink], log)
    sink.close()
    log.close()
    assert SUMMARY_KEYS <= set(summary)
    assert summary["frames"] == 24 and summary["dropped_frames"] == 0
    assert summary["providers"] == ["CPUExecutionProvider"]
    assert 1 <= summary["captions"] <= 24 and summary["caption_latency_ms"]["p50"] > 0
    recorded = count_frames(out)
    assert len(recorded) == 24 and recorded[0].shape == (120, 160, 3)
    original = count_frames(photo_video)
    band = slice(100, 120)        # the overlay band darkens the bottom rows
    assert recorded[5][band].mean() < original[5][band].mean() - 10
    lines = read_log(log_path)
    assert len(lines) == summary["captions"]
    assert all(sorted(line) == LOG_KEYS for line in lines)
    assert lines[0]["frame"] == 0 and all(0 <= l["frame"] < 24 for l in lines)
    assert [l["frame"] for l in lines] == sorted(l["frame"] for l in lines)


class SlowSink(object):
    """A consumer that takes ``seconds`` per frame (a slow display or encoder)."""

    def __init__(self, seconds):
        self.seconds, self.frames = seconds, 0

    def write(self, frame):
        time.sleep(self.seconds)
        self.frames += 1
        return -1

    def close(self):
        pass


@pytest.fixture(scope="module")
def video_10fps(photo_video, tmp_path_factory):
    """``photo_video``'s 24 frames at 10 FPS: 2.4 s when played at its own rate."""
    path = str(tmp_path_factory.mktemp("v10") / "in10.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for frame in count_frames(photo_video):
        writer.write(frame)
    writer.release()
    return path


def test_realtime_paces_and_drops_only_when_slow(tiny_bundle, video_10fps):
    """Played at its rate (10 FPS): a fast consumer sees every frame over >= 2.3 s
    (paced, not read flat out); one that takes 0.25 s a frame sees ~1 in 2.5,
    the rest dropped, and the run still lasts the video's length, not 24 x 0.25 s."""
    fast = run_live(open_source(video_10fps), open_backend(tiny_bundle, backend="ort"),
                    [SlowSink(0.0)], realtime=True)
    assert fast["frames"] == 24 and fast["dropped_frames"] == 0
    assert fast["seconds"] >= 2.3
    slow = run_live(open_source(video_10fps), open_backend(tiny_bundle, backend="ort"),
                    [SlowSink(0.25)], realtime=True)
    assert slow["frames"] + slow["dropped_frames"] == 24
    assert slow["dropped_frames"] >= 10 and slow["frames"] <= 14
    assert slow["seconds"] < 24 * 0.25 - 1.0


class SlowVideoSink(VideoSink):
    """A real recording whose encoder takes ``seconds`` more per frame (a slow CPU)."""

    def __init__(self, path, fps, seconds):
        VideoSink.__init__(self, path, fps)
        self.seconds = seconds

    def write(self, frame):
        time.sleep(self.seconds)
        return VideoSink.write(self, frame)


def test_slow_recording_never_slows_the_display(tiny_bundle, tmp_path):
    """Paced at 30 FPS for 2 s with an encoder 4x too slow: the display keeps
    the rate, the recorder drops and counts; the file holds what it recorded."""
    out = str(tmp_path / "slow.avi")
    source = open_source("synthetic://?width=160&height=120&frames=60&fps=30")
    sink = SlowVideoSink(out, 30.0, 0.12)
    summary = run_live(source, open_backend(tiny_bundle, backend="ort"), [sink])
    assert summary["display_fps"] > 25, summary
    assert summary["record_dropped"] >= 20
    assert summary["recorded_frames"] + summary["record_dropped"] == summary["frames"]
    assert len(count_frames(out)) == summary["recorded_frames"]


def test_camera_recording_at_measured_rate(tiny_bundle, tmp_path):
    """A source that delivers 15 FPS while claiming 30 (a camera asked for 30):
    the file is written at the measured 15."""
    from edge.sources import SyntheticSource

    class Camera15(SyntheticSource):
        """Reports 30 FPS (the rate asked, as a V4L2 driver echoes it), delivers 15."""

        def __init__(self):
            SyntheticSource.__init__(self, 160, 120, fps=30.0, frames=30, pace=False)
            self.live = True

        def read(self):
            self.start = self.start or time.perf_counter()
            wait = self.start + self.index / 15.0 - time.perf_counter()
            time.sleep(max(0.0, wait))
            return SyntheticSource.read(self)

    out = str(tmp_path / "cam.avi")
    source = Camera15()
    summary = run_live(source, open_backend(tiny_bundle, backend="ort"),
                       [VideoSink(out, source.fps)])
    capture = cv2.VideoCapture(out)
    rate = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    assert 13.5 <= rate <= 16.5, rate
    assert len(count_frames(out)) == summary["recorded_frames"] >= 25


def _env(blocker_dir=None):
    env = dict(os.environ)
    paths = ([blocker_dir] if blocker_dir else []) + [ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_edge(args, cwd, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "edge"] + args, cwd=cwd, env=env or _env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


@pytest.fixture(scope="module")
def blocker(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(BLOCKER)
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=_env(str(folder)),
                           stderr=subprocess.PIPE, universal_newlines=True)
    assert probe.returncode != 0 and "blocked in this test" in probe.stderr
    return str(folder)


def test_cli_without_torch_records_every_frame(tiny_bundle, photo_video, tmp_path, blocker):
    result = run_edge([photo_video, "out.mp4", "--bundle", tiny_bundle, "--headless",
                       "--log", "caps.jsonl"], str(tmp_path), _env(blocker))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 24 and summary["backend"] == "ort"
    assert len(count_frames(str(tmp_path / "out.mp4"))) == 24
    assert len(read_log(str(tmp_path / "caps.jsonl"))) == summary["captions"] >= 1


def test_cli_images_beam_and_every(tiny_bundle, real_data, tmp_path, blocker):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in sorted(os.listdir(os.path.join(real_data, "flickr8k", "images")))[:3]:
        shutil.copy(os.path.join(real_data, "flickr8k", "images", name), str(folder))
    result = run_edge([str(folder), "--bundle", tiny_bundle, "--headless", "--decode", "beam",
                       "--log", "caps.jsonl"], str(tmp_path), _env(blocker))
    assert result.returncode == 0, result.stderr
    assert [l["frame"] for l in read_log(str(tmp_path / "caps.jsonl"))] == [0, 1, 2]
    result = run_edge(["synthetic://?width=96&height=72&frames=40&pace=0", "--bundle",
                       tiny_bundle, "--headless", "--every", "10", "--log", "every.jsonl"],
                      str(tmp_path), _env(blocker))
    frames = [l["frame"] for l in read_log(str(tmp_path / "every.jsonl"))]
    assert frames and all(b - a >= 10 for a, b in zip(frames, frames[1:]))


def _corrupt_copy(bundle, tmp_path):
    copy = str(tmp_path / "corrupt")
    shutil.copytree(bundle, copy)
    with open(os.path.join(copy, "caption.onnx"), "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x13\x37")
    return copy


def test_bad_inputs_fail_fast_with_one_line(tiny_bundle, photo_video, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "a.jpg").write_bytes(b"this is not a jpeg")
    (damaged / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (tmp_path / "logs").mkdir()
    cases = [
        ([str(damaged)], "no image could be read from folder"),
        ([str(damaged / "a.jpg")], "a.jpg"),
        ([photo_video, "--log", "logs"], "is a folder"),
        (["synthetic://?fps=0"], "fps=0"),
        (["synthetic://?width=-5"], "width=-5"),
        (["synthetic://?speed=2"], "no option 'speed'"),
        (["synthetic://?fps=abc"], "must be a number"),
        ([photo_video, "http://@:99999"], "web port out of range: 99999"),
        ([photo_video, "--fps", "0"], "--fps"),
        (["/dev/video97"], "camera not found"),
        (["missing.mp4"], "video file not found"),
        (["rtsp://127.0.0.1:9/none"], "cannot open stream"),
        ([photo_video, "out.xyz"], "unknown output"),
        ([photo_video, "--backend", "trt"], "TensorRT"),
        ([photo_video, "--precision", "int8"], "no caption graph in int8"),
    ]
    for args, message in cases:
        result = run_edge(args + ["--bundle", tiny_bundle, "--headless"], str(tmp_path))
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
        last = result.stderr.strip().splitlines()[-1]   # (FFmpeg may log its own lines first)
        assert "Traceback" not in result.stderr and last.startswith("nanocap-live: error: ")
    for bundle, message in ((str(tmp_path / "nope"), "bundle directory not found"),
                            (_corrupt_copy(tiny_bundle, tmp_path), "checksum")):
        result = run_edge([photo_video, "--bundle", bundle, "--headless"], str(tmp_path))
        assert result.returncode != 0 and message in result.stderr
        assert "Traceback" not in result.stderr
    debug = run_edge(["missing.mp4", "--bundle", tiny_bundle, "--debug"], str(tmp_path))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_truncated_jpeg_in_folder_is_damaged(tiny_bundle, real_data, tmp_path):
    """A JPEG cut short (an interrupted copy) is skipped, counted and named like a
    corrupt one; a folder of only such files is one line and a non-zero exit."""
    from edge.errors import NanocapError
    from edge.image import read_image
    images = os.path.join(real_data, "flickr8k", "images")
    names = sorted(os.listdir(images))[:2]
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(os.path.join(images, names[0]), str(folder / "a.jpg"))
    with open(os.path.join(images, names[1]), "rb") as handle:
        data = handle.read()
    (folder / "b.jpg").write_bytes(data[:len(data) // 2])
    with pytest.raises(NanocapError, match="cut short"):
        read_image(str(folder / "b.jpg"))
    result = run_edge([str(folder), "--bundle", tiny_bundle, "--headless"], str(tmp_path))
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[-1])["frames"] == 1
    assert "skipped 1 damaged image(s)" in result.stderr and "b.jpg" in result.stderr
    os.remove(str(folder / "a.jpg"))
    result = run_edge([str(folder), "--bundle", tiny_bundle, "--headless"], str(tmp_path))
    assert result.returncode != 0 and "b.jpg" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("nanocap-live: error: damaged image") and "b.jpg" in last, last


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_ends_cleanly(tiny_bundle, tmp_path, signum):
    log_path = tmp_path / "caps.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "synthetic://?width=160&height=120", "rec.avi",
         "--bundle", tiny_bundle, "--headless", "--log", str(log_path)],
        cwd=str(tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    deadline = time.time() + 30
    while time.time() < deadline and not (log_path.exists() and log_path.stat().st_size):
        time.sleep(0.1)
    time.sleep(0.3)
    sent = time.time()
    process.send_signal(signum)
    out, err = process.communicate(timeout=10)
    assert time.time() - sent < 3.0
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ended"] == "stopped" and summary["frames"] > 0
    recorded = summary["recorded_frames"]
    assert recorded + summary["record_dropped"] == summary["frames"]
    assert len(count_frames(str(tmp_path / "rec.avi"))) == recorded >= summary["frames"] - 5
    lines = read_log(str(log_path))
    assert len(lines) == summary["captions"] and lines[-1]["caption"] is not None


def test_memory_stays_flat_on_long_run(tiny_bundle):
    """No queue grows: RSS after 600 more frames is within a few MiB of after 200."""
    def rss_mb():
        with open("/proc/self/status") as handle:
            return [int(l.split()[1]) for l in handle if l.startswith("VmRSS")][0] / 1024.0
    backend = open_backend(tiny_bundle, backend="ort")
    uri = "synthetic://?width=320&height=240&frames=%d&pace=0"
    run_live(open_source(uri % 200), backend, [_NullSink()])
    before = rss_mb()
    backend = open_backend(tiny_bundle, backend="ort")
    summary = run_live(open_source(uri % 600), backend, [_NullSink()])
    assert summary["frames"] == 600
    assert rss_mb() - before < 20


class _NullSink(object):
    def write(self, frame):
        return -1

    def close(self):
        pass


class KeySink(object):
    """Stands in for the window: returns scripted key codes, one per written frame."""

    def __init__(self, keys):
        self.keys, self.frames = list(keys), 0

    def write(self, frame):
        self.frames += 1
        return self.keys.pop(0) if self.keys else -1

    def close(self):
        pass


def test_keys_snapshot_pause_quit(tiny_bundle, tmp_path):
    keys = [-1, ord("s"), -1, ord(" "), -1, ord(" "), -1, ord("q"), -1, -1]
    sink = KeySink(keys)
    summary = run_live(open_source("synthetic://?width=96&height=72&frames=50&pace=0"),
                       open_backend(tiny_bundle, backend="ort"), [sink],
                       snapshot_dir=str(tmp_path), message=lambda text: None)
    snapshots = [p for p in os.listdir(str(tmp_path)) if p.endswith(".png")]
    assert len(snapshots) == 1 and cv2.imread(str(tmp_path / snapshots[0])).shape == (72, 96, 3)
    assert summary["ended"] == "quit key" and summary["frames"] == 6
    assert sink.frames == 8      # two writes of the paused frame while paused
