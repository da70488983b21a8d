"""Disk that never fills: a rotating JSON-lines file, recording segments, a total cap.

- ``RotatingLines``: whole lines appended to ``path``; past ``max_bytes`` the
  file is renamed ``path.1`` (``path.1`` -> ``path.2`` ... up to ``keep``) and a
  new one started, so the log never takes more than ``(keep + 1) * max_bytes``.
  A line is one ``os.write``; one cut short by a write error (a full disk) is
  cut off again, so the file only ever holds complete lines.
- ``segment_name``/``prune``: recordings cut into ``stem-YYYYmmdd-HHMMSS.ext``
  files, the oldest deleted while they hold more than the cap (a dashcam).
- ``free_bytes``: what a folder's filesystem still has for this user.
"""
import errno
import glob
import os
import time


def free_bytes(folder):
    """Bytes still available to this user on ``folder``'s filesystem."""
    info = os.statvfs(folder)
    return info.f_bavail * info.f_frsize


class RotatingLines(object):
    """Append-only lines with size rotation (see the module text); not thread-safe.

    ``max_bytes`` None: one file that grows. ``write(text)`` raises ``OSError``
    (``IOError``) on a write error, with the file left at its last whole line.
    """

    def __init__(self, path, max_bytes=None, keep=3):
        self.path, self.max_bytes, self.keep = path, max_bytes, max(0, int(keep))
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0

    def write(self, text):
        data = text.encode("utf-8")
        if self.max_bytes and self.size and self.size + len(data) > self.max_bytes:
            self.rotate()
        try:
            done = os.write(self.fd, data)
            if done != len(data):
                raise OSError(errno.ENOSPC, "%s (wrote %d of %d bytes)"
                              % (os.strerror(errno.ENOSPC), done, len(data)))
        except OSError:
            self._cut()
            raise
        self.size += len(data)

    def _cut(self):
        """Drop a line cut short, so the file ends on a whole line."""
        try:
            os.ftruncate(self.fd, self.size)
            os.lseek(self.fd, self.size, os.SEEK_SET)
        except OSError:
            pass

    def rotate(self):
        """``path`` -> ``path.1`` -> ... -> ``path.keep`` (the oldest dropped); a new ``path``."""
        os.close(self.fd)
        self.fd = None
        if self.keep == 0:
            os.remove(self.path)
        for n in range(self.keep, 0, -1):
            older = self.path if n == 1 else "%s.%d" % (self.path, n - 1)
            if os.path.exists(older):
                os.rename(older, "%s.%d" % (self.path, n))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size = 0

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def segment_name(path, when=None):
    """``out.mp4`` -> ``out-20261130-041500.mp4`` (local time ``when``), made unique."""
    stem, ext = os.path.splitext(path)
    base = "%s-%s" % (stem, time.strftime("%Y%m%d-%H%M%S", time.localtime(when)))
    name, n = base + ext, 1
    while os.path.exists(name) or os.path.exists(partial_name(name)):
        n += 1
        name = "%s-%d%s" % (base, n, ext)
    return name


def partial_name(path):
    """Where a file is written until it is complete: ``out.mp4`` -> ``out.partial.mp4``
    (same folder and extension, so the muxer is chosen alike and the rename is atomic)."""
    stem, ext = os.path.splitext(path)
    return stem + ".partial" + ext


def segments(path):
    """The finished segments of recording ``path``, oldest first: ``[(name, bytes)]``."""
    stem, ext = os.path.splitext(path)
    found = []
    for name in glob.glob(glob.escape(stem) + "-[0-9]*" + ext):
        if name.endswith(".partial" + ext):
            continue
        try:
            found.append((os.path.getmtime(name), name, os.path.getsize(name)))
        except OSError:
            pass
    return [(name, size) for _, name, size in sorted(found)]


def prune(path, cap_bytes, current_bytes=0):
    """Delete the oldest segments of ``path`` while they and the segment being
    written (``current_bytes``) hold more than ``cap_bytes``; returns the names deleted."""
    found, deleted = segments(path), []
    total = sum(size for _, size in found) + current_bytes
    for name, size in found:
        if total <= cap_bytes:
            break
        try:
            os.remove(name)
        except OSError:
            continue
        deleted.append(name)
        total -= size
    return deleted


def drop_oldest(path):
    """Delete the oldest finished segment of ``path``; its name, or None if none is left."""
    for name, _ in segments(path):
        try:
            os.remove(name)
            return name
        except OSError:
            continue
    return None
