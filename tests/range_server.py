"""A real HTTP file server for the download tests: serves the files of one folder
on 127.0.0.1 (port 0), answers ``Range: bytes=N-`` with 206 Partial Content (416
past the end), logs every request, and can cut a file's first response short
(``cut[name] = bytes``: the headers promise the whole file, the connection closes
after that many bytes), as a flaky network does."""
import http.server
import os
import threading


class RangeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        name = os.path.basename(self.path.split("?")[0])
        path = os.path.join(server.folder, name)
        server.requests.append((name, self.headers.get("Range")))
        if not name or not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and wanted.endswith("-"):
            start = int(wanted[len("bytes="):-1])
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with open(path, "rb") as handle:
            handle.seek(start)
            body = handle.read()
        cut = server.cut.pop(name, None)
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class RangeServer(object):
    """``with RangeServer(folder) as server:`` -> ``server.url``, ``.requests``, ``.cut``."""

    def __init__(self, folder):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
        self.httpd.daemon_threads = True
        self.httpd.folder, self.httpd.requests, self.httpd.cut = folder, [], {}
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.requests, self.cut = self.httpd.requests, self.httpd.cut
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
