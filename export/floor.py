"""The graph compatibility floor (JetPack 4.6: TensorRT 8.2, ONNX Runtime 1.10).

Every exported graph must pass ``check_floor``: opset <= 13, IR version <= 7,
none of Loop/NonZero/OneHot/Mod, token tensors int32 at the boundary, ArgMax on
floating-point data only, TopK's K a constant, static shapes except the batch
(first) axis, and ``onnx.checker``. ``floor_problems`` lists every violation.

``operator_counts`` counts a graph's operators for the benchmark: ``Constant``
nodes are not operators (runtimes turn them into weights), and shape-only
operators (``SHAPE_OPS``) cost no kernel on a GPU (TensorRT resolves them when
it builds the engine), so ``kernels`` leaves them out too.
"""
import onnx
from onnx import TensorProto

from edge.errors import NanocapError

MAX_OPSET = 13
MAX_IR_VERSION = 7
FORBIDDEN_OPS = ("Loop", "NonZero", "OneHot", "Mod")
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
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


def _elem_types(model):
    """Tensor name -> element type, from inputs, outputs, value_info, initializers."""
    graph = model.graph
    types = dict((t.name, t.data_type) for t in graph.initializer)
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        types[info.name] = info.type.tensor_type.elem_type
    return types


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


def _node_problems(model):
    problems = []
    graph = model.graph
    constants = set(t.name for t in graph.initializer)
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    types = _elem_types(model)
    for node in graph.node:
        if node.op_type in FORBIDDEN_OPS:
            problems.append("forbidden op %s (%s)" % (node.op_type, node.name))
        if node.domain not in ("", "ai.onnx"):
            problems.append("op %s from non-standard domain %r" % (node.op_type, node.domain))
        if node.op_type == "ArgMax":
            elem = types.get(node.input[0])
            if elem is None:
                problems.append("ArgMax %s input type unknown" % node.name)
            elif elem not in FLOATS:
                problems.append("ArgMax %s runs on %s, not float"
                                % (node.name, TensorProto.DataType.Name(elem)))
        if node.op_type == "TopK" and (len(node.input) < 2 or node.input[1] not in constants):
            problems.append("TopK %s has a computed K (must be a constant)" % node.name)
    return problems


def floor_problems(model_or_path):
    """Every floor violation of a model (list of strings; empty when it passes)."""
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
    return problems + _boundary_problems(model) + _node_problems(inferred)


def check_floor(model_or_path, name="graph"):
    """Raise ``NanocapError`` listing the violations, if any."""
    problems = floor_problems(model_or_path)
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
