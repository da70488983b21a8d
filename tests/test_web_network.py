"""The web view on the open network: real sockets against the running CLI.

Idle and slow clients, non-reading caption streams, 200 requests at once, the
Host check, the security headers and an empty token (edge.web, edge.web_server).
"""
import json
import os
import resource
import socket
import subprocess
import sys
import time

import pytest

from tests.test_web import ROOT, SOURCE, LiveRun, read_mjpeg_frames, stalled_clients

sys.path.insert(0, os.path.join(ROOT, "scripts"))
from web_load import concurrent_gets  # noqa: E402 (scripts/ is no package)

FD_LIMIT = 256      # the served process's descriptor limit (a Jetson's is 1024)


def _cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def _status_code(port, path):
    """The status code of a GET, read from the first line only (a stream never ends)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode("ascii"))
    line = sock.makefile("rb").readline()
    sock.close()
    return int(line.split()[1])


@pytest.fixture(scope="module")
def run(tiny_bundle, tmp_path_factory):
    """One live run (5 FPS, fd limit FD_LIMIT) shared by the tests below."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))
    try:
        live = LiveRun(tiny_bundle, str(tmp_path_factory.mktemp("web")),
                       ["--web-allow-host", "cam.example"],
                       source="synthetic://?width=160&height=120&fps=5")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    yield live
    live.stop()


def test_host_check_and_security_headers(run):
    for host, code in (("127.0.0.1:%d" % run.port, 200), ("localhost", 200),
                       ("[::1]:80", 200), ("192.168.1.20:8080", 200),
                       ("cam.example", 200), ("CAM.example.:8080", 200),
                       ("evil.example", 403), ("127.0.0.1.evil.example", 403)):
        status, headers, body = run.get("/status.json", headers={"Host": host})
        assert status == code, (host, status, body)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
    status, headers, _ = run.get("/nothing")
    assert status == 404 and headers["X-Frame-Options"] == "DENY"


def test_idle_sockets_past_the_fd_limit_neither_block_nor_spin(run):
    """Twice the server's descriptor limit in idle connections: the view still
    answers, and the process does not spin (its CPU stays well under one core)."""
    idle = []
    try:
        for _ in range(2 * FD_LIMIT):
            sock = socket.socket()
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", run.port))
            except (socket.timeout, OSError):
                sock.close()
                continue
            idle.append(sock)
        started, cpu = time.time(), _cpu_seconds(run.process.pid)
        status, _, body = run.get("/status.json", timeout=10)
        answered = time.time() - started
        time.sleep(3.0)
        share = (_cpu_seconds(run.process.pid) - cpu) / (time.time() - started)
        assert status == 200 and answered < 5, (status, answered)
        assert json.loads(body.decode("utf-8"))["connections"] <= 8 + 16 + 16
        assert share < 0.6, share
    finally:
        for sock in idle:
            sock.close()


def test_request_headers_have_a_deadline(run):
    """A client sending its headers a byte a second is cut off after the header
    deadline (5 s), not kept while it trickles."""
    sock = socket.create_connection(("127.0.0.1", run.port), timeout=20)
    sock.sendall(b"GET /status.json HTTP/1.0\r\n")     # the request line at once...
    request, sent, started = b"X-Slow: " + b"a" * 60, 0, time.time()   # ...headers slowly
    try:
        while sent < len(request):
            sock.sendall(request[sent:sent + 1])
            sent += 1
            time.sleep(1.0)
    except (socket.error, OSError):
        pass
    assert 4 < time.time() - started < 9, time.time() - started
    assert sock.recv(100) == b""
    sock.close()


def test_200_requests_at_once(run):
    """The listen backlog holds 200 connections arriving together: every one is
    answered within 5 s (with a backlog of 5, 16-57% timed out here)."""
    failed = [r for r in concurrent_gets(run.port, 200, 5.0) if r[0] != "ok"]
    assert not failed, (len(failed), failed[:3])


def test_caption_streams_that_never_read_are_dropped_and_hold_no_picture_slot(
        tiny_bundle, tmp_path):
    # no captions after the first: only the keep-alives can show that nobody reads
    live = LiveRun(tiny_bundle, str(tmp_path), ["--web-clients", "2", "--every", "100000",
                                                "--refresh", "0"],
                   source="synthetic://?width=160&height=120&fps=10")
    stalled = []
    try:
        stalled = stalled_clients(live.port, "/events", 16, 2048)   # every caption slot
        time.sleep(1.0)
        assert _status_code(live.port, "/events") == 503
        assert len(read_mjpeg_frames(live.port, 2)) == 2      # pictures still flow
        deadline, clients = time.time() + 60, None
        while time.time() < deadline:
            clients = json.loads(live.get("/status.json")[2].decode("utf-8"))["event_clients"]
            if clients == 0:
                break
            time.sleep(1.0)
        assert clients == 0, "stalled caption streams still held after 60 s"
    finally:
        live.stop()
        for sock in stalled:
            sock.close()


def test_empty_token_is_refused(tiny_bundle, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-m", "edge", SOURCE, "http://127.0.0.1:0",
                             "--bundle", tiny_bundle, "--headless", "--web-token", ""],
                            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "--web-token is empty" in lines[0], \
        result.stderr
