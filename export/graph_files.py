"""Names and boundary descriptions of a bundle's graph files (shared by the
exporter and the fp16/int8 converter)."""
import onnx

DTYPES = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT32: "int32",
          onnx.TensorProto.INT64: "int64", onnx.TensorProto.FLOAT: "float32",
          onnx.TensorProto.FLOAT16: "float16"}


def graph_file(graph, precision):
    """File name of one graph variant: ``caption.onnx``, ``caption.fp16.onnx``..."""
    return "%s.onnx" % graph if precision == "fp32" else "%s.%s.onnx" % (graph, precision)


def describe_io(model):
    """``{"inputs": [...], "outputs": [...]}`` with name, dtype and shape
    (``"N"`` for the dynamic batch axis) of a graph's boundary tensors."""
    def one(info):
        tensor = info.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N")
                 for d in tensor.shape.dim]
        return {"name": info.name, "dtype": DTYPES.get(tensor.elem_type, str(tensor.elem_type)),
                "shape": shape}
    return {"inputs": [one(i) for i in model.graph.input],
            "outputs": [one(o) for o in model.graph.output]}
