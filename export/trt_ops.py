"""What TensorRT 8.2's ONNX parser imports, node by node: the one table that both
the export floor (``export/floor.py``) and the fake TensorRT of the tests
(``tests/fake_tensorrt``) check graphs against.

Sources (read on onnx/onnx-tensorrt, branches ``8.0-GA`` and ``8.2-GA``):

- ``docs/operators.md`` (8.2-GA): the op list and the "Supported Types" column;
- ``builtin_op_importers.cpp`` (8.2-GA), asserts stricter than that column:
  GatherElements and Gather ("This version of TensorRT does not support BOOL
  input type for the GatherElements / Gather operator"), Where ("does not
  support BOOL types for Where operators": the values, not the condition),
  TopK ("does not support INT32 input for the TopK operator"; K "must be an
  initializer"), MatMul ("doesn't support INT32 inputs");
- ``onnx2trt_utils.cpp`` ``convertDtype`` (8.2-GA): INT64 is read as INT32,
  DOUBLE as FLOAT; UINT8 is not a TensorRT 8.2 type at all (nanocap's builder
  re-declares the uint8 ``image`` input float32, ``edge/trt/onnx_wire.py``).
- 8.0-GA (JetPack 4.6.0) lists BOOL for Gather/GatherElements in
  ``operators.md`` but its importer asserts the same as 8.2's; the Nano's
  JetPack 4.6.1+ ships 8.2, the version this table is for.
- Cast to BOOL: refused (conservative: TensorRT 8.2 casts through an identity
  layer; nanocap graphs compare instead, which yields BOOL natively).

``OPS[op] = (allowed element types, input positions checked)``; positions
``None`` means every input. An op missing from the table is not imported.
"""
from onnx import TensorProto

FP = ("FLOAT", "FLOAT16")
FPI = FP + ("INT32",)
FP8 = FP + ("INT8",)
ANY = FP + ("INT32", "INT8", "BOOL")
BOOL = ("BOOL",)

OPS = {
    # elementwise arithmetic and comparison (operators.md 8.2-GA)
    "Add": (FPI, None), "Sub": (FPI, None), "Mul": (FPI, None), "Div": (FPI, None),
    "Min": (FPI, None), "Max": (FPI, None), "Neg": (FPI, (0,)), "Pow": (FP, None),
    "Sqrt": (FP, (0,)), "Exp": (FP, (0,)), "Log": (FP, (0,)),
    "Equal": (FPI, None), "Greater": (FPI, None), "Less": (FPI, None),
    "And": (BOOL, None), "Or": (BOOL, None), "Not": (BOOL, None), "Xor": (BOOL, None),
    # activations and reductions
    "Relu": (FP8, (0,)), "Sigmoid": (FP8, (0,)), "Tanh": (FP8, (0,)),
    "HardSigmoid": (FP8, (0,)), "Clip": (FP8, (0,)), "Softmax": (FP, (0,)),
    "LogSoftmax": (FP, (0,)), "ReduceMax": (FP, (0,)), "ReduceMean": (FP, (0,)),
    "ReduceSum": (FP, (0,)), "CumSum": (FP, (0,)), "ArgMax": (FP, (0,)), "ArgMin": (FP, (0,)),
    "TopK": (FP, (0,)),                                 # importer: no INT32; K an initializer
    # linear algebra and convolution
    "MatMul": (FP, (0, 1)), "Gemm": (FP8, (0, 1)), "Conv": (FP8, (0,)),
    "GlobalAveragePool": (FP8, (0,)), "BatchNormalization": (FP, (0,)),
    # data movement (the data input only; shapes and indices are INT32 after conversion)
    "Cast": (ANY, (0,)), "Concat": (ANY, None), "Identity": (ANY, (0,)),
    "Reshape": (ANY, (0,)), "Shape": (ANY, (0,)), "Slice": (ANY, (0,)),
    "Squeeze": (ANY, (0,)), "Unsqueeze": (ANY, (0,)), "Transpose": (ANY, (0,)),
    "Flatten": (FPI + BOOL, (0,)), "Expand": (FPI + BOOL, (0,)), "Split": (FPI + BOOL, (0,)),
    "Gather": (FP8 + ("INT32",), (0,)),                 # importer: no BOOL data
    "GatherElements": (FP8 + ("INT32",), (0,)),         # importer: no BOOL data
    "Where": (FPI, (1, 2)),                             # importer: no BOOL values
    "Constant": (ANY, ()), "ConstantOfShape": (ANY, ()), "Range": (FPI, None),
}
# How TensorRT 8.2 reads the other ONNX element types (convertDtype).
AS_TRT = {"INT64": "INT32", "DOUBLE": "FLOAT"}


def type_name(elem):
    """ONNX element type -> the name TensorRT 8.2 reads it as (``INT64`` -> ``INT32``)."""
    name = TensorProto.DataType.Name(elem) if elem else "UNDEFINED"
    return AS_TRT.get(name, name)


def element_types(model):
    """Tensor name -> ONNX element type, from initializers, Constant nodes, graph
    inputs/outputs and ``value_info`` (run shape inference first to fill it). A
    uint8 graph input counts as FLOAT: the builder declares it so (``onnx_wire``)."""
    graph = model.graph
    types = dict((t.name, t.data_type) for t in graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    for info in list(graph.output) + list(graph.value_info):
        types[info.name] = info.type.tensor_type.elem_type
    for info in graph.input:
        elem = info.type.tensor_type.elem_type
        types[info.name] = TensorProto.FLOAT if elem == TensorProto.UINT8 else elem
    return types


def node_problem(node, types, constants):
    """Why TensorRT 8.2's parser refuses ``node`` (a string), or None when it imports it.

    ``types``: tensor name -> ONNX element type; ``constants``: names of
    initializers and Constant outputs."""
    if node.op_type not in OPS:
        return "%s (%s) is not an op TensorRT 8.2 imports" % (node.op_type, node.name)
    allowed, positions = OPS[node.op_type]
    if positions is None:
        positions = range(len(node.input))
    for i in positions:
        if i >= len(node.input) or not node.input[i]:
            continue
        elem = type_name(types.get(node.input[i], 0))
        if elem not in allowed:
            return ("%s %s input %d is %s (TensorRT 8.2 imports %s)"
                    % (node.op_type, node.name, i, elem, "/".join(allowed)))
    if node.op_type == "Cast":
        to = [a.i for a in node.attribute if a.name == "to"]
        if to and to[0] == TensorProto.BOOL:
            return "Cast %s casts to BOOL (compare instead)" % node.name
    if node.op_type == "TopK" and (len(node.input) < 2 or node.input[1] not in constants):
        return "TopK %s has a computed K (must be a constant)" % node.name
    return None


def graph_problems(model):
    """Every node of ``model`` (shape-inferred) TensorRT 8.2's parser refuses."""
    graph = model.graph
    constants = set(t.name for t in graph.initializer)
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    types = element_types(model)
    problems = [node_problem(node, types, constants) for node in graph.node]
    return [p for p in problems if p]
