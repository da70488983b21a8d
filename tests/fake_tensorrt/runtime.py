"""The fake ``trt.Runtime``: engines are a JSON head plus ONNX bytes, run by ONNX
Runtime (CPU) on data in fake device memory (``memory.py``).

What the build recorded decides how it runs: an fp16 engine runs the fp16
ONNX (``export.quantize.to_float16`` of the parsed graph where the builder set
the FP16 flag; the bundle's fp16 graph as parsed for a strongly typed build), so
tests see the agreement a real fp16 engine gives, not fp32 results. Input
shapes are checked against the optimisation profile in every dimension; heads
(TopK layers added with the network API) run after the graph.
"""
import json

import numpy as np

from tests.fake_tensorrt.memory import read, write


def add_runtime(trt, major, dtypes):
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

        def run(self, feeds):
            names = [o.name for o in self.session.get_outputs()]
            values = dict(zip(names, self.session.run(None, feeds)))
            for source, k, value_name, index_name in self.head.get("topk", []):
                order = np.argsort(-values[source], axis=1, kind="stable")[:, :k]
                values[value_name] = np.take_along_axis(values[source], order, axis=1)
                values[index_name] = order.astype(np.int32)
            return values

    class Context(object):
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.out = engine, {}, {}, {}

        def _set_shape(self, name, shape):
            low, high = self.engine.head["profile"][name]
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(low) or not all(a <= d <= b for a, d, b in zip(low, shape, high)):
                return False  # outside the optimisation profile (TensorRT logs an error)
            self.shapes[name] = shape
            inputs = [(n, d) for n, d, is_input in self.engine.io if is_input]
            if all(n in self.shapes for n, _ in inputs):
                feeds = dict((n, np.zeros(self.shapes[n], dtypes[d])) for n, d in inputs)
                self.out = dict((n, v.shape) for n, v in self.engine.run(feeds).items())
            return True

        def _shape(self, name):
            return self.shapes.get(name) or self.out[name]

        def _execute(self, pointers):
            feeds = dict((n, read(pointers[n], dtypes[d], self.shapes[n]))
                         for n, d, is_input in self.engine.io if is_input)
            values = self.engine.run(feeds)
            for name, dtype, is_input in self.engine.io:
                if not is_input:
                    write(pointers[name], values[name].astype(dtypes[dtype]))
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
