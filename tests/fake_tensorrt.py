"""A FAKE ``tensorrt`` module (plus fake CUDA memory) for tests without a GPU.

NOT TensorRT. It implements only the calls ``edge/trt/build.py`` and
``edge/trt/runner.py`` make, in two API generations:

- ``make_fake_tensorrt(8)``: TensorRT 8.2 as on JetPack 4.6: explicit-batch
  flag, ``config.max_workspace_size`` (no memory pools), binding API
  (``num_bindings``, ``execute_async_v2``), no uint8 tensors (the parser rejects
  them, as onnx-tensorrt 8.2 does);
- ``make_fake_tensorrt(10)``: memory pools, tensor API (``num_io_tensors``,
  ``set_tensor_address``, ``execute_async_v3``), no binding API, no
  ``max_workspace_size``.

The "engine" is the parsed ONNX bytes behind a JSON line, run with ONNX Runtime
(CPU) on data read from ``FakeCuda`` memory: the runner's shapes, dtypes, copies
and output order are really exercised. Calls are recorded in ``module.calls``.

Failure modes as in the real API (8.2 and 10.x): ``deserialize_cuda_engine`` and
``create_timing_cache`` return None for bytes they cannot read;
``build_serialized_network`` returns None when the build fails (e.g. INT8
calibration got no batch); an exception escaping a calibrator method (C++
``noexcept`` code) ends the real process with no traceback: the fake raises
``CalibratorAbort``, a ``BaseException`` that neither ``except Exception`` nor
``run_cli`` catches, so a test sees the abort.
"""
import json
import types
from contextlib import contextmanager

import numpy as np

MEMORY = {}  # fake device pointer -> bytearray
TIMING_MAGIC = b"FAKE-TIMING-CACHE\n"


class CalibratorAbort(BaseException):
    """Real TensorRT aborts (std::terminate) when a calibrator callback raises."""


def _noexcept(callback, *args):
    """Call a Python calibrator method as TensorRT's C++ trampoline does."""
    try:
        return callback(*args)
    except BaseException as exc:
        raise CalibratorAbort("terminate called after an exception in %s: %r"
                              % (getattr(callback, "__name__", callback), exc))


class FakeMem(object):
    _next = [4096]

    def __init__(self, nbytes):
        self.ptr = FakeMem._next[0]
        FakeMem._next[0] += int(nbytes) + 256
        MEMORY[self.ptr] = bytearray(int(nbytes))

    def __int__(self):
        return self.ptr


class FakeCuda(object):
    """Stands in for ``edge.trt.runner.PyCudaDevice`` (same methods)."""

    def __init__(self, name="Fake GPU 9000"):
        self._name = name
        self.depth = 0
        self.max_depth = 0

    def name(self):
        return self._name

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
        data = np.ascontiguousarray(array).tobytes()
        MEMORY[int(memory)][:len(data)] = data

    def to_host(self, array, memory):
        raw = bytes(MEMORY[int(memory)][:array.nbytes])
        array[...] = np.frombuffer(raw, dtype=array.dtype).reshape(array.shape)

    def stream_handle(self):
        return 0

    def synchronize(self):
        pass


def read(pointer, dtype, shape):
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(bytes(MEMORY[int(pointer)][:count]), dtype=dtype).reshape(shape).copy()


def make_fake_tensorrt(major=8, fast_fp16=True, fast_int8=True):
    """A fresh fake ``tensorrt`` module of API generation ``major`` (8 or 10)."""
    import onnx
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "8.2.1.8" if major == 8 else "10.3.0"
    trt.FAKE, trt.calls = True, []
    dtypes = {"float32": np.float32, "float16": np.float16, "int32": np.int32,
              "int8": np.int8, "bool": np.bool_}
    dtypes.update({"uint8": np.uint8} if major >= 10 else {})
    trt.DataType = types.SimpleNamespace(**dict((k, k) for k in dtypes))
    for name in dtypes:
        setattr(trt, name, name)
    trt.nptype = lambda dtype: dtypes[dtype]
    onnx_types = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                  onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8",
                  onnx.TensorProto.BOOL: "bool", onnx.TensorProto.INT64: "int32"}
    onnx_types.update({onnx.TensorProto.UINT8: "uint8"} if major >= 10 else {})

    class Logger(object):
        WARNING, ERROR, INFO = 2, 1, 3

        def __init__(self, level=2):
            self.level = level

    trt.Logger = Logger
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    if major >= 10:
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class ITensor(object):
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    class Network(object):
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self.onnx = flags, [], [], None

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser(object):
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

        def parse(self, data):
            trt.calls.append("parse")
            model = onnx.load_from_string(bytes(data))
            for info, target in ((model.graph.input, self.network.inputs),
                                 (model.graph.output, self.network.outputs)):
                for value in info:
                    elem = value.type.tensor_type.elem_type
                    if elem not in onnx_types:
                        self.errors.append("%s: unsupported data type %s (fake TensorRT %s)"
                                           % (value.name, elem, trt.__version__))
                        continue
                    shape = tuple(d.dim_value if d.HasField("dim_value") else -1
                                  for d in value.type.tensor_type.shape.dim)
                    target.append(ITensor(value.name, shape, onnx_types[elem]))
            self.network.onnx = bytes(data)
            return not self.errors

    trt.OnnxParser = OnnxParser

    class Profile(object):
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mini, opt, maxi):
            assert len(mini) == len(opt) == len(maxi)
            self.shapes[name] = (tuple(mini), tuple(opt), tuple(maxi))

    class TimingCache(object):
        def __init__(self, entries):
            self.entries = entries

        def serialize(self):
            return memoryview(TIMING_MAGIC + b"%d" % (self.entries + 1))

    class Config(object):
        def __init__(self):
            object.__setattr__(self, "flags", set())
            object.__setattr__(self, "profiles", [])
            object.__setattr__(self, "limits", {})
            object.__setattr__(self, "int8_calibrator", None)
            object.__setattr__(self, "timing", None)
            object.__setattr__(self, "calibration_profile", None)

        def __setattr__(self, name, value):
            if name == "max_workspace_size" and major >= 10:
                raise AttributeError("max_workspace_size was removed in TensorRT 10")
            if name not in ("max_workspace_size", "int8_calibrator"):
                raise AttributeError(name)
            object.__setattr__(self, name, value)

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile):
            object.__setattr__(self, "calibration_profile", profile)

        def create_timing_cache(self, data):
            data = bytes(data)
            if not data:
                return TimingCache(0)
            if not data.startswith(TIMING_MAGIC):
                trt.calls.append("timing cache rejected")
                return None
            try:
                return TimingCache(int(data[len(TIMING_MAGIC):]))
            except ValueError:
                trt.calls.append("timing cache rejected")
                return None

        def set_timing_cache(self, cache, ignore_mismatch):
            if not isinstance(cache, TimingCache):  # pybind11 rejects None / other types
                raise TypeError("set_timing_cache(): incompatible function arguments")
            object.__setattr__(self, "timing", cache)
            return True

        def get_timing_cache(self):
            return self.timing

    if major >= 10:
        def set_memory_pool_limit(self, pool, size):
            self.limits[pool] = size
        Config.set_memory_pool_limit = set_memory_pool_limit

    class Builder(object):
        platform_has_fast_fp16 = fast_fp16
        platform_has_fast_int8 = fast_int8

        def __init__(self, logger):
            trt.calls.append("Builder")

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.calls.append("build_serialized_network")
            if major < 10:
                assert network.flags & 1, "TensorRT 8 needs an explicit-batch network"
                assert config.max_workspace_size > 0
            else:
                assert config.limits["WORKSPACE"] > 0
            assert len(config.profiles) == 1
            if "INT8" in config.flags and not _calibrate(network, config):
                trt.calls.append("calibration failure")
                return None  # "Calibration failure occurred with no scaling factors"
            profile = config.profiles[0].shapes
            head = {"fake": True, "flags": sorted(config.flags),
                    "inputs": [(t.name, t.dtype) for t in network.inputs],
                    "outputs": [(t.name, t.dtype) for t in network.outputs],
                    "max_batch": dict((k, v[2][0]) for k, v in profile.items())}
            return memoryview(json.dumps(head).encode("utf-8") + b"\n" + network.onnx)

    def _calibrate(network, config):
        """True when calibrated (from the cache or from batches)."""
        calibrator = config.int8_calibrator
        assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
        assert config.calibration_profile is not None
        if _noexcept(calibrator.read_calibration_cache):
            trt.calls.append("calibration cache read")
            return True
        names = [t.name for t in network.inputs]
        batch = _noexcept(calibrator.get_batch_size)
        batches = 0
        while True:
            pointers = _noexcept(calibrator.get_batch, names)
            if not pointers:
                break
            for tensor, pointer in zip(network.inputs, pointers):
                read(pointer, dtypes[tensor.dtype], (batch,) + tensor.shape[1:])
            batches += 1
        if not batches:
            return False
        trt.calls.append("calibrated %d batches" % batches)
        _noexcept(calibrator.write_calibration_cache,
                  memoryview(b"FAKE-EntropyCalibration2 %d" % batches))
        return True

    trt.Builder = Builder

    class IInt8EntropyCalibrator2(object):
        def __init__(self):
            self.initialised = True

    trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    _add_runtime(trt, major, dtypes)
    return trt


def _add_runtime(trt, major, dtypes):
    """``trt.Runtime`` and the engine / context classes of API generation ``major``."""
    import onnxruntime

    class Engine(object):
        def __init__(self, head, model_bytes):
            self.head = head
            self.session = onnxruntime.InferenceSession(model_bytes,
                                                        providers=["CPUExecutionProvider"])
            self.io = [(n, d, True) for n, d in head["inputs"]]
            self.io += [(n, d, False) for n, d in head["outputs"]]

        def create_execution_context(self):
            return Context(self)

    class Context(object):
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.out = engine, {}, {}, {}

        def _set_shape(self, name, shape):
            if shape[0] < 1 or shape[0] > self.engine.head["max_batch"][name]:
                return False
            self.shapes[name] = tuple(shape)
            feeds = dict((n, np.zeros(s, dtypes[d])) for n, d, i in self.engine.io
                         if i and n in self.shapes for s in [self.shapes[n]])
            if len(feeds) == len(self.engine.head["inputs"]):
                outs = self.engine.session.run(None, feeds)
                names = [o.name for o in self.engine.session.get_outputs()]
                self.out = dict((n, o.shape) for n, o in zip(names, outs))
            return True

        def _shape(self, name):
            return self.shapes.get(name) or self.out[name]

        def _execute(self, pointers):
            feeds = dict((n, read(pointers[n], dtypes[d], self.shapes[n]))
                         for n, d, is_input in self.engine.io if is_input)
            names = [o.name for o in self.engine.session.get_outputs()]
            for name, value in zip(names, self.engine.session.run(None, feeds)):
                data = np.ascontiguousarray(value).tobytes()
                MEMORY[int(pointers[name])][:len(data)] = data
            trt.calls.append("execute")
            return True

    if major < 10:
        Engine.num_bindings = property(lambda self: len(self.io))
        Engine.get_binding_name = lambda self, i: self.io[i][0]
        Engine.binding_is_input = lambda self, i: self.io[i][2]
        Engine.get_binding_dtype = lambda self, i: self.io[i][1]
        Context.set_binding_shape = lambda self, i, s: self._set_shape(self.engine.io[i][0], s)
        Context.get_binding_shape = lambda self, i: self._shape(self.engine.io[i][0])

        def execute_async_v2(self, bindings, stream_handle):
            return self._execute(dict((n, p) for (n, _, _), p in zip(self.engine.io, bindings)))
        Context.execute_async_v2 = execute_async_v2
    else:
        Engine.num_io_tensors = property(lambda self: len(self.io))
        Engine.get_tensor_name = lambda self, i: self.io[i][0]
        Engine.get_tensor_mode = lambda self, n: [("INPUT" if x[2] else "OUTPUT")
                                                  for x in self.io if x[0] == n][0]
        Engine.get_tensor_dtype = lambda self, n: [x[1] for x in self.io if x[0] == n][0]
        Context.set_input_shape = lambda self, n, s: self._set_shape(n, s)
        Context.get_tensor_shape = lambda self, n: self._shape(n)

        def set_tensor_address(self, name, pointer):
            self.addresses[name] = pointer
            return True
        Context.set_tensor_address = set_tensor_address
        Context.execute_async_v3 = lambda self, stream_handle: self._execute(self.addresses)

    class Runtime(object):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            head, _, model = bytes(data).partition(b"\n")
            try:
                head = json.loads(head.decode("utf-8"))
            except ValueError:
                return None
            return Engine(head, model)

    trt.Runtime = Runtime
