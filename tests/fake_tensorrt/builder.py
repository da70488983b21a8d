"""The fake ``tensorrt`` module's builder side: network, ONNX parser, config, builder.

NOT TensorRT. It implements only the calls ``edge/trt/`` makes, in the API
generations of NVIDIA/TensorRT's Python bindings (``python/src/infer/pyCore.cpp``
on release/8.2, release/10.x, release/11.0):

- ``make_fake_tensorrt(8)``: TensorRT 8.2.1 as on JetPack 4.6: explicit-batch
  flag, ``config.max_workspace_size`` (no memory pools), binding API, no uint8
  tensors, and the node-level op / input-type checks of onnx-tensorrt 8.2
  (``export/trt_ops.py``, the same table the export floor uses);
- ``make_fake_tensorrt(10)``: 10.3: memory pools, tensor API, uint8, FP16/INT8
  flags and calibrators still there;
- ``make_fake_tensorrt(11)``: 11.0: no ``BuilderFlag.FP16``/``INT8``, no
  calibrators, no ``platform_has_fast_fp16``: strongly typed networks only.

Failure modes as in the real API: ``deserialize_cuda_engine`` and
``create_timing_cache`` return None for bytes they cannot read;
``build_serialized_network`` returns None when the build fails (INT8
calibration got no batch, a profile that does not fit the network);
``parse`` returns False with errors for a node the parser refuses; an exception
escaping a calibrator method (C++ ``noexcept`` code) ends the real process with
no traceback: the fake raises ``CalibratorAbort``, a ``BaseException`` that
neither ``except Exception`` nor ``run_cli`` catches. Calls are recorded in
``module.calls``.
"""
import json
import types

import numpy as np

from tests.fake_tensorrt.memory import read
from tests.fake_tensorrt.runtime import add_runtime

TIMING_MAGIC = b"FAKE-TIMING-CACHE\n"
VERSIONS = {8: "8.2.1.8", 10: "10.3.0", 11: "11.0.0"}


class CalibratorAbort(BaseException):
    """Real TensorRT aborts (std::terminate) when a calibrator callback raises."""


def _noexcept(callback, *args):
    """Call a Python calibrator method as TensorRT's C++ trampoline does."""
    try:
        return callback(*args)
    except BaseException as exc:
        raise CalibratorAbort("terminate called after an exception in %s: %r"
                              % (getattr(callback, "__name__", callback), exc))


def make_fake_tensorrt(major=8, fast_fp16=True, fast_int8=True):
    """A fresh fake ``tensorrt`` module of API generation ``major`` (8, 10 or 11)."""
    import onnx
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSIONS[major]
    trt.FAKE, trt.calls = True, []
    flags = major < 11  # TensorRT 11: no precision flags, no calibrators
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
    trt.BuilderFlag = types.SimpleNamespace(**({"FP16": "FP16", "INT8": "INT8"} if flags
                                               else {"TF32": "TF32"}))
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(
        **({"EXPLICIT_BATCH": 0} if major < 11 else {"STRONGLY_TYPED": 5}))
    trt.TopKOperation = types.SimpleNamespace(MAX="MAX", MIN="MIN")
    if major >= 10:
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")

    class ITensor(object):
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    class TopKLayer(object):
        def __init__(self, tensor, k):
            self.source, self.k = tensor, k
            self.outputs = [ITensor(tensor.name + "_topk_v", tensor.shape[:1] + (k,), tensor.dtype),
                            ITensor(tensor.name + "_topk_i", tensor.shape[:1] + (k,), "int32")]

        def get_output(self, i):
            return self.outputs[i]

    class Network(object):
        def __init__(self, flags):
            self.flags, self.inputs, self.outputs, self.onnx, self.topk = flags, [], [], None, []

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))

        def get_input(self, i):
            return self.inputs[i]

        def get_output(self, i):
            return self.outputs[i]

        def add_topk(self, tensor, op, k, axes):
            assert op == "MAX" and axes == 1 << (len(tensor.shape) - 1), "fake: last-axis MAX"
            self.topk.append(TopKLayer(tensor, int(k)))
            return self.topk[-1]

        def mark_output(self, tensor):
            self.outputs.append(tensor)

    class OnnxParser(object):
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        num_errors = property(lambda self: len(self.errors))

        def get_error(self, i):
            return self.errors[i]

        def parse(self, data):
            trt.calls.append("parse")
            model = onnx.load_from_string(bytes(data))
            self.errors.extend(_node_errors(model, major))
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
            for name, value in (("flags", set()), ("profiles", []), ("limits", {}),
                                ("int8_calibrator", None), ("timing", None),
                                ("calibration_profile", None)):
                object.__setattr__(self, name, value)

        def __setattr__(self, name, value):
            if name == "max_workspace_size" and major >= 10:
                raise AttributeError("max_workspace_size was removed in TensorRT 10")
            if name not in ("max_workspace_size",) + (("int8_calibrator",) if flags else ()):
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
            try:
                assert data.startswith(TIMING_MAGIC)
                return TimingCache(int(data[len(TIMING_MAGIC):]))
            except (AssertionError, ValueError):
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
        if flags:
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
            profile = config.profiles[0].shapes
            if not _profile_fits(network, profile):
                trt.calls.append("profile mismatch")
                return None
            if "INT8" in config.flags and not _calibrate(network, config):
                trt.calls.append("calibration failure")
                return None  # "Calibration failure occurred with no scaling factors"
            model = network.onnx
            if config.flags & {"FP16", "INT8"}:  # fp16 kernels: the fp16 graph's numbers
                from export.quantize import to_float16
                model = to_float16(onnx.load_from_string(model)).SerializeToString()
            head = {"fake": True, "flags": sorted(config.flags),
                    "inputs": [(t.name, t.dtype) for t in network.inputs],
                    "outputs": [(t.name, t.dtype) for t in network.outputs],
                    "profile": dict((k, (v[0], v[2])) for k, v in profile.items()),
                    "topk": [(l.source.name, l.k, l.outputs[0].name, l.outputs[1].name)
                             for l in network.topk]}
            return memoryview(json.dumps(head).encode("utf-8") + b"\n" + model)

    def _profile_fits(network, profile):
        """Every input has a profile whose fixed dimensions equal the network's."""
        for tensor in network.inputs:
            if tensor.name not in profile:
                return False
            for shape in profile[tensor.name]:
                if len(shape) != len(tensor.shape) or any(
                        d >= 0 and d != s for d, s in zip(tensor.shape, shape)):
                    return False
        return True

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
    if flags:
        class IInt8EntropyCalibrator2(object):
            def __init__(self):
                self.initialised = True

        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    add_runtime(trt, major, dtypes)
    return trt


def _node_errors(model, major):
    """What the real parser refuses node by node: for 8.2, every op and input type
    outside onnx-tensorrt 8.2's table (``export/trt_ops.py``, shared with the
    export floor); for 10 and 11, ops outside that table only."""
    import onnx
    from export.trt_ops import OPS, graph_problems
    if major < 10:
        inferred = onnx.shape_inference.infer_shapes(model)
        return ["UNSUPPORTED_NODE: %s" % p for p in graph_problems(inferred)]
    return ["UNSUPPORTED_NODE: no importer for %s (%s)" % (n.op_type, n.name)
            for n in model.graph.node if n.op_type not in OPS]
