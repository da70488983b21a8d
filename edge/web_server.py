"""The web view's HTTP server: bounded whatever its clients do (stdlib only).

- At most ``limit`` connections, each served by its own thread: threads and
  descriptors stay bounded. A connection past the limit evicts the oldest one
  still sending its request headers (an idle or slow socket); when every slot
  is answering a request (each answer is bounded in time), the accept loop
  waits for one to end and new connections wait in the listen backlog.
- A client has ``header_timeout_s`` in all to send its request line and headers
  (a deadline, not a per-read timeout: a byte every few seconds does not keep
  a slot), then it is disconnected.
- The listen backlog holds ``BACKLOG`` connections (the kernel caps it at
  ``net.core.somaxconn``); out of descriptors, the accept loop waits instead of
  spinning on a listening socket that stays readable.
- ``host_allowed`` answers the Host check that defeats DNS rebinding.
"""
import collections
import errno
import ipaddress
import socket
import threading
import time

from http.server import HTTPServer

BACKLOG = 256
HEADER_TIMEOUT_S = 5.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "ip6-localhost", "ip6-loopback")
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def host_name(header):
    """``"Example.com:8080"`` -> ``"example.com"``; ``"[::1]:80"`` -> ``"::1"``."""
    text = (header or "").strip().lower()
    if text.startswith("["):
        return text[1:text.find("]")] if "]" in text else text[1:]
    if text.count(":") == 1:
        text = text.split(":")[0]
    return text.rstrip(".")


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def host_allowed(header, bound_host, allow_hosts=()):
    """True for a request whose Host header names this server rather than some
    other site's domain resolved to it (DNS rebinding): no header (HTTP/1.0),
    a loopback name, an IP address (a browser on ``http://192.168.1.20:8080``),
    the bound host, this machine's name (and ``.local``), or an allowed name
    (``*`` allows any)."""
    name = host_name(header)
    if not name or name in LOOPBACK_NAMES or _is_ip(name):
        return True
    allowed = set(h.strip().lower().rstrip(".") for h in allow_hosts)
    if "*" in allowed:
        return True
    machine = socket.gethostname().lower()
    return name in allowed | {bound_host.lower(), machine, machine.split(".")[0] + ".local"}


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (socket.error, OSError):
        pass


class BoundedServer(HTTPServer):
    """``HTTPServer`` with a thread per connection, at most ``limit`` of them, and a
    deadline for request headers (see the module text). The handler calls
    ``headers_read(connection)`` once it has parsed the request."""

    allow_reuse_address = True
    request_queue_size = BACKLOG

    def __init__(self, address, handler, limit, header_timeout_s=HEADER_TIMEOUT_S):
        self.limit, self.header_timeout_s = int(limit), float(header_timeout_s)
        self.lock = threading.Condition()
        self.closing = False
        self.active = set()
        self.pending = collections.OrderedDict()     # socket -> accept time, oldest first
        self.evicted = 0
        HTTPServer.__init__(self, address, handler)

    def get_request(self):
        try:
            return HTTPServer.get_request(self)
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                time.sleep(0.1)     # the listener stays readable: do not spin on it
            raise

    def process_request(self, request, client_address):
        with self.lock:
            while len(self.active) >= self.limit and not self.pending and not self.closing:
                self.lock.wait(0.1)
            if len(self.active) >= self.limit and self.pending:
                oldest, _ = self.pending.popitem(last=False)
                self.active.discard(oldest)
                self.evicted += 1
                _shut(oldest)       # its thread sees the end of its input and ends
            self.active.add(request)
            self.pending[request] = time.time()
        thread = threading.Thread(target=self._serve, args=(request, client_address),
                                  name="web-client")
        thread.daemon = True
        thread.start()

    def _serve(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:   # noqa: BLE001 - a client's failure ends only its own thread
            pass
        finally:
            with self.lock:
                self.active.discard(request)
                self.pending.pop(request, None)
                self.lock.notify_all()
            self.shutdown_request(request)

    def headers_read(self, request):
        with self.lock:
            self.pending.pop(request, None)

    def service_actions(self):
        """Called by ``serve_forever`` every poll: disconnect clients past the
        header deadline."""
        late = time.time() - self.header_timeout_s
        with self.lock:
            expired = [s for s, at in self.pending.items() if at < late]
            for sock in expired:
                del self.pending[sock]
        for sock in expired:
            _shut(sock)

    def connections(self):
        with self.lock:
            return len(self.active)

    def shut_all(self):
        """Shut every open connection (at close)."""
        with self.lock:
            self.closing = True
            sockets = list(self.active)
        for sock in sockets:
            _shut(sock)
