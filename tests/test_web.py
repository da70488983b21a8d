"""The web view against the running CLI, through real sockets and HTTP."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from edge.errors import NanocapError
from edge.web import parse_web_uri

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = "synthetic://?width=320&height=240"


class LiveRun(object):
    """``python -m edge SOURCE http://HOST:0 ...`` in a subprocess; ``port`` read
    from its ``web view on http://HOST:PORT/`` line."""

    def __init__(self, bundle, cwd, args, host="127.0.0.1", source=SOURCE,
                 python=sys.executable, path=ROOT, outputs=()):
        env = dict(os.environ, PYTHONPATH=path)
        env.pop("PYTHONHOME", None)
        self.process = subprocess.Popen(
            [python, "-m", "edge", source, "http://%s:0" % host] + list(outputs)
            + ["--bundle", bundle, "--headless"] + list(args), cwd=cwd, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True)
        self.lines = []
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(r"web view on http://[^:]+:(\d+)/", line)
            if match:
                self.port = int(match.group(1))
                return
        self.stop()
        raise AssertionError("no web view line: %s" % "".join(self.lines))

    def get(self, path, headers=None, timeout=10):
        """``(status, headers, body)`` of a GET on loopback (http.client)."""
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), body

    def stop(self, signum=signal.SIGINT, timeout=15):
        """Signal the run; ``(seconds to exit, summary dict or None, stderr)``."""
        sent = time.time()
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=timeout)
        lines = out.strip().splitlines()
        return time.time() - sent, (json.loads(lines[-1]) if lines else None), err


def read_mjpeg_frames(port, count, path="/stream.mjpg", timeout=10):
    """Read ``count`` JPEG parts from a raw socket; returns the decoded frames."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode("ascii"))
    data, frames = b"", []
    while len(frames) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while True:
            start, end = data.find(b"\xff\xd8"), data.find(b"\xff\xd9")
            if start < 0 or end < start:
                break
            frames.append(cv2.imdecode(np.frombuffer(data[start:end + 2], np.uint8), 1))
            data = data[end + 2:]
    sock.close()
    return frames


def stalled_clients(port, path, count, rcvbuf=4096):
    """``count`` sockets that ask for ``path`` and never read a byte."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        sock.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode("ascii"))
        sockets.append(sock)
    return sockets


def test_parse_web_uri():
    assert parse_web_uri("http://@:8080") == ("0.0.0.0", 8080)
    assert parse_web_uri("http://127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert parse_web_uri("http://:8081/") == ("127.0.0.1", 8081)
    assert parse_web_uri("http://@") == ("0.0.0.0", 8080)
    for bad in ("http://@:99999", "http://@:80/x", "http://a b:80"):
        with pytest.raises(NanocapError):
            parse_web_uri(bad)


def test_routes_stream_events_status(tiny_bundle, tmp_path):
    run = LiveRun(tiny_bundle, str(tmp_path), ["--log", "caps.jsonl", "--refresh", "0.3",
                                               "--web-fps", "10"])
    try:
        assert not any("visible on the network" in l for l in run.lines)   # loopback
        time.sleep(1.0)
        status, _, body = run.get("/status.json")
        first = json.loads(body.decode("utf-8"))
        assert status == 200 and first["frames"] > 10
        assert first["jpeg_encoded"] == 0          # nobody watched: nothing was encoded
        status, headers, body = run.get("/")
        assert status == 200 and b"/stream.mjpg" in body and "text/html" in headers["Content-Type"]
        for path in ("/nope", "/../edge/web.py", "/edge/web.py", "/stream.mjpg/x", "//etc/passwd"):
            assert run.get(path)[0] == 404, path
        frames = read_mjpeg_frames(run.port, 3)
        assert len(frames) == 3 and frames[0].shape == (240, 320, 3)
        status, headers, body = run.get("/snapshot.jpg")
        assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), 1).shape == (240, 320, 3)
        sock = socket.create_connection(("127.0.0.1", run.port), timeout=10)
        sock.sendall(b"GET /events HTTP/1.0\r\n\r\n")
        text = b""
        while b"\ndata: " not in text:
            text += sock.recv(4096)
        while not text.endswith(b"\n\n"):
            text += sock.recv(4096)
        sock.close()
        event = json.loads(text.split(b"\ndata: ")[1].split(b"\n")[0].decode("utf-8"))
        assert sorted(event) == ["backend", "caption", "frame", "latency_ms", "shown", "t",
                                 "tokens"]
        time.sleep(1.0)
        status = json.loads(run.get("/status.json")[2].decode("utf-8"))
        for key in ("display_fps", "caption_fps", "caption_latency_ms", "backend", "providers",
                    "uptime_s", "clients", "captions_computed"):
            assert key in status, key
        # encoded once per frame at most, at most --web-fps a second, whoever watches
        assert status["jpeg_encoded"] <= 10 * status["uptime_s"] + 2
    finally:
        seconds, summary, err = run.stop()
    assert summary["frames"] > 0 and seconds < 5, err
    with open(str(tmp_path / "caps.jsonl")) as handle:
        assert event in [json.loads(line) for line in handle]


def test_token_exposure_and_401(tiny_bundle, tmp_path):
    run = LiveRun(tiny_bundle, str(tmp_path), [], host="@")
    run.stop()
    assert any("camera is now visible on the network" in l and "--web-token" in l
               for l in run.lines)
    run = LiveRun(tiny_bundle, str(tmp_path), ["--web-token", "s3cret"], host="@")
    try:
        for path in ("/", "/stream.mjpg", "/snapshot.jpg", "/events", "/status.json",
                     "/stream.mjpg?token=wrong"):
            status, _, body = run.get(path)
            assert status == 401 and b"\xff\xd8" not in body, path
        assert run.get("/status.json?token=s3cret")[0] == 200
        assert run.get("/status.json", {"Authorization": "Bearer s3cret"})[0] == 200
        assert len(read_mjpeg_frames(run.port, 1, "/stream.mjpg?token=s3cret")) == 1
        assert run.get("/nothing?token=s3cret")[0] == 404
    finally:
        run.stop()


def test_client_limit_stalled_client_and_sigint_frees_port(tiny_bundle, tmp_path):
    run = LiveRun(tiny_bundle, str(tmp_path), ["--web-clients", "3", "--web-fps", "30"],
                  source="synthetic://?width=640&height=480")
    stalled = []
    try:
        stalled = stalled_clients(run.port, "/stream.mjpg", 3)
        time.sleep(0.5)
        assert run.get("/stream.mjpg", timeout=5)[0] == 503
        time.sleep(7.0)             # past the send timeout: the stalled ones are dropped
        assert len(read_mjpeg_frames(run.port, 2)) == 2
        status = json.loads(run.get("/status.json")[2].decode("utf-8"))
        assert status["display_fps"] > 20, status
    finally:
        seconds, summary, err = run.stop()
        for sock in stalled:
            sock.close()
    assert seconds < 3 and summary["display_fps"] > 20, (seconds, summary, err)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", run.port))      # the port is free at once
    server.close()
