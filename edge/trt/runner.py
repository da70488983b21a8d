"""Run TensorRT engines: one class over the 8.x binding API and the 10.x tensor API.

Used by ``edge.backends.TrtBackend``::

    from edge.trt.runner import TrtGraph, engine_for
    path = engine_for(bundle, "caption", "fp16", workspace_mb=1024)  # built once, cached
    graph = TrtGraph(path)
    tokens, logprobs = graph({"image": frames_uint8_NHWC})  # outputs in graph order
    graph.close()

- ``engine_for(bundle, graph, precision, workspace_mb=..., max_batch=...)`` returns
  the engine path beside the bundle's ONNX, building it on first use (see
  ``edge/trt/build.py`` for naming, caching and the precision fallbacks; on the
  Nano an int8 request gives an fp16 engine).
- ``TrtGraph(engine_path)``: ``__call__(feeds: {name: np.ndarray}) -> [np.ndarray]``
  in the graph's output order (from the engine's JSON sidecar). Feeds are cast
  to the engine's input dtypes (uint8 frames -> float32, see edge.trt.build); any
  batch size works (split into chunks of the engine's max batch).
- Device memory and streams go through ``cuda_device()``: pycuda (as on the
  Jetson) using the GPU's primary context, pushed around every call so the
  runner works from any thread. Nothing happens at import time (no
  ``pycuda.autoinit``); tensorrt and pycuda are imported on first use, and
  their absence is one ``NanocapError`` line naming what to install.
- ``open_caption(bundle, precision)``: the greedy caption as one engine where its
  weights fit the GPU, else encoder + greedy step engines (``greedy_steps``).
- ``TrtGraph.set_shapes`` / ``launch`` run an engine on device pointers (no host
  copies), for drivers that keep tensors on the GPU between engines.
"""
import os

import numpy as np

from edge.errors import NanocapError, say
from edge.trt.build import (DEFAULT_MAX_BATCH, DEFAULT_WORKSPACE_MB, ensure_engine,
                            import_tensorrt, read_sidecar, trt_logger)
from edge.trt.cuda import cuda_device

def engine_for(bundle, graph, precision="fp16", workspace_mb=DEFAULT_WORKSPACE_MB,
               max_batch=DEFAULT_MAX_BATCH, log=None, head=None):
    """Engine path for ``graph`` of ``bundle`` (a ``Bundle`` or its directory),
    built on first use and cached beside the ONNX (``head``: see ``edge.trt.heads``)."""
    if isinstance(bundle, str):
        from edge.bundle import load_bundle
        bundle = load_bundle(bundle)
    return ensure_engine(bundle, graph, precision, workspace_mb=workspace_mb,
                         max_batch=max_batch, log=log, cuda=cuda_device(), head=head)


def open_caption(bundle, precision="fp16", log=None, **build):
    """The greedy caption runner for ``bundle``: the one-call caption engine where it
    fits this GPU, else encoder + greedy step engines (``edge.trt.greedy_steps``).
    Called like a ``TrtGraph``: ``({"image": frames}) -> [tokens, logprobs]``."""
    from edge.trt.greedy_steps import open_caption as choose
    return choose(bundle, precision, cuda_device(), log or say, **build)


class _BindingApi(object):
    """TensorRT 8.x: binding indices, ``set_binding_shape``, ``execute_async_v2``."""

    def __init__(self, trt, engine, context):
        self.trt, self.engine, self.context = trt, engine, context
        self.names = [engine.get_binding_name(i) for i in range(engine.num_bindings)]

    def is_input(self, name):
        return self.engine.binding_is_input(self.names.index(name))

    def dtype(self, name):
        return np.dtype(self.trt.nptype(self.engine.get_binding_dtype(self.names.index(name))))

    def set_input_shape(self, name, shape):
        if not self.context.set_binding_shape(self.names.index(name), tuple(shape)):
            raise NanocapError("TensorRT engine refused input %s of shape %s" % (name, shape))

    def output_shape(self, name):
        return tuple(self.context.get_binding_shape(self.names.index(name)))

    def execute(self, pointers, stream_handle):
        bindings = [int(pointers[n]) for n in self.names]
        return self.context.execute_async_v2(bindings=bindings, stream_handle=stream_handle)


class _TensorApi(object):
    """TensorRT 10.x (and 8.5+): named I/O tensors, ``execute_async_v3``."""

    def __init__(self, trt, engine, context):
        self.trt, self.engine, self.context = trt, engine, context
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def is_input(self, name):
        return self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT

    def dtype(self, name):
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def set_input_shape(self, name, shape):
        if not self.context.set_input_shape(name, tuple(shape)):
            raise NanocapError("TensorRT engine refused input %s of shape %s" % (name, shape))

    def output_shape(self, name):
        return tuple(self.context.get_tensor_shape(name))

    def execute(self, pointers, stream_handle):
        for name in self.names:
            self.context.set_tensor_address(name, int(pointers[name]))
        return self.context.execute_async_v3(stream_handle)


class TrtGraph(object):
    """One deserialized engine; call it with a feed dict, get the outputs as a list."""

    def __init__(self, engine_path, cuda=None):
        trt = import_tensorrt()
        if not os.path.isfile(engine_path):
            raise NanocapError("TensorRT engine not found: %s" % engine_path)
        self.path = engine_path
        self.cuda = cuda or cuda_device()
        side = read_sidecar(engine_path) or {}
        with open(engine_path, "rb") as handle:
            data = handle.read()
        with self.cuda.active():
            self.runtime = trt.Runtime(trt_logger(trt))
            self.engine = self.runtime.deserialize_cuda_engine(data)
            if self.engine is None:
                raise NanocapError("TensorRT cannot load engine %s (built by another TensorRT "
                                   "version or GPU? delete it and it is rebuilt)" % engine_path)
            self.context = self.engine.create_execution_context()
        tensor_api = hasattr(self.engine, "num_io_tensors") and hasattr(self.context,
                                                                        "execute_async_v3")
        self.api = (_TensorApi if tensor_api else _BindingApi)(trt, self.engine, self.context)
        self.inputs = [n for n in self.api.names if self.api.is_input(n)]
        engine_outputs = [n for n in self.api.names if not self.api.is_input(n)]
        wanted = side.get("outputs") or engine_outputs
        self.outputs = [n for n in wanted if n in engine_outputs]
        self.max_batch = int(side.get("max_batch") or DEFAULT_MAX_BATCH)
        self.memory = DeviceBuffers(self.cuda)

    def dtype(self, name):
        """numpy dtype of input or output ``name``."""
        return self.api.dtype(name)

    def set_shapes(self, shapes):
        """Input shapes ``{name: shape}``; returns every output's shape ``{name: shape}``."""
        for name, shape in shapes.items():
            self.api.set_input_shape(name, shape)
        return dict((n, self.api.output_shape(n)) for n in self.api.names
                    if n not in self.inputs)

    def launch(self, pointers):
        """Run on device memory: ``pointers`` {every input and output name: device
        pointer}, after ``set_shapes``; no host copies (inside ``cuda.active()``)."""
        if not self.api.execute(pointers, self.cuda.stream_handle()):
            raise NanocapError("TensorRT execution failed for %s" % self.path)

    def _run(self, feeds):
        pointers, outputs, arrays = {}, [], {}
        for name in self.inputs:
            if name not in feeds:
                raise NanocapError("engine %s needs input %r" % (self.path, name))
            arrays[name] = np.ascontiguousarray(feeds[name], dtype=self.api.dtype(name))
        shapes = self.set_shapes(dict((n, a.shape) for n, a in arrays.items()))
        for name, array in arrays.items():
            pointers[name] = self.memory.get(name, array.nbytes)
            self.cuda.to_device(pointers[name], array)
        for name, shape in shapes.items():
            host = np.empty(shape, dtype=self.api.dtype(name))
            pointers[name] = self.memory.get(name, host.nbytes)
            outputs.append((name, host))
        self.launch(pointers)
        for name, host in outputs:
            self.cuda.to_host(host, pointers[name])
        self.cuda.synchronize()
        by_name = dict(outputs)
        return [by_name[n] for n in self.outputs]

    def __call__(self, feeds):
        """``feeds`` {input name: array [N, ...]} -> outputs [N, ...] in graph order."""
        batch = len(next(iter(feeds.values())))
        with self.cuda.active():
            if batch <= self.max_batch:
                return self._run(feeds)
            parts = [self._run(dict((k, v[i:i + self.max_batch]) for k, v in feeds.items()))
                     for i in range(0, batch, self.max_batch)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.outputs))]

    def close(self):
        """Release device memory and the engine."""
        self.memory = DeviceBuffers(self.cuda)
        self.context = self.engine = self.runtime = None


class DeviceBuffers(object):
    """Named device allocations that are reused, and replaced by a larger one when a
    call needs more bytes than the current one holds (never written past)."""

    def __init__(self, cuda):
        self.cuda, self.held = cuda, {}  # name -> (allocation, capacity in bytes)

    def get(self, name, nbytes):
        memory, capacity = self.held.get(name, (None, 0))
        if memory is None or capacity < nbytes:
            memory = self.cuda.alloc(nbytes)
            self.held[name] = (memory, nbytes)
        return memory
