"""``http://HOST:PORT`` as an output: a web view of the live loop, stdlib only.

Routes (nothing else exists: 404; no file on disk is ever served)::

    /              the page (edge.web_page): live picture, captions newest first
    /stream.mjpg   annotated frames, multipart/x-mixed-replace JPEGs
    /events        captions as server-sent events, one ``caption_record`` JSON each
    /snapshot.jpg  the newest annotated frame
    /status.json   fps, caption fps, latency percentiles, backend, providers,
                   uptime, clients, the shown caption and the recent ones
                   (with several inputs, ``inputs``: the figures of each)
    /stream/<i>.mjpg, /snapshot/<i>.jpg   input ``i``'s (``/stream.mjpg``
                   and ``/snapshot.jpg`` are input 0's); the page tiles them

Several inputs (``edge.lane``): the loop writes input ``i``'s frames through
``for_input(i, n)``; each caption record then names its ``input``.

``@`` binds every interface, a host binds that one, no host means loopback.
With a token every route needs ``?token=T`` or ``Authorization: Bearer T`` (401).

The loop never waits for a client: ``write(frame)`` only keeps a reference to
the newest frame; one encoder thread JPEG-encodes it at most ``fps`` times a
second and only while someone watches, once whatever the number of clients;
each client thread sends the newest JPEG when it is free (a slow client skips
frames) through a socket with a send timeout (a stalled client is dropped).
At most ``clients`` picture streams (``/stream.mjpg``) and, counted apart,
``events`` caption streams (``/events``) at once; then 503. A caption stream
sends a padded keep-alive every ``KEEPALIVE_S`` through a small send buffer,
so a client that stops reading fills its TCP window and is dropped by the send
timeout (about two minutes with default buffers) instead of holding its slot.

On the open network (``edge.web_server``): at most ``clients + events +
SHORT_SLOTS`` connections and threads, a deadline for request headers, a
listen backlog of 256, and a Host check against DNS rebinding (403 for a Host
that is not a loopback name, an IP address, the bound host, this machine's
name or a ``--web-allow-host``). Every answer carries ``X-Content-Type-Options:
nosniff`` and ``X-Frame-Options: DENY``. An empty token is refused.
"""
import collections
import hmac
import json
import re
import socket
import threading
import time

import cv2

from edge.errors import NanocapError
from edge.web_page import page_html
from edge.web_server import HEADER_TIMEOUT_S, BoundedServer, host_allowed, host_name

from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

ROUTES = ("/", "/stream.mjpg", "/events", "/snapshot.jpg", "/status.json")
INPUT_ROUTE = re.compile(r"^/(stream|snapshot)/(\d{1,3})\.(mjpg|jpg)$")
BOUNDARY = "nanocapframe"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SEND_BUFFER = 256 * 1024    # bytes a stalled client can hold up before the send timeout runs
EVENT_SEND_BUFFER = 4096    # a caption stream's send buffer: small, so a stall shows soon
KEEPALIVE_S = 2.0           # a caption stream writes at least this often...
KEEPALIVE_PAD = 1024        # ...this many bytes (fills a non-reader's window in ~2 min)
SHORT_SLOTS = 16            # connections beyond the streams: requests being read or answered
EVENTS = 16                 # caption streams at once


def parse_web_uri(uri):
    """``http://@:8080`` -> ``("0.0.0.0", 8080)``; ``http://127.0.0.1:9000`` -> that;
    ``http://:8080`` -> loopback. Pure."""
    match = re.match(r"^http://(\[[0-9a-fA-F:]*\]|[A-Za-z0-9.@-]*)(?::(\d+))?/?$", uri)
    if not match:
        raise NanocapError("web output must look like http://@:8080 or http://127.0.0.1:8080 "
                           "(got %r)" % uri)
    host = match.group(1).strip("[]")
    host = "0.0.0.0" if host == "@" else (host or "127.0.0.1")
    port = int(match.group(2) or 8080)
    if not 0 <= port <= 65535:
        raise NanocapError("web port out of range: %d" % port)
    return host, port


class WebView(object):
    """The web output (see the module text); a sink: ``write(frame)``, ``close()``,
    plus ``add_caption(record)`` and ``status_source`` (a callable -> dict)."""

    def __init__(self, uri, token=None, fps=15.0, clients=8, send_timeout_s=3.0, message=None,
                 allow_hosts=(), events=EVENTS, header_timeout_s=HEADER_TIMEOUT_S):
        self.host, self.port = parse_web_uri(uri)
        if fps <= 0 or clients < 1:
            raise NanocapError("--web-fps must be > 0 and --web-clients >= 1")
        if token is not None and not token.strip():
            raise NanocapError("--web-token is empty (an unset variable?): give a token, or "
                               "leave the flag out for a view without one")
        self.token, self.fps, self.max_clients = token, float(fps), int(clients)
        self.max_events, self.events, self.allow_hosts = int(events), 0, list(allow_hosts)
        self.send_timeout_s = float(send_timeout_s)
        self.cond = threading.Condition()
        self.feeds = [_Feed()]  # one per input
        self.encoded, self.clients, self.closing = 0, 0, False
        self.captions, self.caption_count, self.shown = collections.deque(maxlen=50), 0, None
        self.status_source, self.started = None, time.time()
        try:
            self.server = BoundedServer((self.host, self.port), _Handler,
                                        self.max_clients + self.max_events + SHORT_SLOTS,
                                        header_timeout_s)
        except (socket.error, OverflowError) as exc:
            raise NanocapError("cannot serve %s on port %d: %s"
                               % (self.host, self.port, getattr(exc, "strerror", None) or exc))
        self.server.view = self
        self.port = self.server.server_address[1]
        self.url = "http://%s:%d/" % ("127.0.0.1" if self.host == "0.0.0.0" else self.host,
                                      self.port)
        if message and self.host in LOOPBACK:
            message("web view on http://%s:%d/ (this machine only)" % (self.host, self.port))
        elif message:
            message("web view on http://%s:%d/ (%s): the camera is now visible on the network%s"
                    % (self.host, self.port, "every interface" if self.host == "0.0.0.0"
                       else "this interface", "" if self.token else
                       "; anyone who can reach this port sees it (--web-token T protects it)"))
        self.threads = [threading.Thread(target=self.server.serve_forever, args=(0.1,),
                                         name="web"),
                        threading.Thread(target=self._encode_loop, name="web-encoder")]
        for thread in self.threads:
            thread.daemon = True
            thread.start()

    # -- the loop's side: never waits ------------------------------------------
    def write(self, frame, index=0):
        """Keep ``frame`` (not copied: the caller must not change it later) as input
        ``index``'s newest."""
        with self.cond:
            feed = self.feeds[index]
            feed.frame, feed.frame_seq = frame, feed.frame_seq + 1
            if feed.watchers:
                self.cond.notify_all()
        return -1

    def for_input(self, index, count):
        """The sink input ``index`` of ``count`` writes its frames to."""
        with self.cond:
            while len(self.feeds) < count:
                self.feeds.append(_Feed())
        return _InputView(self, index)

    def add_caption(self, record):
        """A caption was computed (a ``caption_record`` dict): to ``/events`` and the page."""
        with self.cond:
            self.captions.append(record)
            self.caption_count += 1
            if record.get("shown"):
                self.shown = record
            self.cond.notify_all()

    # -- encoder thread ---------------------------------------------------------
    def _encode_loop(self):
        """At most ``fps`` rounds a second; each encodes every watched input's new frame."""
        last = 0.0
        while True:
            with self.cond:
                while not self.closing and not any(f.due() for f in self.feeds):
                    self.cond.wait(0.5)
                if self.closing:
                    return
            wait = last + 1.0 / self.fps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            last = time.perf_counter()
            with self.cond:
                due = [(f, f.frame, f.frame_seq) for f in self.feeds if f.due()]
            for feed, frame, seq in due:
                ok, buf = cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), 80])
                with self.cond:
                    if ok:
                        feed.jpeg, feed.jpeg_seq, feed.jpeg_from = (buf.tobytes(),
                                                                    feed.jpeg_seq + 1, seq)
                        self.encoded += 1
                    self.cond.notify_all()

    # -- client threads ---------------------------------------------------------
    def watch(self, stream, frames, index=0):
        """Count a client in: ``stream`` ("mjpeg" or "events": long-lived, limited to
        ``max_clients`` and ``max_events``) and/or ``frames`` (it wants input
        ``index``'s JPEGs: the encoder runs for it); False when full."""
        with self.cond:
            if stream == "mjpeg" and self.clients >= self.max_clients:
                return False
            if stream == "events" and self.events >= self.max_events:
                return False
            self.clients += int(stream == "mjpeg")
            self.events += int(stream == "events")
            self.feeds[index].watchers += int(frames)
            self.cond.notify_all()
            return True

    def unwatch(self, stream, frames, index=0):
        with self.cond:
            self.clients -= int(stream == "mjpeg")
            self.events -= int(stream == "events")
            self.feeds[index].watchers -= int(frames)

    def next_jpeg(self, after, timeout=1.0, index=0):
        """Input ``index``'s ``(jpeg, seq)`` newer than ``after``, or ``(None, after)``
        on timeout/closing."""
        feed = self.feeds[index]
        with self.cond:
            fresh = self.cond.wait_for(lambda: feed.jpeg_seq > after or self.closing, timeout)
            if not fresh or self.closing:
                return None, after
            return feed.jpeg, feed.jpeg_seq

    def next_captions(self, after, timeout=1.0):
        """``(records, count)``: captions added after the first ``after``, or [] on timeout."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.caption_count > after or self.closing, timeout):
                return [], after
            new = min(self.caption_count - after, len(self.captions))
            return list(self.captions)[len(self.captions) - new:], self.caption_count

    def authorized(self, query, header):
        if not self.token:
            return True
        given = (parse_qs(query).get("token") or [""])[0]
        if header and header.startswith("Bearer "):
            given = header[len("Bearer "):].strip()
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def status(self):
        """The ``/status.json`` dict."""
        data = dict(self.status_source() if self.status_source else {"state": "starting"})
        with self.cond:
            data.update({"uptime_s": round(time.time() - self.started, 1),
                         "clients": self.clients + self.events, "stream_clients": self.clients,
                         "event_clients": self.events,
                         "connections": self.server.connections(),
                         "connections_evicted": self.server.evicted,
                         "jpeg_encoded": self.encoded,
                         "shown": self.shown, "captions_recent": list(self.captions)[::-1][:20]})
        return data

    def close(self):
        """Stop serving and free the port at once; open client sockets are shut."""
        with self.cond:
            if self.closing:
                return
            self.closing = True
            self.cond.notify_all()
        self.server.shut_all()
        self.server.shutdown()
        self.server.server_close()


class _Feed(object):
    """One input's newest frame and JPEG (guarded by the view's lock)."""

    def __init__(self):
        self.frame, self.frame_seq, self.jpeg, self.jpeg_seq = None, 0, None, 0
        self.jpeg_from = 0      # frame_seq of the frame behind the newest JPEG
        self.watchers = 0

    def due(self):
        """True when someone watches and the newest frame has no JPEG yet."""
        return bool(self.watchers) and self.frame is not None and \
            self.frame_seq != self.jpeg_from


class _InputView(object):
    """Input ``index``'s side of a ``WebView``: a sink with ``write(frame)``."""

    def __init__(self, view, index):
        self.view, self.index = view, index

    def write(self, frame):
        return self.view.write(frame, self.index)

    def close(self):
        pass


def route(view, path):
    """``(kind, input)`` for a request path: kind is the path of ``ROUTES``
    (``/stream.mjpg``, ``/snapshot.jpg`` for ``/stream/<i>.mjpg``, ``/snapshot/<i>.jpg``
    of an input that exists), or None (404)."""
    if path in ROUTES:
        return path, 0
    match = INPUT_ROUTE.match(path)
    if not match or (match.group(1) == "stream") != (match.group(3) == "mjpg"):
        return None, 0
    index = int(match.group(2))
    if index >= len(view.feeds):
        return None, 0
    return ("/stream.mjpg" if match.group(1) == "stream" else "/snapshot.jpg"), index


class _Handler(BaseHTTPRequestHandler):
    """One request; long-lived ones (stream, events) loop until the client or server goes."""

    protocol_version = "HTTP/1.0"
    server_version = "nanocap"
    timeout = HEADER_TIMEOUT_S      # each read while the request comes in

    def log_message(self, *args):
        pass

    def parse_request(self):
        parsed = BaseHTTPRequestHandler.parse_request(self)    # reads the headers too
        self.server.headers_read(self.connection)
        return parsed

    def end_headers(self):
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        BaseHTTPRequestHandler.end_headers(self)

    def _plain(self, code, text, ctype="text/plain; charset=utf-8"):
        body = text if isinstance(text, bytes) else text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        view = self.server.view
        url = urlparse(self.path)
        if not host_allowed(self.headers.get("Host"), view.host, view.allow_hosts):
            return self._plain(403, "host %s is not this view's name (--web-allow-host %s "
                               "allows it)\n" % (host_name(self.headers.get("Host")),
                                                  host_name(self.headers.get("Host"))))
        path, index = route(view, url.path)
        if path is None:
            return self._plain(404, "not found\n")
        if not view.authorized(url.query, self.headers.get("Authorization")):
            return self._plain(401, "a token is needed: ?token=T or Authorization: Bearer T\n")
        self.connection.settimeout(view.send_timeout_s)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENT_SEND_BUFFER
                                   if path == "/events" else SEND_BUFFER)
        try:
            if path == "/":
                self._plain(200, page_html(), "text/html; charset=utf-8")
            elif path == "/status.json":
                self._plain(200, json.dumps(view.status()), "application/json")
            elif path == "/snapshot.jpg":
                self._snapshot(view, index)
            else:
                self._stream(view, path == "/events", index)
        except (socket.error, socket.timeout, OSError, ValueError):
            pass    # the client went away or stalled: only its own thread ends

    def _snapshot(self, view, index):
        view.watch(None, True, index)
        try:
            jpeg, _ = view.next_jpeg(view.feeds[index].jpeg_seq, timeout=2.0, index=index)
        finally:
            view.unwatch(None, True, index)
        if jpeg is None:
            return self._plain(503, "no frame\n")
        self._plain(200, jpeg, "image/jpeg")

    def _stream(self, view, events, index):
        if not view.watch("events" if events else "mjpeg", not events, index):
            return self._plain(503, "too many caption streams (%d)\n" % view.max_events if events
                               else "too many clients (--web-clients %d)\n" % view.max_clients)
        try:
            self.send_response(200)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Type", "text/event-stream" if events else
                             "multipart/x-mixed-replace; boundary=%s" % BOUNDARY)
            self.end_headers()
            seq = view.caption_count if events else 0
            while not view.closing:
                if events:
                    records, seq = view.next_captions(seq, timeout=KEEPALIVE_S)
                    data = "".join("data: %s\n\n" % json.dumps(r) for r in records)
                    self.wfile.write((data or ": keep-alive %s\n\n" % ("." * KEEPALIVE_PAD))
                                     .encode("utf-8"))
                else:
                    jpeg, seq = view.next_jpeg(seq, index=index)
                    if jpeg is not None:
                        self.wfile.write(b"--" + BOUNDARY.encode("ascii") + b"\r\nContent-Type: "
                                         b"image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode("ascii") + b"\r\n\r\n"
                                         + jpeg + b"\r\n")
                self.wfile.flush()
        finally:
            view.unwatch("events" if events else "mjpeg", not events, index)
