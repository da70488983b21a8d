"""Tiny ONNX graphs that measure this machine's ceilings for the benchmark.

``matvec_model(rows, cols)``: ``x float32 [1, rows] -> x @ W``, ``W [rows, cols]``
random fp32 weights held in the graph, i.e. one batch-1 decoder step's weights
streamed through ONNX Runtime's own MatMul and nothing else. Timed by
``edge.bench.system.ort_matvec_gbs``, it gives the bytes per second a batch-1
caption's decoder can read its weights at here: the memory side of the CPU
roofline (``edge.bench.roofline.cpu_rows``).
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


def matvec_model(rows, cols, seed=0):
    """Serialized ONNX model (bytes) of ``y [1, cols] = x [1, rows] @ W [rows, cols]``."""
    weight = np.random.RandomState(seed).standard_normal((int(rows), int(cols))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "matvec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, int(rows)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, int(cols)])],
        initializer=[numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model.SerializeToString()


def step_matrix_shape(hidden, step_bytes):
    """``(rows, cols)`` of an fp32 matrix with ``hidden`` rows holding about
    ``step_bytes`` bytes: a decoder step's weights as one matrix-vector product."""
    rows = max(1, int(hidden))
    return rows, max(1, int(round(float(step_bytes) / 4.0 / rows)))
