"""The JetPack 4.6 graph floor: the exported graphs pass, hand-built violations fail.

``REFUSED`` holds one small graph per node that TensorRT 8.2's ONNX parser
refuses (issue 18, point 7); ``tests/test_trt_node_checks.py`` feeds the same
graphs to the fake TensorRT parser."""
import os

import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from edge.errors import NanocapError  # noqa: E402
from export.floor import check_floor, floor_problems  # noqa: E402

GRAPHS = ("caption.onnx", "encoder.onnx", "decoder_step.onnx")


@pytest.mark.parametrize("name", GRAPHS)
def test_exported_graphs_meet_floor(tiny_bundle, name):
    model = onnx.load(os.path.join(tiny_bundle, name))
    assert floor_problems(model) == []
    assert model.ir_version <= 7
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 13
    ops = set(n.op_type for n in model.graph.node)
    assert not ops & {"Loop", "NonZero", "OneHot", "Mod", "Scan", "If"}
    for info in list(model.graph.input) + list(model.graph.output):
        assert info.type.tensor_type.elem_type != TensorProto.INT64
        dims = info.type.tensor_type.shape.dim
        assert not dims[0].HasField("dim_value")  # dynamic batch
        assert all(d.HasField("dim_value") for d in dims[1:])


def test_caption_boundary_types(tiny_bundle):
    model = onnx.load(os.path.join(tiny_bundle, "caption.onnx"))
    types = dict((i.name, i.type.tensor_type.elem_type)
                 for i in list(model.graph.input) + list(model.graph.output))
    assert types == {"image": TensorProto.UINT8, "tokens": TensorProto.INT32,
                     "logprobs": TensorProto.FLOAT}
    assert [o.name for o in model.graph.output] == ["tokens", "logprobs"]


def _model(nodes, inputs, outputs, opset=13, ir=7, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def _ok_model(**kwargs):
    node = helper.make_node("Relu", ["x"], ["y"])
    return _model([node], [_vi("x", TensorProto.FLOAT, ["N", 4])],
                  [_vi("y", TensorProto.FLOAT, ["N", 4])], **kwargs)


def test_plain_graph_passes():
    assert floor_problems(_ok_model()) == []
    check_floor(_ok_model())


def test_opset_and_ir_too_new():
    problems = floor_problems(_ok_model(opset=17, ir=8))
    assert any("opset 17" in p for p in problems)
    assert any("IR version 8" in p for p in problems)
    with pytest.raises(NanocapError, match="JetPack 4.6"):
        check_floor(_ok_model(opset=17, ir=8), "bad.onnx")


@pytest.mark.parametrize("op", ["NonZero", "Mod"])
def test_forbidden_ops(op):
    if op == "NonZero":
        nodes = [helper.make_node("NonZero", ["x"], ["y"]),
                 helper.make_node("Cast", ["y"], ["z"], to=TensorProto.INT32)]
        model = _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 4])],
                       [_vi("z", TensorProto.INT32, [2, 4])])
    else:
        nodes = [helper.make_node("Mod", ["x", "x"], ["z"])]
        model = _model(nodes, [_vi("x", TensorProto.INT32, ["N", 4])],
                       [_vi("z", TensorProto.INT32, ["N", 4])])
    assert any("forbidden op %s" % op in p for p in floor_problems(model))


def test_argmax_on_int_and_int64_tokens():
    node = helper.make_node("ArgMax", ["x"], ["tokens"], axis=1, keepdims=0)
    model = _model([node], [_vi("x", TensorProto.INT32, ["N", 5])],
                   [_vi("tokens", TensorProto.INT64, ["N"])])
    problems = floor_problems(model)
    assert any("ArgMax" in p and "is INT32" in p for p in problems)
    assert any("token tensor tokens" in p for p in problems)
    assert any("int64" in p for p in problems)


def test_dynamic_non_batch_axis():
    node = helper.make_node("Relu", ["x"], ["y"])
    model = _model([node], [_vi("x", TensorProto.FLOAT, ["N", "W"])],
                   [_vi("y", TensorProto.FLOAT, ["N", "W"])])
    assert any("axis 1 is dynamic" in p for p in floor_problems(model))


def test_topk_k_must_be_constant():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "one", "two"], ["k"]),
             helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)]
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    two = helper.make_tensor("two", TensorProto.INT64, [1], [2])
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 5])],
                   [_vi("v", TensorProto.FLOAT, ["N", 5])], initializers=[one, two])
    assert any("TopK" in p for p in floor_problems(model))
    const = helper.make_tensor("k3", TensorProto.INT64, [1], [3])
    nodes = [helper.make_node("TopK", ["x", "k3"], ["v", "i"], axis=1)]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 5])],
                   [_vi("v", TensorProto.FLOAT, ["N", 3])], initializers=[const])
    assert floor_problems(model) == []


def _refused_bool_gather():
    nodes = [helper.make_node("Equal", ["x", "x"], ["b"]),
             helper.make_node("GatherElements", ["b", "i"], ["g"], axis=1),
             helper.make_node("Cast", ["g"], ["y"], to=TensorProto.FLOAT)]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 3]),
                          _vi("i", TensorProto.INT32, ["N", 3])],
                  [_vi("y", TensorProto.FLOAT, ["N", 3])])


def _refused_int_topk():
    k = helper.make_tensor("k", TensorProto.INT64, [1], [1])
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "y"], axis=1)]
    return _model(nodes, [_vi("x", TensorProto.INT32, ["N", 5])],
                  [_vi("y", TensorProto.INT64, ["N", 1])], initializers=[k])


def _refused_int_argmax():
    nodes = [helper.make_node("ArgMax", ["x"], ["a"], axis=1),
             helper.make_node("Cast", ["a"], ["y"], to=TensorProto.INT32)]
    return _model(nodes, [_vi("x", TensorProto.INT32, ["N", 5])],
                  [_vi("y", TensorProto.INT32, ["N", 1])])


def _refused_bool_where():
    nodes = [helper.make_node("Equal", ["x", "x"], ["b"]),
             helper.make_node("Not", ["b"], ["n"]),
             helper.make_node("Where", ["b", "b", "n"], ["w"]),
             helper.make_node("Cast", ["w"], ["y"], to=TensorProto.FLOAT)]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 3])],
                  [_vi("y", TensorProto.FLOAT, ["N", 3])])


def _refused_cast_to_bool():
    nodes = [helper.make_node("Cast", ["x"], ["b"], to=TensorProto.BOOL),
             helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT)]
    return _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 3])],
                  [_vi("y", TensorProto.FLOAT, ["N", 3])])


def _refused_computed_k():
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "one", "two"], ["k"]),
             helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)]
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    two = helper.make_tensor("two", TensorProto.INT64, [1], [2])
    return _model(nodes, [_vi("x", TensorProto.FLOAT, ["N", 5])],
                  [_vi("v", TensorProto.FLOAT, ["N", 5])], initializers=[one, two])


# name -> (graph builder, what the refusal names)
REFUSED = {"bool_gather_elements": (_refused_bool_gather, "GatherElements"),
           "int32_topk": (_refused_int_topk, "TopK"),
           "int32_argmax": (_refused_int_argmax, "ArgMax"),
           "bool_where_values": (_refused_bool_where, "Where"),
           "cast_to_bool": (_refused_cast_to_bool, "to BOOL"),
           "computed_topk_k": (_refused_computed_k, "computed K")}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_nodes_tensorrt_8_2_refuses_fail_the_floor(case):
    build, named = REFUSED[case]
    problems = floor_problems(build())
    assert any(named in p for p in problems), problems
    with pytest.raises(NanocapError, match="JetPack 4.6 floor"):
        check_floor(build(), case + ".onnx")


def test_a_bool_gather_elements_export_is_refused(tiny_checkpoint, tmp_path, monkeypatch,
                                                 capsys):
    """``export onnx`` writes no bundle whose graph fails the node table: the beam
    graph as it was (GatherElements on the BOOL finished flags) is refused."""
    import torch
    from export import graphs
    from export.__main__ import main as export_main
    real_gather = torch.gather

    def bool_gather(data, dim, index):  # the beam graph before the int32 fix
        if data.dtype == torch.int32 and tuple(data.shape) == tuple(index.shape):
            return real_gather(data.bool(), dim, index).int()
        return real_gather(data, dim, index)
    monkeypatch.setattr(graphs.torch, "gather", bool_gather)
    out = str(tmp_path / "beam")
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out, "--beam", "2",
                        "--max-len", "3", "--no-check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "caption_beam.onnx does not meet" in err[0], err
    assert "GatherElements" in err[0] and "is BOOL" in err[0]
    assert not os.path.exists(out)
