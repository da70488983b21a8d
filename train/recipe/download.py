"""Resumable HTTP downloads with checksums, and archive extraction (stdlib only).

``fetch`` writes ``DEST.part`` and asks the server for the rest (HTTP ``Range``)
when a part is already there, so an interrupted download continues where it
stopped, also across runs; a connection cut mid-file is retried from where it
stopped. The finished file is checked against its size and digest
(``"md5:HEX"`` or ``"sha256:HEX"``) before it is renamed to ``DEST``; a file
that fails the check is kept as ``DEST.corrupt`` and named in one line.

``extract`` unpacks a zip or tar archive member by member (each written to a
temporary name, then renamed), skipping members already extracted with the
right size, so an interrupted extraction also resumes; member paths that would
escape the destination are refused.
"""
import http.client
import os
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib

from edge.bundle import file_digest
from edge.errors import NanocapError

CHUNK = 1 << 20
CUT_ERRORS = (ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError)


def parse_digest(text):
    """``"md5:HEX"`` / ``"sha256:HEX"`` / bare HEX (length tells) -> ``(algorithm, hex)``."""
    algo, sep, value = str(text).strip().partition(":")
    if not sep:
        algo, value = {32: "md5", 64: "sha256"}.get(len(algo), ""), algo
    if algo not in ("md5", "sha256") or not value:
        raise NanocapError("cannot read the checksum %r (expected md5:HEX or sha256:HEX)" % text)
    return algo, value.lower()


def check_file(path, size=None, digest=None, log=print, dest=None):
    """Raise ``NanocapError`` naming ``dest`` (default ``path``) when the size or digest
    of ``path`` is not the expected one (the file is then kept as ``dest.corrupt``).
    Returns the sha256 (or the checked digest) as ``"algo:hex"``."""
    dest = dest or path
    name = os.path.basename(dest)
    actual = os.path.getsize(path)
    problem = None
    if size is not None and actual != size:
        problem = "%d bytes, expected %d" % (actual, size)
    algo, want = parse_digest(digest) if digest else ("sha256", None)
    got = None
    if problem is None:
        if actual > 256 * CHUNK:
            log("checking %s (%s of %.1f GB) ..." % (name, algo, actual / 1e9))
        got = file_digest(path, algo)
        if want is not None and got != want:
            problem = "%s %s, expected %s" % (algo, got, want)
    if problem is not None:
        os.replace(path, dest + ".corrupt")
        raise NanocapError("%s: checksum mismatch (%s); kept as %s.corrupt, re-run to download "
                           "it again" % (name, problem, name))
    return "%s:%s" % (algo, got)


def _open(url, offset, timeout):
    """urlopen with ``Range: bytes=offset-`` (offset > 0); None when the server
    says the range is past the end (the part is already whole)."""
    request = urllib.request.Request(url, headers={"User-Agent": "nanocap"})
    if offset:
        request.add_header("Range", "bytes=%d-" % offset)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return None
        raise NanocapError("%s: HTTP %d %s" % (url, exc.code, exc.reason))
    except (urllib.error.URLError, OSError) as exc:
        raise NanocapError("cannot reach %s: %s" % (url, getattr(exc, "reason", exc)))


def _stream(response, part, offset, name, size, progress):
    """Append (206) or write (200) the body to ``part``; returns ``(have, total)``."""
    resumed = offset and response.status == 206
    have = offset if resumed else 0
    length = response.headers.get("Content-Length")
    total = have + int(length) if length is not None else None
    if size is not None and total is not None and total != size:
        raise NanocapError("%s: the server offers %d bytes, expected %d (another file at "
                           "that address?)" % (name, total, size))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=name, mininterval=1.0, leave=False)
    try:
        with open(part, "ab" if resumed else "wb") as out:
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                have += len(block)
                if bar is not None:
                    bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    return have, total


def fetch(url, dest, size=None, digest=None, retries=5, wait=2.0, timeout=60.0,
          progress=True, log=print):
    """Download ``url`` to ``dest`` (resuming ``dest.part``), check it, return ``"algo:hex"``.

    ``size`` (bytes) and ``digest`` (``"md5:HEX"``/``"sha256:HEX"``) are checked when given;
    a cut connection is resumed up to ``retries`` times, ``wait`` seconds apart (doubling).
    """
    name = os.path.basename(dest)
    if os.path.isfile(dest):
        return check_file(dest, size, digest, log)
    part = dest + ".part"
    for attempt in range(retries + 1):
        offset = os.path.getsize(part) if os.path.isfile(part) else 0
        if attempt or offset:
            log("%s: resuming at %.1f MB" % (name, offset / 1e6))
        response = _open(url, offset, timeout)
        if response is None:
            break
        try:
            with response:
                have, total = _stream(response, part, offset, name, size, progress)
        except CUT_ERRORS as exc:
            have, total = os.path.getsize(part), None
            cut = str(exc) or type(exc).__name__
        else:
            cut = None if total is None or have >= total else "connection closed"
        if cut is None:
            break
        if attempt == retries:
            raise NanocapError("%s: download cut at %d bytes (%s); re-run to resume"
                               % (name, have, cut))
        time.sleep(wait * 2 ** attempt)
    checked = check_file(part, size, digest, log, dest=dest)
    os.replace(part, dest)
    return checked


def _safe_target(dest, member):
    """``dest/member`` or None for a member that would land outside ``dest``."""
    if not member or member.startswith(("/", "\\")) or ".." in member.replace("\\", "/").split("/"):
        return None
    return os.path.join(dest, *member.replace("\\", "/").split("/"))


def _members(archive):
    """``(handle, [(name, size, opener)])`` of an archive's regular files."""
    if zipfile.is_zipfile(archive):
        handle = zipfile.ZipFile(archive)
        return handle, [(i.filename, i.file_size, (lambda i=i: handle.open(i)))
                        for i in handle.infolist() if not i.is_dir()]
    try:
        handle = tarfile.open(archive, "r:*")
        entries = handle.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise NanocapError("%s is not a readable zip or tar archive (%s): an incomplete "
                           "or corrupt file?" % (archive, exc))
    return handle, [(m.name, m.size, (lambda m=m: handle.extractfile(m)))
                    for m in entries if m.isfile()]


def extract(archive, dest, keep=None, rename=None, progress=True):
    """Unpack ``archive`` into ``dest``; returns the number of files written now.

    ``keep(name) -> bool`` selects members (default all but ``__MACOSX/``);
    ``rename(name) -> relative path`` places them (default as in the archive).
    """
    os.makedirs(dest, exist_ok=True)
    handle, members = _members(archive)
    keep = keep or (lambda name: not name.startswith("__MACOSX/"))
    chosen = [m for m in members if keep(m[0])]
    written = 0
    bar = None
    if progress and len(chosen) > 100:
        from tqdm import tqdm
        bar = tqdm(total=len(chosen), desc="extract %s" % os.path.basename(archive),
                   unit="file", mininterval=1.0, leave=False)
    try:
        for name, size, opener in chosen:
            target = _safe_target(dest, rename(name) if rename else name)
            if target is None:
                raise NanocapError("%s: member %r would land outside %s; refused"
                                   % (archive, name, dest))
            if not (os.path.isfile(target) and os.path.getsize(target) == size):
                _write_member(archive, name, opener, target)
                written += 1
            if bar is not None:
                bar.update(1)
    finally:
        handle.close()
        if bar is not None:
            bar.close()
    return written


def _write_member(archive, name, opener, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temp = target + ".part"
    try:
        with opener() as source, open(temp, "wb") as out:
            for block in iter(lambda: source.read(CHUNK), b""):
                out.write(block)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, ValueError) as exc:
        _remove(temp)
        raise NanocapError("%s: cannot extract %s (%s): a corrupt archive?" % (archive, name, exc))
    except OSError as exc:
        _remove(temp)
        raise NanocapError("cannot write %s: %s" % (target, exc))
    os.replace(temp, target)


def _remove(path):
    if os.path.exists(path):
        os.remove(path)
