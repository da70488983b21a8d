"""The live loop in the field: failing sinks, a really full disk, disk caps, signals.

Real subprocesses, real signals, real files read back by OpenCV, and (as root) a
really full filesystem: a 2 MiB tmpfs mounted for the test.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edge.disk import RotatingLines, segments
from edge.sinks import CaptionLog, VideoSink
from test_live import _env, count_frames, read_log, run_edge

SYNTH = "synthetic://?width=160&height=120&fps=30&frames=%d"


@contextlib.contextmanager
def tmpfs(folder, size="2m", options=""):
    """A fresh tmpfs of ``size`` mounted on ``folder`` (root only; else the test skips)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    os.makedirs(folder)
    opts = "size=%s%s" % (size, "," + options if options else "")
    done = subprocess.call(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", folder])
    if done != 0:
        pytest.skip("mount -t tmpfs failed here (a container without CAP_SYS_ADMIN?)")
    try:
        yield folder
    finally:
        subprocess.call(["umount", "-l", folder])


def summary_of(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_log_on_dev_full_never_stops_the_captions(tiny_bundle, tmp_path):
    """``--log /dev/full``: said once on stderr when it happens, captions go on to
    the end, the summary is printed and names it, exit 1 (no traceback)."""
    result = run_edge([SYNTH % 90, "--bundle", tiny_bundle, "--headless", "--gate", "off",
                       "--log", "/dev/full"], str(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    summary = summary_of(result)
    assert summary["frames"] + summary["dropped_frames"] == 90    # paced: a busy loop drops
    assert summary["captions_computed"] >= 5
    assert summary["log_lines"] == 0 and summary["log_skipped"] >= 1
    assert "/dev/full" in summary["error"] and "No space left" in summary["error"]
    said = [l for l in result.stderr.splitlines() if l.startswith("nanocap: log /dev/full")]
    assert len(said) == 1


def test_full_disk_stops_the_recording_playable(tiny_bundle, tmp_path):
    """A 2 MiB filesystem filled by a 1280x720 recording: the recording stops
    cleanly and the part written plays; the run goes on to its end, exit 1."""
    with tmpfs(str(tmp_path / "small")) as small:
        out = os.path.join(small, "out.mp4")
        result = run_edge(["synthetic://?width=1280&height=720&fps=30&frames=900&pace=0", out,
                           "--bundle", tiny_bundle, "--headless"], str(tmp_path))
        assert result.returncode == 1, result.stderr
        summary = summary_of(result)
        assert summary["frames"] == 900
        assert "disk full" in summary["error"] and out in summary["error"]
        kept = len(count_frames(out))
        assert 10 <= kept == summary["recorded_frames"] < 900
        assert [l for l in result.stderr.splitlines()
                if l.startswith("nanocap: recording") and "disk full" in l]


def test_full_disk_log_keeps_whole_lines_and_recovers(tiny_bundle, tmp_path):
    """A log on a filesystem with 6 KiB left: the write error is said, captions go
    on, the file ends on a whole JSON line; space freed, logging resumes."""
    with tmpfs(str(tmp_path / "small")) as small:
        filler = os.path.join(small, "filler")
        with open(filler, "wb") as handle:
            handle.write(b"\0" * (2 * 1024 * 1024 - 6 * 1024))
        log = CaptionLog(os.path.join(small, "log.jsonl"), "ort", retry_s=0.0)
        said = []
        log.on_failure = said.append
        record = {"caption": "a red circle " * 4, "tokens": list(range(20))}
        for _ in range(100):
            log.write_record(record)
        assert said and "No space left" in said[0] and log.skipped > 0
        os.remove(filler)
        log.write_record(record)
        log.close()
        assert "writing again" in said[-1]
        with open(os.path.join(small, "log.jsonl")) as handle:
            lines = [json.loads(line) for line in handle]   # every line whole
        assert len(lines) == log.lines == 100 - log.skipped + 1


def test_unwritable_output_refused_at_start(tiny_bundle, tmp_path):
    """A recording into a read-only folder fails before the run, with one line."""
    if os.geteuid() == 0:
        context = tmpfs(str(tmp_path / "ro"), "1m", "ro")
    else:
        os.makedirs(str(tmp_path / "ro"))
        os.chmod(str(tmp_path / "ro"), 0o500)
        context = contextlib.contextmanager(lambda: (yield str(tmp_path / "ro")))()
    with context as folder:
        result = run_edge([SYNTH % 30, os.path.join(folder, "out.mp4"), "--bundle",
                           tiny_bundle, "--headless"], str(tmp_path))
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot write video" in last and "not writable" in last, result.stderr


def test_segments_each_play_and_the_cap_holds(tmp_path):
    """Segments of 1 s at 30 FPS: each plays on its own and holds 30 frames; the
    oldest go while all of them exceed the cap; no partial file is left."""
    path = str(tmp_path / "rec.mp4")
    sink = VideoSink(path, 30.0, segment_s=1.0, max_bytes=400 * 1024)
    rng = np.random.RandomState(0)
    for _ in range(300):
        sink.write(rng.randint(0, 255, (120, 160, 3)).astype(np.uint8))
    sink.close()
    kept = segments(path)
    assert len(sink.files) == 10 and 1 <= len(kept) < 10
    assert sum(size for _, size in kept) <= 400 * 1024
    assert [name for name, _ in kept] == sink.files[-len(kept):]
    assert all(len(count_frames(name)) == 30 for name, _ in kept)
    assert sorted(os.listdir(str(tmp_path))) == sorted(os.path.basename(n) for n, _ in kept)


def test_recording_is_written_aside_then_renamed(tmp_path):
    """A file being written is ``NAME.partial.EXT``: ``NAME`` keeps the old file
    until the new one is complete (a crash leaves the old one)."""
    path = str(tmp_path / "rec.avi")
    with open(path, "wb") as handle:
        handle.write(b"old")
    sink = VideoSink(path, 30.0)
    for _ in range(5):
        sink.write(np.zeros((48, 64, 3), np.uint8))
    with open(path, "rb") as handle:
        assert handle.read() == b"old"
    assert os.path.exists(str(tmp_path / "rec.partial.avi"))
    sink.close()
    assert len(count_frames(path)) == 5 and not os.path.exists(str(tmp_path / "rec.partial.avi"))


def test_log_rotation_keeps_n_files_of_whole_lines(tmp_path):
    path = str(tmp_path / "caps.jsonl")
    lines = RotatingLines(path, max_bytes=1000, keep=2)
    for i in range(200):
        lines.write(json.dumps({"i": i, "pad": "x" * 40}) + "\n")
    lines.close()
    names = sorted(os.listdir(str(tmp_path)))
    assert names == ["caps.jsonl", "caps.jsonl.1", "caps.jsonl.2"]
    got = []
    for name in ("caps.jsonl.2", "caps.jsonl.1", "caps.jsonl"):
        assert os.path.getsize(str(tmp_path / name)) <= 1000
        got += [json.loads(line)["i"] for line in open(str(tmp_path / name))]
    assert got == list(range(200 - len(got), 200))     # the newest, in order


def test_cli_disk_caps(tiny_bundle, tmp_path):
    """``--log-max-mb``/``--log-keep``/``--segment-min``/``--record-max-gb`` end to end."""
    result = run_edge([SYNTH % 240, "rec.avi", "--bundle", tiny_bundle, "--headless",
                       "--gate", "off", "--log", "caps.jsonl", "--log-max-mb", "0.005",
                       "--log-keep", "1", "--segment-min", "0.0167",
                       "--record-max-gb", "0.0004"], str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(str(tmp_path)))
    assert "caps.jsonl.1" in names and "caps.jsonl.2" not in names
    assert all(os.path.getsize(str(tmp_path / n)) <= 5000 for n in names if "jsonl" in n)
    kept = segments(str(tmp_path / "rec.avi"))
    assert 1 <= len(kept) < 8 and sum(s for _, s in kept) <= 400000
    assert all(len(count_frames(name)) > 0 for name, _ in kept)
    bad = run_edge([SYNTH % 10, "--bundle", tiny_bundle, "--log-max-mb", "0"], str(tmp_path))
    assert bad.returncode == 2 and "--log-max-mb must be > 0" in bad.stderr


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "edge"] + args, cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)


def _wait_for(path, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline and not (os.path.exists(path) and os.path.getsize(path)):
        time.sleep(0.1)


def test_hangup_ignored_when_asked(tiny_bundle, tmp_path):
    """``--on-hangup continue``: SIGHUP changes nothing; SIGTERM then ends the run."""
    log = str(tmp_path / "caps.jsonl")
    process = _start(["synthetic://?width=160&height=120", "--bundle", tiny_bundle,
                      "--headless", "--log", log, "--on-hangup", "continue"], str(tmp_path))
    _wait_for(log)
    process.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ended"] == "stopped" and summary["seconds"] > 1.5
    assert len(read_log(log)) == summary["captions"]


class UnpluggedCamera(object):
    """A paced live camera (``edge.synthetic`` scenes) unplugged for ``gone_s`` seconds
    after ``before`` frames: reads give None and reopens fail until it is back."""
    live, fps, name = True, 30.0, "camera /dev/video9"

    def __init__(self, before=30, gone_s=1.5, after=30):
        from edge.synthetic import SyntheticSource
        self.scene = SyntheticSource(160, 120, pace=False)
        self.before, self.after, self.gone_s = before, after, gone_s
        self.read_count, self.back_at = 0, None

    def read(self):
        if self.read_count == self.before and self.back_at is None:
            self.back_at = time.time() + self.gone_s
        if self.back_at is not None and time.time() < self.back_at:
            time.sleep(0.02)
            return None
        if self.read_count >= self.before + self.after:
            self.ended = True
            return None
        self.read_count += 1
        time.sleep(1 / 30.0)
        return self.scene.read()

    def reopen(self):
        return time.time() >= self.back_at

    def close(self):
        pass


class Collect(object):
    """A window stand-in that keeps a copy of what it was shown."""

    def __init__(self):
        self.frames = []

    def write(self, frame):
        self.frames.append(frame.copy())
        return -1

    def close(self):
        pass


def test_lost_camera_shown_marked_logged_not_recorded(tiny_bundle, tmp_path):
    """While the camera is gone the window gets the last frame with the red "lost"
    band a few times a second; the recording gets only real frames; the log and
    the summary record the outage; the run goes on when the camera is back."""
    from edge.backends import open_backend
    from edge.live import run_live

    window, out = Collect(), str(tmp_path / "rec.avi")
    log = CaptionLog(str(tmp_path / "caps.jsonl"), "ort")
    camera = UnpluggedCamera()
    summary = run_live(camera, open_backend(tiny_bundle, backend="ort"),
                       [window, VideoSink(out, 30.0)], log, backoff_s=0.05)
    log.close()
    assert summary["frames"] + summary["dropped_frames"] == 60 and summary["error"] is None
    assert summary["outages"] == 1 and summary["last_outage"]["outage_s"] >= 1.4
    marked = [f for f in window.frames
              if (f[60, :, 2].astype(int) - f[60, :, 1].astype(int)).mean() > 60]
    assert 4 <= len(marked) <= 12 and len(window.frames) == summary["frames"] + len(marked)
    assert len(count_frames(out)) == summary["recorded_frames"] <= summary["frames"]
    events = [l for l in read_log(str(tmp_path / "caps.jsonl")) if "event" in l]
    assert [e["event"] for e in events] == ["source_lost", "source_back"]
    assert events[0]["source"] == "camera /dev/video9"


def test_field_flags_on_py36(tiny_bundle, tmp_path):
    """The Jetson floor (Python 3.6 runtime venv): segments, caps and a failing log."""
    from tests.conftest import PY36, PY36_MISSING
    if PY36 is None:
        pytest.skip(PY36_MISSING)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    env.pop("PYTHONHOME", None)
    result = subprocess.run([PY36, "-m", "edge", SYNTH % 120, "rec.avi", "--bundle",
                             tiny_bundle, "--headless", "--log", "/dev/full", "--segment-min",
                             "0.0167", "--record-max-gb", "0.01"], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 1 and "/dev/full" in summary_of(result)["error"], result.stderr
    kept = segments(str(tmp_path / "rec.avi"))
    assert len(kept) >= 3 and all(len(count_frames(n)) > 0 for n, _ in kept)


def test_killed_run_leaves_only_playable_segments(tiny_bundle, tmp_path):
    """SIGKILL mid-recording (a crash, a pulled plug): every file under a segment name
    plays; only the segment in hand is lost, as ``*.partial.avi``."""
    process = _start([SYNTH % 100000, "rec.avi", "--bundle", tiny_bundle, "--headless",
                      "--segment-min", "0.0167"], str(tmp_path))
    deadline = time.time() + 60
    while time.time() < deadline and len(segments(str(tmp_path / "rec.avi"))) < 3:
        time.sleep(0.2)
    process.kill()
    process.communicate(timeout=10)
    kept = segments(str(tmp_path / "rec.avi"))
    assert len(kept) >= 3 and all(len(count_frames(n)) == 30 for n, _ in kept)
    assert not os.path.exists(str(tmp_path / "rec.avi"))
    assert len([n for n in os.listdir(str(tmp_path)) if n.endswith(".partial.avi")]) <= 1


def test_segments_keep_the_rate_measured_once(tmp_path):
    """A camera's rate is measured once: a burst from a stream's buffer after an
    outage, at the start of a later segment, does not become that file's rate."""
    import cv2
    from edge.recorder import Recorder

    path = str(tmp_path / "rec.avi")
    recorder = Recorder(VideoSink(path, 30.0, segment_s=1.0), drop=False, measure=True)
    frame, now = np.zeros((48, 64, 3), np.uint8), 0.0
    for index in range(60):
        if index == 30:
            now += 30.0                     # an outage, then the buffered frames at once
        recorder.write(frame, index, now)
        now += 1 / 15.0 if index < 30 else 1 / 200.0
    recorder.close()
    rates = []
    for name, _ in segments(path):
        capture = cv2.VideoCapture(name)
        rates.append(capture.get(cv2.CAP_PROP_FPS))
        capture.release()
    assert len(rates) == 4 and all(abs(rate - 15) < 0.5 for rate in rates), rates
