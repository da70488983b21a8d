"""The INT8 entropy calibrator for TensorRT builds, with its calibration cache.

``make_calibrator(trt, feeds, cache_path, input_dtypes)`` returns an
``IInt8EntropyCalibrator2`` that feeds ``feeds`` (dicts of equal-batch arrays,
``CALIB_BATCH`` images each) and reads/writes ``cache_path``.
"""
import os

import numpy as np

from edge.errors import NanocapError
from edge.trt.cuda import cuda_device

CALIB_BATCH = 8


def make_calibrator(trt, feeds, cache_path, input_dtypes, cuda=None):
    """An ``IInt8EntropyCalibrator2`` over ``feeds`` (dicts of equal-batch arrays)
    that reads ``cache_path`` when it exists and writes it after calibrating."""
    if not feeds and not (cache_path and os.path.isfile(cache_path)):
        raise NanocapError("INT8 needs calibration images (--calib-images DIR) or an "
                           "existing calibration cache %s" % cache_path)
    if cuda is None and feeds:
        cuda = cuda_device()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.items = iter(feeds or [])
            self.memory = {}

        def get_batch_size(self):
            return CALIB_BATCH

        def get_batch(self, names, *unused):
            feed = next(self.items, None)
            if feed is None:
                return None
            pointers = []
            for name in names:
                array = np.ascontiguousarray(feed[name], dtype=input_dtypes.get(name))
                if name not in self.memory:
                    self.memory[name] = cuda.alloc(array.nbytes)
                cuda.to_device(self.memory[name], array)
                pointers.append(int(self.memory[name]))
            cuda.synchronize()
            return pointers

        def read_calibration_cache(self, *unused):
            if cache_path and os.path.isfile(cache_path):
                with open(cache_path, "rb") as handle:
                    return handle.read()
            return None

        def write_calibration_cache(self, cache):
            if cache_path:
                write_bytes(cache_path, cache)

    return EntropyCalibrator()


def write_bytes(path, data):
    """Write ``data`` (bytes or a buffer) to ``path`` atomically (temp file + rename)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as handle:
        handle.write(bytes(memoryview(data)))
    os.replace(tmp, path)
