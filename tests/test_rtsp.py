"""A real RTSP camera goes away and comes back: GStreamer's RTSP server
(scripts/rtsp_server.py, run by the system python3 with Debian's python3-gi and
gir1.2-gst-rtsp-server-1.0, installed by .ci/run) serving a test pattern on a
free loopback port; ``python -m edge`` reads it through OpenCV's FFmpeg."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from test_live import _env, read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from field_tools import RtspCamera, http_get  # noqa: E402 (scripts/ is no package)

SYSTEM_PYTHON = "/usr/bin/python3"


def _server_missing():
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer")
    if not os.path.exists(SYSTEM_PYTHON):
        return "no %s" % SYSTEM_PYTHON
    if subprocess.call([SYSTEM_PYTHON, "-c", probe], stderr=subprocess.DEVNULL) != 0:
        return "no GStreamer RTSP server (apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi)"
    return None


MISSING = _server_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def wait_until(predicate, timeout, step=0.25):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def body(port, path):
    return http_get(port, path).split(b"\r\n\r\n", 1)[1]


def source_state(port):
    return json.loads(body(port, "/status.json").decode())["source"]


def captions_after(log, when):
    """Caption lines logged after Unix time ``when`` (the log's ``t`` is run-relative:
    the first source event pins it to the clock)."""
    lines = read_log(log)
    events = [l for l in lines if "event" in l]
    offset = events[0]["time"] - events[0]["t"]
    return [l for l in lines if "caption" in l and l["t"] + offset > when]


@pytest.mark.slow
def test_rtsp_stall_and_30s_outage_then_captions_resume(tiny_bundle, tmp_path):
    """A stream that stays connected but sends nothing (server paused) is lost by
    the read timeout; a 30 s outage (server stopped) is waited for, the web view
    shows the last frame marked as lost meanwhile; after each, captions resume on
    their own; the log and /status.json record when it went and came back."""
    server = RtspCamera()
    log = str(tmp_path / "caps.jsonl")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", server.url, "http://127.0.0.1:0", "--bundle",
         tiny_bundle, "--headless", "--log", log, "--gate", "off", "--read-timeout", "3"],
        cwd=str(tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    try:
        port = None
        while port is None:
            line = process.stderr.readline()
            assert line, "no web view line"
            match = re.search(r"web view on http://127.0.0.1:(\d+)/", line)
            port = int(match.group(1)) if match else None
        assert wait_until(lambda: os.path.exists(log) and os.path.getsize(log), 30)

        server.process.send_signal(signal.SIGSTOP)          # connected, silent
        stalled = wait_until(lambda: source_state(port)["state"] == "lost" and
                             source_state(port), 15)
        assert stalled and "read blocked" in stalled["reason"], stalled
        server.process.send_signal(signal.SIGCONT)
        assert wait_until(lambda: source_state(port)["state"] == "live", 30)

        server.stop()
        went = time.time()
        lost = wait_until(lambda: source_state(port)["state"] == "lost" and
                          source_state(port), 15)
        assert lost and lost["outages"] == 2
        time.sleep(5)
        picture = cv2.imdecode(np.frombuffer(body(port, "/snapshot.jpg"), np.uint8), 1)
        middle = picture[picture.shape[0] // 2 - 4, :, :].astype(int)
        assert (middle[:, 2] - middle[:, 1]).mean() > 60      # the red "lost" band
        assert source_state(port)["lost_s"] >= 5
        time.sleep(max(0.0, 30 - (time.time() - went)))
        server.start()
        back_at = time.time()
        back = wait_until(lambda: source_state(port)["state"] == "live" and
                          source_state(port), 30)
        assert back and back["last_outage"]["outage_s"] >= 30
        assert wait_until(lambda: len(captions_after(log, back_at)) >= 3, 20)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        server.stop()
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["outages"] == 2 and summary["error"] is None
    events = [l["event"] for l in read_log(log) if "event" in l]
    assert events == ["source_lost", "source_back"] * 2
    assert "lost (no frame for" in err and "back after" in err
