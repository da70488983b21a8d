"""Fake device memory: fixed-size allocations addressed by integer pointers.

As on a GPU, an allocation never grows: a copy or an engine write that runs
past its end raises ``DeviceOverrun`` (on real hardware: a CUDA illegal address,
or silent corruption of the neighbouring buffer). Pointers inside an allocation
(base + offset) work, as device pointer arithmetic does.
"""
from contextlib import contextmanager

import numpy as np

ALLOCATIONS = {}  # base pointer -> bytearray (fixed size)
_NEXT = [4096]


class DeviceOverrun(RuntimeError):
    """A write or read past the end of a device allocation."""


def _locate(pointer, nbytes):
    """``(allocation, offset)`` holding ``nbytes`` at ``pointer``, or DeviceOverrun."""
    pointer = int(pointer)
    for base, data in ALLOCATIONS.items():
        if base <= pointer < base + len(data):
            if pointer - base + nbytes > len(data):
                raise DeviceOverrun("%d bytes at 0x%x overrun the %d-byte allocation at 0x%x"
                                    % (nbytes, pointer, len(data), base))
            return data, pointer - base
    raise DeviceOverrun("0x%x is not device memory" % pointer)


def write(pointer, array):
    data = np.ascontiguousarray(array).tobytes()
    buf, offset = _locate(pointer, len(data))
    buf[offset:offset + len(data)] = data


def read(pointer, dtype, shape):
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf, offset = _locate(pointer, count)
    return np.frombuffer(bytes(buf[offset:offset + count]), dtype=dtype).reshape(shape).copy()


class FakeMem(object):
    """One allocation (``int()`` is its device pointer)."""

    def __init__(self, nbytes):
        self.ptr = _NEXT[0]
        _NEXT[0] += int(nbytes) + 256
        ALLOCATIONS[self.ptr] = bytearray(int(nbytes))

    def __int__(self):
        return self.ptr


class FakeCuda(object):
    """Stands in for ``edge.trt.cuda.PyCudaDevice`` (same methods)."""

    def __init__(self, name="Fake GPU 9000", total=16 << 30):
        self._name, self.total = name, total
        self.depth = self.max_depth = 0
        self.counts = {"to_device": 0, "to_host": 0}

    def name(self):
        return self._name

    def total_memory(self):
        return self.total

    @contextmanager
    def active(self):
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        try:
            yield
        finally:
            self.depth -= 1

    def alloc(self, nbytes):
        return FakeMem(max(1, nbytes))

    def to_device(self, memory, array):
        self.counts["to_device"] += 1
        write(memory, array)

    def to_host(self, array, memory):
        self.counts["to_host"] += 1
        array[...] = read(memory, array.dtype, array.shape)

    def stream_handle(self):
        return 0

    def synchronize(self):
        pass
