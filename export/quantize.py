"""fp16 and int8 variants of the bundle's fp32 graphs.

- fp16 (``to_float16``): every float tensor, weight and Cast target becomes
  float16; the boundary keeps its types (uint8 image in, int32 tokens out,
  float32 state/logprobs through Cast nodes at the edges), so callers feed and
  read exactly what they do for fp32. For TensorRT/CUDA (the Nano's fastest
  precision); ONNX Runtime's CPU provider runs it too (it casts internally).
  Nodes whose op type is in ``FP32_OPS`` (the softmax / argmax / TopK head)
  stay float32, so near-ties between words are decided as in fp32.
- int8 (``quantize_int8``): ONNX Runtime static quantization, QDQ format
  (only standard QuantizeLinear/DequantizeLinear, opset 13, so ONNX Runtime
  1.10 and TensorRT's explicit-precision parser read it), int8 weights
  per channel, uint8 activations calibrated on real images (MinMax). In the
  caption and encoder graphs only the backbone's Conv layers are quantized:
  also quantizing the unrolled decoder's Gemms lowered caption_match from 0.92
  to 0.88 (synthetic-set model after one epoch, 200 test images) and gained no
  speed at batch size 1. Depthwise convolutions stay float too (``keep_depthwise``): MobileNet's
  depthwise layers have per-channel ranges a per-tensor activation scale
  serves badly; keeping them raised caption_match from 0.82 to 0.88 on that
  set (the other tries: entropy/percentile calibration, 256 calibration
  images, per-tensor weights, first/last conv or squeeze-excite convs in
  float: 0.82-0.86). decoder_step quantizes its Gemms except the vocabulary
  projection (``exclude_head``).
"""
import logging
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.calibration import calibration_feeds, calibration_images
from edge.errors import NanocapError
from export.floor import check_floor, force_ir_version
from export.graph_files import describe_io, graph_file

FP32_OPS = ("LogSoftmax", "ArgMax", "ReduceMax", "TopK")
QUANT_OPS = {"caption": ("Conv",), "encoder": ("Conv",), "caption_beam": ("Conv",),
             "decoder_step": ("Gemm", "MatMul")}


# -- fp16 -------------------------------------------------------------------
def _tensor_to_fp16(tensor):
    if tensor.data_type != TensorProto.FLOAT:
        return tensor
    array = numpy_helper.to_array(tensor).astype(np.float16)
    return numpy_helper.from_array(array, tensor.name)


def _rename_inputs(nodes, old, new):
    for node in nodes:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def to_float16(model, keep_fp32_ops=FP32_OPS):
    """A float16 copy of ``model`` with unchanged boundary types (see module doc)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    nodes = list(graph.node)
    for i, init in enumerate(graph.initializer):
        graph.initializer[i].CopyFrom(_tensor_to_fp16(init))
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                attr.t.CopyFrom(_tensor_to_fp16(attr.t))
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    head, tail = [], []
    for info in graph.input:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT:
            _rename_inputs(nodes, info.name, info.name + "__fp16")
            head.append(helper.make_node("Cast", [info.name], [info.name + "__fp16"],
                                         to=TensorProto.FLOAT16, name=info.name + "__to_fp16"))
    for info in graph.output:
        if info.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = info.name + "__fp16"
            for node in nodes:
                node.output[:] = [inner if o == info.name else o for o in node.output]
            _rename_inputs(nodes, info.name, inner)
            tail.append(helper.make_node("Cast", [inner], [info.name], to=TensorProto.FLOAT,
                                         name=info.name + "__to_fp32"))
    body, fp32_alias = [], {}
    for node in nodes:  # topological order: producers before consumers
        body.extend(_wrap_fp32(node, fp32_alias) if node.op_type in keep_fp32_ops else [node])
    del graph.node[:]
    graph.node.extend(head + body + tail)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def _wrap_fp32(node, fp32_alias):
    """Run ``node`` in float32: its data input (input 0) cast up unless an fp32 copy
    exists in ``fp32_alias`` (so LogSoftmax -> ArgMax/ReduceMax stays fp32 all the
    way), its float outputs recorded there and cast down for fp16 consumers.
    ArgMax's and TopK's int64 index outputs are left alone."""
    before, after = [], []
    name = node.input[0]
    if name in fp32_alias:
        node.input[0] = fp32_alias[name]
    else:
        up = "%s__fp32_%s" % (name, node.name)
        before.append(helper.make_node("Cast", [name], [up], to=TensorProto.FLOAT,
                                       name=up + "_cast"))
        node.input[0] = up
    if node.op_type != "ArgMax":
        floats = node.output[:1] if node.op_type == "TopK" else node.output  # not indices
        for j, name in enumerate(floats):
            inner = fp32_alias[name] = "%s__fp32" % name
            node.output[j] = inner
            after.append(helper.make_node("Cast", [inner], [name], to=TensorProto.FLOAT16,
                                          name=inner + "_cast"))
    return before + [node] + after


# -- int8 -------------------------------------------------------------------
def _depthwise_convs(model):
    """Names of grouped (depthwise) Conv nodes."""
    return [n.name for n in model.graph.node if n.op_type == "Conv"
            and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def _head_nodes(model, vocab_size):
    """Names of Gemm/MatMul nodes producing the vocabulary logits (the output layer)."""
    weights = dict((t.name, t.dims) for t in model.graph.initializer)
    names = []
    for node in model.graph.node:
        if node.op_type in ("Gemm", "MatMul"):
            dims = [d for name in node.input[1:2] for d in weights.get(name, [])]
            if vocab_size in dims:
                names.append(node.name)
    return names


def quantize_int8(fp32_path, out_path, feeds, vocab_size, per_channel=True, exclude_head=True,
                  op_types=("Conv", "Gemm", "MatMul"), method="MinMax", exclude=(),
                  keep_depthwise=True):
    """ONNX Runtime static int8 (QDQ) quantization of ``fp32_path`` -> ``out_path``."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    model = onnx.load(fp32_path)
    exclude = list(exclude) + (_head_nodes(model, vocab_size) if exclude_head else [])
    exclude += _depthwise_convs(model) if keep_depthwise else []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice goes to the root logger
    try:
        quantize_static(fp32_path, out_path, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel, op_types_to_quantize=list(op_types),
                        nodes_to_exclude=exclude,
                        calibrate_method=getattr(CalibrationMethod, method),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    finally:
        root.setLevel(level)
    quantized = force_ir_version(onnx.load(out_path))
    for entry in quantized.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > 13:
            entry.version = 13
    onnx.save(quantized, out_path)
    return quantized


# -- bundle -----------------------------------------------------------------
def add_variants(out_dir, meta, precisions, calib_images=None):
    """Write the fp16/int8 variants of every fp32 graph in ``meta['graphs']`` and
    record them there (file, inputs, outputs)."""
    images = None
    for precision in precisions:
        for graph, variants in meta["graphs"].items():
            src = os.path.join(out_dir, variants["fp32"]["file"])
            dst = os.path.join(out_dir, graph_file(graph, precision))
            if precision == "fp16":
                model = force_ir_version(to_float16(onnx.load(src)))
                onnx.save(model, dst)
            elif precision == "int8":
                if images is None:
                    size = (meta["input"]["height"], meta["input"]["width"])
                    images = calibration_images(calib_images, size)
                feeds = calibration_feeds(graph, out_dir, images, meta["max_len"],
                                          meta["vocab"]["start"])
                model = quantize_int8(src, dst, feeds, len(meta["vocab"]["words"]),
                                      op_types=QUANT_OPS[graph])
            else:
                raise NanocapError("no converter for precision %s" % precision)
            check_floor(model, os.path.basename(dst), tensorrt=precision != "int8")
            entry = {"file": os.path.basename(dst)}
            entry.update(describe_io(model))
            variants[precision] = entry
    return meta
