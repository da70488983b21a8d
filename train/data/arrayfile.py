"""One large array on disk, read and written a row at a time: a standard ``.npy``
file (``numpy.load(path, mmap_mode="r")`` opens it too), accessed with
``os.pread``/``os.pwrite`` at the row's offset.

Why not a ``numpy.memmap`` in the loaders: every page a process touches through
a mapping stays counted in its resident set (RssFile), so a worker reading a
20 GB cache over an epoch would show 20 GB of RSS. ``pread`` copies one row into
a fresh buffer and leaves the file's pages in the kernel's page cache, which the
kernel reclaims as needed: resident memory stays one batch whatever the size of
the file. An ``ArrayFile`` pickles as its path (each DataLoader worker opens its
own descriptor).
"""
import os

import numpy as np

from edge.errors import NanocapError


def create(path, shape, dtype):
    """Write a ``.npy`` header for ``shape``/``dtype`` and size the file (zeros,
    sparse); returns the ``ArrayFile`` opened for writing."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(int(s) for s in shape)}
    try:
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_2_0(handle, header)
            offset = handle.tell()
            handle.truncate(offset + int(np.prod(shape)) * np.dtype(dtype).itemsize)
    except OSError as exc:
        raise NanocapError("cannot write %s: %s" % (path, exc))
    return ArrayFile(path, writable=True)


class ArrayFile(object):
    """Rows of a ``.npy`` file: ``shape``, ``dtype``, ``read(i)``, ``write(i, row)``.

    Raises ``NanocapError`` naming the file when it is not a ``.npy`` array or
    is shorter than its header says (a build cut short)."""

    def __init__(self, path, writable=False):
        self.path, self.writable = path, writable
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = reader(handle)
                self.offset = handle.tell()
        except (OSError, ValueError) as exc:
            raise NanocapError("%s is not a readable .npy array: %s" % (path, exc))
        if fortran or dtype.hasobject or not shape:
            raise NanocapError("%s: unsupported .npy layout" % path)
        self.shape, self.dtype = tuple(shape), dtype
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape)) * dtype.itemsize
        need = self.offset + self.row_bytes * self.shape[0]
        size = os.path.getsize(path)
        if size != need:
            raise NanocapError("%s is cut short or damaged: %d bytes, its header needs %d"
                               % (path, size, need))
        self._fd, self._pid = None, None

    def __len__(self):
        return self.shape[0]

    def _handle(self):
        if self._fd is None or self._pid != os.getpid():  # a fresh descriptor per worker
            self._fd = os.open(self.path, os.O_RDWR if self.writable else os.O_RDONLY)
            self._pid = os.getpid()
        return self._fd

    def read(self, row):
        """Row ``row`` as a new writable array of ``row_shape``."""
        if not 0 <= row < self.shape[0]:
            raise IndexError("row %d of %s (%d rows)" % (row, self.path, self.shape[0]))
        out = np.empty(self.row_shape, self.dtype)
        got = os.preadv(self._handle(), [memoryview(out).cast("B")], self.offset + row * self.row_bytes)
        if got != self.row_bytes:
            raise NanocapError("%s: short read at row %d" % (self.path, row))
        return out

    def write(self, row, values):
        """Store ``values`` (cast to the file's dtype) as row ``row``."""
        data = np.ascontiguousarray(values, dtype=self.dtype).reshape(self.row_shape)
        os.pwrite(self._handle(), data.tobytes(), self.offset + row * self.row_bytes)

    def close(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_fd"], state["_pid"] = None, None
        return state
