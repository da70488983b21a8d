"""What an ONNX graph's weights may cost a TensorRT engine, and whether it fits a GPU.

An unrolled caption graph shares each decoder weight between its T steps as one
initializer. TensorRT 8.2's ONNX parser does not share: it makes a constant
layer (and for MatMul a transposed copy) per node that uses a weight, so an
engine may hold each step weight once per step (NVIDIA/TensorRT#2090 reports an
unrolled RNN engine 20x its ONNX). ``engine_weights`` measures both figures
from the ONNX bytes alone (protobuf wire level: no ``onnx`` package, so the
device and the benchmark can call it too)::

    from edge.trt.engine_size import engine_weights
    engine_weights("bundle/caption.onnx")
    # {"onnx_bytes": ..., "per_use_bytes": ..., "per_use_fp16_bytes": ...}

``per_use_bytes`` counts every use of an initializer or Constant by a node;
``per_use_fp16_bytes`` the same with float32 weights at 2 bytes (an fp16
engine). ``budget_bytes(total)`` is the share of a GPU's memory one engine's
weights may take: 1/16, i.e. 256 MiB on a 4 GB Jetson Nano, whose memory the
CPU shares (the desktop, the camera, Python, OpenCV, the builder's own copy of
the network and its workspace).
"""
from edge.trt.onnx_wire import _fields, _sub, _varint

BUDGET_SHARE = 16
NANO_MEMORY = 4 << 30
# TensorProto.DataType -> bytes per element (FLOAT, UINT8, INT8, UINT16, INT16,
# INT32, INT64, BOOL, FLOAT16, DOUBLE, UINT32, UINT64)
ITEM_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8}


def budget_bytes(total_memory=NANO_MEMORY):
    """Engine-weight budget of a GPU with ``total_memory`` bytes (256 MiB on a Nano)."""
    return int(total_memory) // BUDGET_SHARE


def _varints(buf, start, end):
    """Packed varints of ``buf[start:end]``."""
    values, pos = [], start
    while pos < end:
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def _tensor(buf, start, end):
    """``(name, element type, element count)`` of a TensorProto."""
    name, elem, count = "", 0, 1
    for number, wire, s, e in _fields(buf, start, end):
        if number == 1:  # dims: one varint, or packed
            for dim in (_varints(buf, s, e) if wire == 2 else [_varint(buf, s)[0]]):
                count *= dim
        elif number == 2 and wire == 0:
            elem = _varint(buf, s)[0]
        elif number == 8 and wire == 2:
            name = bytes(buf[s:e]).decode("utf-8")
    return name, elem, count


def _weights(buf, graph):
    """name -> (element type, count) of the graph's initializers and Constant values."""
    weights = {}
    for s, e in _sub(buf, graph[0], graph[1], 5):
        name, elem, count = _tensor(buf, s, e)
        weights[name] = (elem, count)
    for s, e in _sub(buf, graph[0], graph[1], 1):
        fields = list(_fields(buf, s, e))
        if not any(n == 4 and bytes(buf[a:b]) == b"Constant" for n, w, a, b in fields):
            continue
        outputs = [bytes(buf[a:b]).decode("utf-8") for n, w, a, b in fields if n == 2]
        for n, w, a, b in fields:
            if n == 5:  # AttributeProto: t (5) is the value tensor
                for ts, te in _sub(buf, a, b, 5):
                    weights[outputs[0]] = _tensor(buf, ts, te)[1:]
    return weights


def engine_weights(onnx_path_or_bytes):
    """``{"onnx_bytes", "per_use_bytes", "per_use_fp16_bytes"}`` of one ONNX graph."""
    data = onnx_path_or_bytes
    if not isinstance(data, (bytes, bytearray)):
        with open(data, "rb") as handle:
            data = handle.read()
    buf = memoryview(data)
    graph = _sub(buf, 0, len(buf), 7)[0]
    weights = _weights(buf, graph)
    size = dict((n, c * ITEM_BYTES.get(t, 4)) for n, (t, c) in weights.items())
    half = dict((n, c * (2 if t == 1 else ITEM_BYTES.get(t, 4))) for n, (t, c) in weights.items())
    per_use = per_use_half = 0
    for s, e in _sub(buf, graph[0], graph[1], 1):
        for number, wire, a, b in _fields(buf, s, e):
            name = bytes(buf[a:b]).decode("utf-8") if number == 1 and wire == 2 else None
            if name in size:
                per_use += size[name]
                per_use_half += half[name]
    return {"onnx_bytes": sum(size.values()), "per_use_bytes": per_use,
            "per_use_fp16_bytes": per_use_half}


def describe(name, figures, budget=None):
    """One line: ``caption.onnx  weights 10.1 MiB in the ONNX, 190.4 MiB if copied per
    use (fp16 95.2 MiB): over the Nano's 256 MiB budget`` (``budget``: bytes)."""
    budget = budget_bytes() if budget is None else budget
    mib = 1048576.0
    verdict = ("within" if figures["per_use_fp16_bytes"] <= budget else "OVER")
    return ("%-22s weights %8.1f MiB in the ONNX, %8.1f MiB if copied per use (fp16 %.1f "
            "MiB): %s the Nano's %d MiB engine budget"
            % (name, figures["onnx_bytes"] / mib, figures["per_use_bytes"] / mib,
               figures["per_use_fp16_bytes"] / mib, verdict, budget // (1 << 20)))
