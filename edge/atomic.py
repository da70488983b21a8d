"""Files written so that a crash leaves the old file or a complete new one.

Every file nanocap writes whole (``nanocap.json``, engines and their side files,
calibration caches, snapshots, benchmark reports) goes through ``write_bytes``:
the bytes go to a hidden temporary file in the same folder, are flushed to the
disk (fsync), and the temporary file is renamed over the target (``os.replace``
is atomic on POSIX within one filesystem). A failed write removes the
temporary file and leaves the target as it was. Streams that grow (the caption
log, recordings) cannot be written this way; they are not handled here.
"""
import json
import os
import tempfile


def write_bytes(path, data):
    """Write ``data`` (bytes, or any buffer such as a numpy array or a TensorRT
    host memory) to ``path`` atomically; returns ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(bytes(memoryview(data)))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_text(path, text):
    """``write_bytes`` for text (UTF-8)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, data):
    """``data`` as indented, key-sorted JSON plus a newline, atomically."""
    return write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


RENAME_EXCHANGE = 2     # renameat2(2) flag (Linux >= 3.15): swap two paths atomically
AT_FDCWD = -100


def _exchange(first, second):
    """Swap two existing paths in one step with Linux ``renameat2``; False where
    the C library or the filesystem cannot (the caller falls back)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    return renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second),
                     RENAME_EXCHANGE) == 0


def replace_dir(new, old):
    """Put the complete folder ``new`` in the place of ``old`` (which may not exist)
    so that whatever happens ``old`` names the old folder or the new one whole:
    one atomic exchange where Linux offers it, else ``old`` is renamed aside and
    ``new`` renamed in (a crash between the two leaves the old folder beside,
    as ``.NAME.old-*``). The old folder is then deleted."""
    import shutil
    if not os.path.isdir(old):
        os.rename(new, old)
        return
    if _exchange(new, old):
        shutil.rmtree(new, ignore_errors=True)      # ``new`` now names the old folder
        return
    aside = tempfile.mkdtemp(prefix=".%s.old-" % os.path.basename(os.path.abspath(old)),
                             dir=os.path.dirname(os.path.abspath(old)))
    os.rmdir(aside)
    os.rename(old, aside)
    try:
        os.rename(new, old)
    except OSError:
        os.rename(aside, old)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def make_readable(directory):
    """Folders 0755 and files 0644 under ``directory`` (itself included), so a
    service user other than the owner can read it (a ``mkdtemp`` folder is 0700)."""
    os.chmod(directory, 0o755)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
