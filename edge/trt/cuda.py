"""Device memory, copies and one stream for TensorRT, through pycuda.

``cuda_device()`` is the process-wide helper: GPU 0's primary context, pushed
around every call (``active()``) so engines run from any thread. pycuda is
imported on first use (never ``pycuda.autoinit``); its absence is one
``NanocapError`` line naming what to install.
"""
import atexit
import contextlib
import ctypes
import ctypes.util

from edge.errors import NanocapError

_CUDA = []


class PyCudaDevice(object):
    """Device memory, copies and one stream through pycuda (GPU 0's primary context)."""

    def __init__(self, index=0):
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise NanocapError("the TensorRT runner needs pycuda (JetPack: pip install pycuda "
                               "inside the venv); or use the ONNX Runtime backend")
        try:
            cuda.init()
            if cuda.Device.count() == 0:
                raise NanocapError("no NVIDIA GPU found: TensorRT needs one")
            self.device = cuda.Device(index)
            self.context = self.device.retain_primary_context()
        except cuda.Error as exc:
            raise NanocapError("no usable NVIDIA GPU for TensorRT: %s" % exc)
        self.cuda = cuda
        with self.active():
            self.stream = cuda.Stream()
        atexit.register(self._release)

    def _release(self):
        try:
            self.context.detach()
        except Exception:  # interpreter shutdown: the driver may already be gone
            pass

    def name(self):
        return self.device.name()

    def total_memory(self):
        """The GPU's memory in bytes (a Nano's 4 GB are shared with the CPU)."""
        return int(self.device.total_memory())

    @contextlib.contextmanager
    def active(self):
        """Make the context current on this thread for the duration."""
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    def alloc(self, nbytes):
        return self.cuda.mem_alloc(max(1, int(nbytes)))

    # Host arrays are ordinary (pageable) numpy arrays, so the copies are the
    # synchronous ones; they are ordered with the stream's work (a blocking
    # stream synchronises with the legacy default stream these copies use).
    def to_device(self, memory, array):
        self.cuda.memcpy_htod(memory, array)

    def to_host(self, array, memory):
        self.cuda.memcpy_dtoh(array, memory)

    def stream_handle(self):
        return self.stream.handle

    def synchronize(self):
        self.stream.synchronize()


def cuda_device():
    """The process-wide device helper (created on first use)."""
    if not _CUDA:
        _CUDA.append(PyCudaDevice())
    return _CUDA[0]


def gpu_name(index=0):
    """The GPU's name (``NVIDIA Tegra X1``), as pycuda's ``Device.name()`` gives it,
    without pycuda: the helper's if one exists, else the CUDA driver's
    ``cuDeviceGetName`` through ctypes. Engine builds without INT8 calibration
    need only this (TensorRT manages its own CUDA context)."""
    if _CUDA:
        return _CUDA[0].name()
    return driver_gpu_name(index)


def gpu_total_memory(index=0):
    """The GPU's memory in bytes: the helper's if one exists, else the CUDA driver's
    ``cuDeviceTotalMem_v2`` through ctypes (no pycuda)."""
    if _CUDA:
        return _CUDA[0].total_memory()
    lib, device = _driver_device(index)
    total = ctypes.c_size_t()
    if lib.cuDeviceTotalMem_v2(ctypes.byref(total), device) != 0:
        raise NanocapError("cannot read the memory of GPU %d (cuDeviceTotalMem failed)" % index)
    return int(total.value)


def driver_gpu_name(index=0):
    """``cuDeviceGetName`` of GPU ``index`` via ``libcuda`` (ctypes)."""
    lib, device = _driver_device(index)
    name = ctypes.create_string_buffer(256)
    if lib.cuDeviceGetName(name, len(name), device) != 0:
        raise NanocapError("cannot read the name of GPU %d (cuDeviceGetName failed)" % index)
    return name.value.decode("utf-8", "replace")


def _driver_device(index):
    """``(libcuda, CUdevice)`` of GPU ``index`` through ctypes, initialised."""
    lib = None
    for candidate in ("libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")):
        try:
            lib = ctypes.CDLL(candidate) if candidate else None
        except OSError:
            lib = None
        if lib is not None:
            break
    if lib is None:
        raise NanocapError("no NVIDIA driver found (libcuda): TensorRT needs an NVIDIA GPU")
    device = ctypes.c_int()
    if lib.cuInit(0) != 0 or lib.cuDeviceGet(ctypes.byref(device), int(index)) != 0:
        raise NanocapError("no usable NVIDIA GPU for TensorRT (cuInit/cuDeviceGet failed)")
    return lib, device
