"""A headless Chromium driven over the DevTools protocol, stdlib only (for tests).

``Browser(url)`` starts ``chromium --headless`` on ``url`` with a throw-away
profile; ``evaluate(js)`` returns a JavaScript value, ``screenshot(path)``
writes a PNG. The websocket is the minimum RFC 6455 client: masked text frames
out, unfragmented frames in.
"""
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time

CHROMIUM = os.environ.get("NANOCAP_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-allow-origins=*"]


class WebSocket(object):
    def __init__(self, url, timeout=30):
        match = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
        self.sock = socket.create_connection((match.group(1), int(match.group(2))), timeout)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n"
                           % (match.group(3), match.group(1), match.group(2), key)).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("websocket refused: %r" % head)

    def _exact(self, count):
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise RuntimeError("websocket closed")
            data += chunk
        return data

    def send(self, text):
        payload, mask = text.encode("utf-8"), os.urandom(4)
        size = len(payload)
        head = struct.pack("!B", 0x81)
        if size < 126:
            head += struct.pack("!B", 0x80 | size)
        elif size < 65536:
            head += struct.pack("!BH", 0x80 | 126, size)
        else:
            head += struct.pack("!BQ", 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self):
        first, second = struct.unpack("!BB", self._exact(2))
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._exact(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._exact(8))[0]
        return self._exact(size).decode("utf-8")

    def close(self):
        self.sock.close()


class Browser(object):
    """Headless Chromium showing ``url`` (window ``width`` x ``height``)."""

    def __init__(self, url, width=1280, height=800, timeout=60):
        self.profile = tempfile.mkdtemp(prefix="nanocap-chromium-")
        self.process = subprocess.Popen(
            [CHROMIUM] + FLAGS + ["--user-data-dir=%s" % self.profile,
                                  "--window-size=%d,%d" % (width, height), url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
        endpoint, deadline = None, time.time() + timeout
        while endpoint is None and time.time() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            endpoint = match.group(1) if match else None
        if endpoint is None:
            self.close()
            raise RuntimeError("chromium gave no DevTools endpoint")
        port = re.match(r"ws://[^:]+:(\d+)/", endpoint).group(1)
        import urllib.request
        pages = []
        while not pages and time.time() < deadline:
            with urllib.request.urlopen("http://127.0.0.1:%s/json/list" % port) as response:
                pages = [p for p in json.loads(response.read().decode("utf-8"))
                         if p.get("type") == "page"]
            time.sleep(0.2)
        self.ws, self.next_id = WebSocket(pages[0]["webSocketDebuggerUrl"]), 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError("%s: %s" % (method, message["error"]))
                return message["result"]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))
        return path

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
