"""Field-check helpers shared by scripts/check_live.py, scripts/check_outputs.py
and the tests: a real RTSP camera (scripts/rtsp_server.py under the system
python3) that can be stopped, paused and restarted on its port; a real MQTT
broker (Debian's mosquitto) likewise; HTTP clients of the web view; RSS, disk
use and playability of what was written."""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def http_get(port, path, timeout=10):
    """The whole HTTP/1.0 reply (head and body) to ``GET path`` on loopback ``port``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
    reply = b""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        reply += data
    sock.close()
    return reply


def rss_kb(pid):
    """Resident set size of process ``pid`` in KiB (Linux /proc)."""
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def du(paths):
    """Total bytes of the files in ``paths`` that exist."""
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def plays(path):
    """Frames OpenCV reads back from ``path`` (0: unplayable)."""
    capture, count = cv2.VideoCapture(path), 0
    while capture.isOpened():
        ok, _ = capture.read()
        if not ok:
            break
        count += 1
    capture.release()
    return count


class RtspCamera(object):
    """scripts/rtsp_server.py under the system python3, restartable on its port."""

    def __init__(self, port=0):
        self.port, self.process = port, None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(ROOT, "scripts", "rtsp_server.py"),
             "--port", str(self.port)], stdout=subprocess.PIPE, universal_newlines=True)
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            raise SystemExit("the RTSP server did not start")
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)    # a paused server cannot quit
            self.process.terminate()
            self.process.wait(10)

    def pause(self, paused):
        """SIGSTOP/SIGCONT: still connected, sending nothing (a hung camera)."""
        self.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)


def web_visitor(port, stop, seen):
    """Clients coming and going: a stream read for 1-4 s, a status poll, an event stream."""
    rng = np.random.RandomState(1)
    while not stop.is_set():
        path = ["/stream.mjpg", "/status.json", "/events"][rng.randint(3)]
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
            head, end = sock.recv(65536), time.time() + rng.uniform(1, 4)
            try:
                while time.time() < end and sock.recv(65536):
                    pass
            except socket.timeout:      # an event stream with nothing to say: fine
                pass
            sock.close()
            seen["visits" if head.split(b" ")[1:2] == [b"200"] else "errors"] += 1
        except (socket.error, socket.timeout):
            seen["errors"] += 1
        stop.wait(rng.uniform(0.2, 2.0))


def status(port):
    """``/status.json`` of the web view on loopback ``port``, as a dict."""
    return json.loads(http_get(port, "/status.json").split(b"\r\n\r\n", 1)[1].decode())


MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if os.path.exists("/usr/sbin/mosquitto") else None)


def free_port():
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MqttBroker(object):
    """A real mosquitto on a loopback port (its config written in ``folder``), which
    can be stopped and started again on the same port."""

    def __init__(self, folder):
        self.port = free_port()
        self.config = os.path.join(folder, "mosquitto.conf")
        with open(self.config, "w") as handle:
            handle.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                         % self.port)
        self.process = None

    def start(self, timeout=10.0):
        """Start it and wait until it accepts connections."""
        self.process = subprocess.Popen([MOSQUITTO, "-c", self.config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.time() + timeout
        while not self._listening():
            if time.time() > end:
                raise RuntimeError("mosquitto did not start on port %d" % self.port)
            time.sleep(0.05)

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
