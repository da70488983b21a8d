"""TensorRT 8.2.1 (the Nano), 10.x and 11 (fake, tests/fake_tensorrt/) build and run
every graph of an fc and an att bundle exported with ``--beam 3``; the fake
fails where TensorRT fails (node types, profiles, device buffers, no precision
flags or calibrators in 11)."""
import json
import os
import shutil

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edge.bundle import load_bundle  # noqa: E402
from edge.errors import NanocapError  # noqa: E402
from edge.trt import build as trt_build, runner as trt_runner  # noqa: E402
from export.__main__ import main as export_main  # noqa: E402
from tests.fake_tensorrt import DeviceOverrun, FakeCuda, VERSIONS  # noqa: E402
from tests.test_trt_fake import GPU, assert_fp16_agreement, use_fake  # noqa: E402

GRAPHS = ("caption", "caption_beam", "encoder", "decoder_step")


def _copy(src, tmp_path):
    path = str(tmp_path / os.path.basename(src))
    shutil.copytree(src, path)
    return path


def _frames(n, seed=3):
    return np.random.RandomState(seed).randint(0, 256, (n, 64, 64, 3)).astype(np.uint8)


def _feeds(bundle, graph, frames):
    """Inputs of ``graph`` for ``frames`` (decoder_step: the encoder's outputs, token 1)."""
    if graph != "decoder_step":
        return {"image": frames}
    session = ort.InferenceSession(bundle.graph_path("encoder"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = dict(zip(names, session.run(None, {"image": frames})))
    feeds["token"] = np.ones(len(frames), dtype=np.int32)
    return feeds


@pytest.mark.parametrize("major", [8, 10, 11])
@pytest.mark.parametrize("decoder", ["fc", "att"])
def test_every_graph_builds_and_runs(beam_bundles, tmp_path, monkeypatch, major, decoder):
    fake, _ = use_fake(monkeypatch, major)
    bundle = load_bundle(_copy(beam_bundles[decoder], tmp_path))
    frames = _frames(4)
    for graph in GRAPHS:
        feeds = _feeds(bundle, graph, frames)
        session = ort.InferenceSession(bundle.graph_path(graph), providers=["CPUExecutionProvider"])
        want = session.run(None, feeds)
        for precision in ("fp32", "fp16") if major == 8 else ("fp16",):  # the default
            path = trt_build.ensure_engine(bundle, graph, precision, max_batch=4, log=str)
            assert ".%s.trt%s." % (precision, ".".join(VERSIONS[major].split(".")[:3])) in path
            got = trt_runner.TrtGraph(path)(feeds)
            assert [g.shape for g in got] == [w.shape for w in want], graph
            if graph in ("caption", "caption_beam"):
                if precision == "fp32":
                    np.testing.assert_array_equal(got[0], want[0])
                else:
                    assert np.mean(got[0] == want[0]) >= 0.9
            else:
                np.testing.assert_allclose(got[0], want[0], atol=1e-5 if precision == "fp32"
                                           else 5e-2)


def test_fp16_engines_compute_in_fp16(tiny_bundle, beam_bundles, tmp_path, monkeypatch):
    """An fp16 engine gives the fp16 graph's numbers (not fp32's): a test of fp16
    tokens may only ask for the agreement a real fp16 engine gives."""
    use_fake(monkeypatch, 8)
    bundle = load_bundle(_copy(beam_bundles["fc"], tmp_path))
    frames = _frames(6)
    tokens, logprobs = trt_runner.TrtGraph(trt_build.ensure_engine(bundle, "caption", "fp16",
                                                                   log=str))({"image": frames})
    fp32 = ort.InferenceSession(bundle.graph_path("caption")).run(None, {"image": frames})
    fp16 = ort.InferenceSession(bundle.graph_path("caption", "fp16")).run(None, {"image": frames})
    assert not np.array_equal(logprobs, fp32[1])
    np.testing.assert_allclose(logprobs, fp16[1], atol=1e-3)
    assert_fp16_agreement(tokens, fp32[0], logprobs, fp32[1])


def test_tensorrt_11_builds_fp16_strongly_typed_from_the_fp16_onnx(beam_bundles, tmp_path,
                                                                    monkeypatch):
    """11 has no BuilderFlag.FP16 (setting it was an AttributeError, a traceback)."""
    fake, _ = use_fake(monkeypatch, 11)
    assert not hasattr(fake.BuilderFlag, "FP16") and not hasattr(fake, "IInt8EntropyCalibrator2")
    bundle = load_bundle(_copy(beam_bundles["att"], tmp_path))
    path = trt_build.ensure_engine(bundle, "caption", "fp16", log=str)
    side = json.load(open(path + ".json"))
    assert side["onnx"] == "caption.fp16.onnx" and side["strongly_typed"] is True
    assert side["onnx_sha256"] == bundle.meta["files"]["caption.fp16.onnx"]
    assert json.loads(open(path, "rb").readline())["flags"] == []
    assert trt_build.fastest_precision() == "fp16"
    assert trt_build.ensure_engine(bundle, "caption", "fp16", log=str) == path  # cached
    assert fake.calls.count("build_serialized_network") == 1


def test_tensorrt_11_without_an_fp16_onnx_builds_fp32_and_says_so(tiny_bundle, tmp_path,
                                                                   monkeypatch):
    use_fake(monkeypatch, 11)
    bundle = load_bundle(_copy(tiny_bundle, tmp_path))
    messages = []
    path = trt_build.ensure_engine(bundle, "encoder", "fp16", log=messages.append)
    assert ".fp32.trt11.0.0." in path
    assert any("no fp16 encoder graph" in m and "--precision fp32,fp16" in m for m in messages)


def test_tensorrt_11_int8_is_one_clear_line(tiny_bundle, tmp_path, monkeypatch, capsys):
    use_fake(monkeypatch, 11)
    copy = _copy(tiny_bundle, tmp_path)
    assert export_main(["trt", "--bundle", copy, "--precision", "int8", "--graphs",
                        "encoder"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT 11.0.0 has no INT8 calibration" in err[0]


@pytest.mark.parametrize("major", [8, 11])
def test_profiles_are_checked_in_every_dimension(tiny_bundle, tmp_path, monkeypatch, major):
    """A state of the wrong width is outside the engine's profile: TensorRT refuses
    the shape (set_binding_shape / set_input_shape return False)."""
    use_fake(monkeypatch, major)
    bundle = load_bundle(_copy(tiny_bundle, tmp_path))
    graph = trt_runner.TrtGraph(trt_build.ensure_engine(bundle, "decoder_step", "fp32", log=str))
    width = bundle.graph_entry("decoder_step")["inputs"][1]["shape"][1]
    token = np.ones(2, dtype=np.int32)
    assert graph({"token": token, "state": np.zeros((2, width), np.float32)})[0].shape[0] == 2
    with pytest.raises(NanocapError, match="refused input state"):
        graph({"token": token, "state": np.zeros((2, width + 1), np.float32)})


def test_device_buffers_are_fixed_size(tiny_bundle, tmp_path, monkeypatch):
    """Fake device memory raises when written past its end, as the GPU would fault;
    the runner allocates anew when a call needs more (batch 1, then 5)."""
    _, cuda = use_fake(monkeypatch, 8)
    memory = cuda.alloc(16)
    cuda.to_device(memory, np.zeros(4, np.float32))
    with pytest.raises(DeviceOverrun):
        cuda.to_device(memory, np.zeros(5, np.float32))
    with pytest.raises(DeviceOverrun):
        cuda.to_device(int(memory) + 8, np.zeros(3, np.float32))
    bundle = load_bundle(_copy(tiny_bundle, tmp_path))
    graph = trt_runner.TrtGraph(trt_build.ensure_engine(bundle, "caption", "fp32", log=str))
    for n in (1, 5, 2):
        assert graph({"image": _frames(n)})[0].shape == (n, bundle.max_len)


def test_cli_builds_every_graph_of_a_beam_bundle_on_the_nano(beam_bundles, tmp_path,
                                                             monkeypatch, capsys):
    """``export trt`` on a ``--beam`` bundle: four engines, exit 0 (it was 2: BOOL
    GatherElements in caption_beam.onnx)."""
    use_fake(monkeypatch, 8)
    copy = _copy(beam_bundles["fc"], tmp_path)
    assert export_main(["trt", "--bundle", copy]) == 0
    built = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(built) == sorted(GRAPHS)
    assert built["caption_beam"] == "caption_beam.fp16.trt8.2.1.%s.engine" % GPU


def test_gpu_extra_pins_tensorrt_and_has_pycuda():
    """``pip install -e ".[gpu]"`` gets the runner's pycuda and a TensorRT range the
    fake's API generations cover (10.x and 11.0), not whatever is newest."""
    import ast
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tree = ast.parse(open(os.path.join(root, "setup.py")).read())
    gpu = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
           and getattr(n.targets[0], "id", "") == "GPU"][0]
    tensorrt = [r for r in gpu if r.startswith("tensorrt")]
    assert len(tensorrt) == 1 and "<" in tensorrt[0] and ">=" in tensorrt[0]
    assert any(r.startswith("pycuda") for r in gpu)
