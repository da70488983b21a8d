"""The fake TensorRT 8.2 parser refuses, node by node, what onnx-tensorrt 8.2
refuses (the table in export/trt_ops.py that the export floor also uses): one
graph per case of issue 18 point 7, the same graphs tests/test_floor.py checks."""
import pytest

pytest.importorskip("onnx")

from tests.fake_tensorrt import make_fake_tensorrt  # noqa: E402
from tests.test_floor import REFUSED, _ok_model  # noqa: E402


def _parse(major, model):
    fake = make_fake_tensorrt(major)
    parser = fake.OnnxParser(fake.Builder(None).create_network(1), None)
    ok = parser.parse(model.SerializeToString())
    return ok, [parser.get_error(i) for i in range(parser.num_errors)]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_tensorrt_8_2_parser_refuses(case):
    build, named = REFUSED[case]
    ok, errors = _parse(8, build())
    assert not ok and any(named in e for e in errors), errors


def test_a_plain_graph_parses_on_every_version():
    for major in (8, 10, 11):
        assert _parse(major, _ok_model()) == (True, [])


def test_bool_gather_elements_imports_from_tensorrt_10():
    """onnx-tensorrt 10.x reads BOOL GatherElements (its importer only refuses UINT8)."""
    build, _ = REFUSED["bool_gather_elements"]
    assert _parse(10, build())[0] and _parse(11, build())[0]
