"""Read and patch ONNX model bytes at the protobuf wire level (no ``onnx`` package).

The device has TensorRT and numpy but not necessarily ``onnx``; TensorRT 8.2's
ONNX parser has no uint8 tensors. ``float_image_inputs`` re-declares a graph's
uint8 inputs as float32 in place (same byte length), which is valid because the
nanocap graphs cast their image input to float as their first op.
"""
from edge.errors import NanocapError


def _varint(buf, pos):
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf, start, end):
    """Protobuf wire-format fields of ``buf[start:end]``: (number, wire type,
    value start, value end); for varints the value start is its first byte."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = _varint(buf, pos)
            yield number, wire, pos, nxt
            pos = nxt
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield number, wire, pos, pos + length
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            yield number, wire, pos, pos + size
            pos += size
        else:
            raise NanocapError("not an ONNX model (unexpected protobuf wire type %d)" % wire)


def _sub(buf, start, end, number):
    return [(s, e) for n, w, s, e in _fields(buf, start, end) if n == number and w == 2]


def float_image_inputs(data):
    """ONNX model bytes with every uint8 graph input declared float32 instead.

    ModelProto.graph(7) -> GraphProto.input(11) -> ValueInfoProto.type(2) ->
    TypeProto.tensor_type(1) -> elem_type(1): UINT8 (2) becomes FLOAT (1), one
    byte each, so no length prefix changes. Returns ``(bytes, names patched)``."""
    buf = bytearray(data)
    patched = []
    for gs, ge in _sub(buf, 0, len(buf), 7):
        for vs, ve in _sub(buf, gs, ge, 11):
            name = b"".join(bytes(buf[s:e]) for n, w, s, e in _fields(buf, vs, ve) if n == 1)
            for ts, te in _sub(buf, vs, ve, 2):
                for tts, tte in _sub(buf, ts, te, 1):
                    for n, w, s, e in _fields(buf, tts, tte):
                        if n == 1 and w == 0 and buf[s] == 2 and e == s + 1:
                            buf[s] = 1
                            patched.append(name.decode("utf-8"))
    return bytes(buf), patched
