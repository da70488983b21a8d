"""The graph compatibility floor (JetPack 4.6: TensorRT 8.2, ONNX Runtime 1.10).

Every exported graph must pass ``check_floor``: opset <= 13, IR version <= 7,
none of Loop/NonZero/OneHot/Mod, token tensors int32 at the boundary, static
shapes except the batch (first) axis, ``onnx.checker``, and node by node only
the ops and input element types TensorRT 8.2's ONNX parser imports (the table
in ``export/trt_ops.py``, cited from onnx-tensorrt 8.0-GA/8.2-GA: no BOOL
GatherElements, ArgMax/TopK on float only, TopK's K a constant, ...).
``floor_problems`` lists every violation.

``operator_counts`` counts a graph's operators for the benchmark: ``Constant``
nodes are not operators (runtimes turn them into weights), and shape-only
operators (``SHAPE_OPS``) cost no kernel on a GPU (TensorRT resolves them when
it builds the engine), so ``kernels`` leaves them out too.
"""
import onnx
from onnx import TensorProto

from edge.errors import NanocapError
from export.trt_ops import graph_problems

MAX_OPSET = 13
MAX_IR_VERSION = 7
FORBIDDEN_OPS = ("Loop", "NonZero", "OneHot", "Mod")
# Boundary tensors that carry token ids must be int32 (TensorRT has no int64).
TOKEN_NAMES = ("tokens", "token")


SHAPE_OPS = ("Shape", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "ConstantOfShape",
             "Identity")


def _as_model(model_or_path):
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    return onnx.load(model_or_path)


def default_opset(model):
    """The model's opset for the default ("" / ai.onnx) domain."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _boundary_problems(model):
    problems = []
    for info in list(model.graph.input) + list(model.graph.output):
        tensor = info.type.tensor_type
        dims = list(tensor.shape.dim)
        for axis, dim in enumerate(dims):
            if axis > 0 and not dim.HasField("dim_value"):
                problems.append("%s axis %d is dynamic (only the batch may be)"
                                % (info.name, axis))
        if info.name in TOKEN_NAMES and tensor.elem_type != TensorProto.INT32:
            problems.append("token tensor %s is %s, not int32"
                            % (info.name, TensorProto.DataType.Name(tensor.elem_type)))
        if tensor.elem_type == TensorProto.INT64:
            problems.append("boundary tensor %s is int64" % info.name)
    return problems


def _node_problems(model, tensorrt):
    """Forbidden ops, foreign domains and, with ``tensorrt``, every node TensorRT 8.2
    would not import (op and input element types: ``export.trt_ops``)."""
    problems = []
    for node in model.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            problems.append("forbidden op %s (%s)" % (node.op_type, node.name))
        if node.domain not in ("", "ai.onnx"):
            problems.append("op %s from non-standard domain %r" % (node.op_type, node.domain))
    return problems + (graph_problems(model) if tensorrt else [])


def floor_problems(model_or_path, tensorrt=True):
    """Every floor violation of a model (list of strings; empty when it passes).

    ``tensorrt=False`` skips the node table, for graphs TensorRT never builds:
    the int8 (QDQ, uint8 activations) variants are ONNX Runtime's; TensorRT
    builds INT8 from the fp32 graph with its own calibration."""
    model = _as_model(model_or_path)
    problems = []
    if model.ir_version > MAX_IR_VERSION:
        problems.append("IR version %d > %d" % (model.ir_version, MAX_IR_VERSION))
    opset = default_opset(model)
    if opset > MAX_OPSET:
        problems.append("opset %d > %d" % (opset, MAX_OPSET))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        problems.append("onnx.checker: %s" % str(exc).splitlines()[0])
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference failing is reported through types below
        inferred = model
    return problems + _boundary_problems(model) + _node_problems(inferred, tensorrt)


def check_floor(model_or_path, name="graph", tensorrt=True):
    """Raise ``NanocapError`` listing the violations, if any (``tensorrt``: as
    ``floor_problems``)."""
    problems = floor_problems(model_or_path, tensorrt)
    if problems:
        raise NanocapError("%s does not meet the JetPack 4.6 floor: %s"
                           % (name, "; ".join(problems)))


def force_ir_version(model, version=MAX_IR_VERSION):
    """Lower ``model.ir_version`` to ``version`` (in place) when it is higher.

    Safe for opset <= 13 graphs: IR 7 already covers everything they use.
    """
    if model.ir_version > version:
        model.ir_version = version
    return model


def operator_counts(model_or_path):
    """``{"operators": n, "kernels": n, "by_type": {op: n}}`` of a graph: every
    node but ``Constant``; ``kernels`` also leaves out ``SHAPE_OPS``."""
    model = _as_model(model_or_path)
    by_type = {}
    for node in model.graph.node:
        if node.op_type != "Constant":
            by_type[node.op_type] = by_type.get(node.op_type, 0) + 1
    total = sum(by_type.values())
    return {"operators": total, "by_type": by_type,
            "kernels": total - sum(n for op, n in by_type.items() if op in SHAPE_OPS)}
