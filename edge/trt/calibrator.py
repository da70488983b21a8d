"""The INT8 entropy calibrator for TensorRT builds, with its calibration cache.

``make_calibrator(trt, feeds, cache_path, input_dtypes)`` returns an
``IInt8EntropyCalibrator2`` that feeds ``feeds`` (dicts of equal-batch arrays,
``CALIB_BATCH`` images each) and reads/writes ``cache_path``.
"""
import os

import numpy as np

from edge.atomic import write_bytes
from edge.errors import NanocapError
from edge.trt.cuda import cuda_device

CALIB_BATCH = 8


def make_calibrator(trt, feeds, cache_path, input_dtypes, cuda=None):
    """An ``IInt8EntropyCalibrator2`` over ``feeds`` (dicts of equal-batch arrays)
    that reads ``cache_path`` when it exists and writes it after calibrating.

    TensorRT calls these methods from C++ ``noexcept`` functions: an exception
    escaping one aborts the whole process with no message. So every method
    catches its own exceptions, records the first in ``calibrator.error`` (a
    one-line description) and returns what ends calibration (None); the caller
    raises it after the build (``raise_calibration_error``)."""
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
            self.error = None

        def _failed(self, where, exc):
            if self.error is None:
                self.error = "%s: %s: %s" % (where, type(exc).__name__, exc)
            return None

        def get_batch_size(self):
            return CALIB_BATCH

        def get_batch(self, names, *unused):
            try:
                return self._next_batch(names)
            except BaseException as exc:  # noqa: B902 - nothing may escape into C++
                return self._failed("get_batch", exc)

        def _next_batch(self, names):
            feed = next(self.items, None) if self.error is None else None
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
            try:
                if cache_path and os.path.isfile(cache_path):
                    with open(cache_path, "rb") as handle:
                        return handle.read()
            except BaseException as exc:  # noqa: B902
                return self._failed("read_calibration_cache", exc)
            return None

        def write_calibration_cache(self, cache):
            try:
                if cache_path and self.error is None:  # never keep scales of a failed run
                    write_bytes(cache_path, cache)
            except BaseException as exc:  # noqa: B902
                self._failed("write_calibration_cache", exc)

    return EntropyCalibrator()


def raise_calibration_error(calibrator, onnx_path):
    """After a build: one ``NanocapError`` for the first exception the calibrator
    caught (see ``make_calibrator``), if any."""
    error = getattr(calibrator, "error", None)
    if error:
        raise NanocapError("INT8 calibration of %s failed in %s" % (onnx_path, error))
