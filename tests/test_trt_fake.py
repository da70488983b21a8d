"""The TensorRT builder and runner against the FAKE tensorrt module
(tests/fake_tensorrt.py), for the 8.x (Nano) and 10.x API generations."""
import json
import os
import shutil
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from edge.trt import build as trt_build, cuda as trt_cuda, runner as trt_runner  # noqa: E402
from edge.trt.onnx_wire import float_image_inputs  # noqa: E402
from edge.bundle import load_bundle  # noqa: E402
from edge.errors import NanocapError  # noqa: E402
from export.__main__ import main as export_main  # noqa: E402
from tests.fake_tensorrt import CalibratorAbort, FakeCuda, make_fake_tensorrt  # noqa: E402
from tests.test_export import write_images  # noqa: E402

GPU = "Fake_GPU_9000"


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp("calib")), 24)


def _calib_cache(bundle, graph, version="10.3.0"):
    digest = bundle.meta["files"][graph + ".onnx"]
    return os.path.join(bundle.directory, "%s.%s.trt%s.calib" % (graph, digest[:16], version))


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    path = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, path)
    return path


def use_fake(monkeypatch, major, **flags):
    fake = make_fake_tensorrt(major, **flags)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(trt_build, "_LOGGER", [])
    cuda = FakeCuda()
    monkeypatch.setattr(trt_cuda, "_CUDA", [cuda])
    return fake, cuda


def _frames(n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, 64, 64, 3)).astype(np.uint8)


def assert_fp16_agreement(tokens, ref_tokens, logprobs, ref_logprobs):
    """What an fp16 engine promises against fp32: most tokens (near-ties may flip)
    and log-probabilities to fp16's resolution; never bit-equality."""
    assert np.mean(tokens == ref_tokens) >= 0.9
    same = tokens == ref_tokens
    np.testing.assert_allclose(logprobs[same], ref_logprobs[same], atol=2e-2)


def _ort(bundle_dir, graph, feeds):
    session = ort.InferenceSession(os.path.join(bundle_dir, graph + ".onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("major", [8, 10])
def test_build_run_and_cache(bundle_copy, monkeypatch, major):
    fake, cuda = use_fake(monkeypatch, major)
    bundle = load_bundle(bundle_copy)
    messages = []
    path = trt_runner.engine_for(bundle, "caption", "fp16", workspace_mb=64, max_batch=4,
                                 log=messages.append)
    version = "8.2.1" if major == 8 else "10.3.0"
    assert os.path.basename(path) == "caption.fp16.trt%s.%s.engine" % (version, GPU)
    side = json.load(open(path + ".json"))
    assert side["onnx_sha256"] == bundle.meta["files"]["caption.onnx"]
    assert side["precision"] == "fp16" and side["outputs"] == ["tokens", "logprobs"]
    with open(path, "rb") as handle:
        assert handle.read(8) == b'{"fake":'  # exactly what TensorRT serialized, no header
    assert os.path.isfile(os.path.join(bundle_copy, "timing.trt%s.%s.cache" % (version, GPU)))
    assert fake.calls.count("build_serialized_network") == 1

    graph = trt_runner.TrtGraph(path)
    frames = _frames(10)  # more than max_batch: run in chunks
    tokens, logprobs = graph({"image": frames})
    ref_tokens, ref_logprobs = _ort(bundle_copy, "caption", {"image": frames})
    assert tokens.dtype == np.int32 and tokens.shape == (10, 8)
    assert_fp16_agreement(tokens, ref_tokens, logprobs, ref_logprobs)
    assert fake.calls.count("execute") == 3 and cuda.depth == 0 and cuda.max_depth == 1
    graph.close()

    # cached: no second build; a changed ONNX (new sha256) is rebuilt
    assert trt_runner.engine_for(bundle, "caption", "fp16", max_batch=4) == path
    assert fake.calls.count("build_serialized_network") == 1
    model = onnx.load(bundle.graph_path("caption"))
    model.doc_string = "edited"
    onnx.save(model, bundle.graph_path("caption"))
    assert trt_runner.engine_for(bundle, "caption", "fp16", max_batch=4) == path
    assert fake.calls.count("build_serialized_network") == 2


@pytest.mark.parametrize("major", [8, 10])
def test_decoder_step_engine(bundle_copy, monkeypatch, major):
    use_fake(monkeypatch, major)
    bundle = load_bundle(bundle_copy)
    path = trt_runner.engine_for(bundle, "decoder_step", "fp32", max_batch=8)
    state = _ort(bundle_copy, "encoder", {"image": _frames(3)})[0]
    token = np.array([1, 5, 7], dtype=np.int32)
    outputs = trt_runner.TrtGraph(path)({"token": token, "state": state})
    ref = _ort(bundle_copy, "decoder_step", {"token": token, "state": state})
    assert [o.shape for o in outputs] == [r.shape for r in ref]
    for got, want in zip(outputs, ref):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_nano_has_no_int8_and_fp16_fallback(bundle_copy, monkeypatch):
    use_fake(monkeypatch, 8, fast_int8=False)
    bundle = load_bundle(bundle_copy)
    messages = []
    path = trt_build.ensure_engine(bundle, "encoder", "int8", log=messages.append)
    assert ".fp16.trt8.2.1." in path and any("no fast INT8" in m for m in messages)
    assert json.load(open(path + ".json"))["requested_precision"] == "int8"
    assert trt_build.ensure_engine(bundle, "encoder", "int8", log=messages.append) == path
    use_fake(monkeypatch, 8, fast_fp16=False, fast_int8=False)
    path = trt_build.ensure_engine(bundle, "encoder", "fp16", log=messages.append)
    assert ".fp32." in path and any("no fast FP16" in m for m in messages)


@pytest.mark.parametrize("graph", ["caption", "decoder_step"])
def test_int8_calibration_writes_then_reads_cache(bundle_copy, monkeypatch, calib_dir, graph):
    fake, _ = use_fake(monkeypatch, 10)
    bundle = load_bundle(bundle_copy)
    path = trt_build.ensure_engine(bundle, graph, "int8", calib_images=calib_dir, log=str)
    assert ".int8.trt10.3.0." in path
    cache = _calib_cache(bundle, graph)
    assert open(cache, "rb").read().startswith(b"FAKE-EntropyCalibration2")
    assert any(c.startswith("calibrated") for c in fake.calls)
    trt_build.ensure_engine(bundle, graph, "int8", force=True, log=str)  # no images needed
    assert "calibration cache read" in fake.calls


def test_int8_without_images_or_cache_is_clear(bundle_copy, monkeypatch):
    use_fake(monkeypatch, 10)
    with pytest.raises(NanocapError, match="calib-images"):
        trt_build.ensure_engine(load_bundle(bundle_copy), "encoder", "int8", log=str)


def test_trt_8_parser_rejects_uint8_without_the_patch(bundle_copy, monkeypatch):
    fake, _ = use_fake(monkeypatch, 8)
    builder = fake.Builder(None)
    network = builder.create_network(1)
    parser = fake.OnnxParser(network, None)
    data = open(os.path.join(bundle_copy, "caption.onnx"), "rb").read()
    assert not parser.parse(data)  # what TensorRT 8.2 does with a uint8 input
    patched, names = float_image_inputs(data)
    assert names == ["image"] and len(patched) == len(data)
    assert onnx.load_from_string(patched).graph.input[0].type.tensor_type.elem_type == 1
    frames = _frames(2)
    session = ort.InferenceSession(patched, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"image": frames.astype(np.float32)})[0],
                                  _ort(bundle_copy, "caption", {"image": frames})[0])
    step = open(os.path.join(bundle_copy, "decoder_step.onnx"), "rb").read()
    assert float_image_inputs(step) == (step, [])  # no uint8 input: unchanged


@pytest.mark.parametrize("major", [8, 10])
def test_trt_backend_through_runner(tiny_bundle, tmp_path, monkeypatch, major):
    """H4's TensorRT backend on the real runner and builder (fake TensorRT below)."""
    from edge.backends import open_backend
    copy = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, copy)
    use_fake(monkeypatch, major)
    frames = list(_frames(3, seed=2))
    for decode in ("greedy", "beam"):
        trt = open_backend(copy, backend="trt", decode=decode)
        ref = open_backend(copy, backend="ort", decode=decode)
        assert [r.text for r in trt.caption(frames)] == [r.text for r in ref.caption(frames)]
        trt.close()


def test_cli_with_fake(bundle_copy, monkeypatch, capsys):
    use_fake(monkeypatch, 8)
    assert export_main(["trt", "--bundle", bundle_copy, "--precision", "fp16",
                        "--graphs", "caption,encoder", "--workspace-mb", "32"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(last) == ["caption", "encoder"]
    assert last["caption"] == "caption.fp16.trt8.2.1.%s.engine" % GPU
    assert export_main(["trt", "--bundle", bundle_copy, "--graphs", "nope"]) == 2


def test_no_tensorrt_is_one_clear_line(bundle_copy, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert export_main(["trt", "--bundle", bundle_copy]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT" in err[0] and "pip install tensorrt" in err[0]
    with pytest.raises(NanocapError, match="TensorRT"):
        trt_runner.TrtGraph(os.path.join(bundle_copy, "x.engine"))


def test_no_gpu_is_one_clear_line(bundle_copy, monkeypatch, capsys):
    fake, _ = use_fake(monkeypatch, 10)

    def no_gpu(logger):
        raise RuntimeError("CUDA initialization failure with error: 100")
    fake.Builder = no_gpu
    assert export_main(["trt", "--bundle", bundle_copy, "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable NVIDIA GPU" in err[0]


def test_export_writes_tensorrt_calibration_cache(tiny_checkpoint, tmp_path, monkeypatch,
                                                   calib_dir):
    """``export onnx --precision int8`` also calibrates TensorRT where it is importable."""
    from export.onnx_export import export_bundle
    fake, _ = use_fake(monkeypatch, 10)
    monkeypatch.setattr("export.onnx_export.tensorrt_present", lambda: True)
    out = str(tmp_path / "b")
    export_bundle(tiny_checkpoint, out, precisions=("fp32", "int8"), calib_images=calib_dir)
    bundle = load_bundle(out)  # engines and caches beside the graphs leave the bundle valid
    for graph in ("caption", "encoder", "decoder_step"):
        assert os.path.isfile(_calib_cache(bundle, graph))


def test_calibration_cache_follows_the_onnx_hash(bundle_copy, monkeypatch, calib_dir):
    """A re-exported graph (new sha256) is calibrated anew, never with old scales."""
    fake, _ = use_fake(monkeypatch, 10)
    bundle = load_bundle(bundle_copy)
    trt_build.ensure_engine(bundle, "encoder", "int8", calib_images=calib_dir, log=str)
    old_cache = _calib_cache(bundle, "encoder")
    model = onnx.load(bundle.graph_path("encoder"))
    model.doc_string = "re-exported"
    onnx.save(model, bundle.graph_path("encoder"))
    from edge.bundle import write_meta
    write_meta(bundle_copy, bundle.meta)
    bundle = load_bundle(bundle_copy)
    del fake.calls[:]
    trt_build.ensure_engine(bundle, "encoder", "int8", calib_images=calib_dir, log=str)
    assert any(c.startswith("calibrated") for c in fake.calls)
    assert "calibration cache read" not in fake.calls
    assert _calib_cache(bundle, "encoder") != old_cache
    assert os.path.isfile(_calib_cache(bundle, "encoder"))


class FailingCuda(FakeCuda):
    """Fake device memory whose host-to-device copy fails on the second batch."""

    def __init__(self):
        FakeCuda.__init__(self)
        self.copies = 0

    def to_device(self, memory, array):
        self.copies += 1
        if self.copies > 1:
            raise RuntimeError("cuMemcpyHtoD failed: an illegal memory access")
        FakeCuda.to_device(self, memory, array)


def test_calibrator_exception_is_one_error_not_an_abort(bundle_copy, monkeypatch, calib_dir,
                                                        capsys):
    """An exception inside get_batch must not escape into TensorRT (which aborts the
    process): it ends calibration and comes back as one NanocapError line, with no
    engine and no calibration cache written."""
    fake, _ = use_fake(monkeypatch, 8)
    monkeypatch.setattr(trt_cuda, "_CUDA", [FailingCuda()])
    code = export_main(["trt", "--bundle", bundle_copy, "--precision", "int8",
                        "--graphs", "encoder", "--calib-images", calib_dir])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 2, err  # the build message, then the error
    assert "INT8 calibration of" in err[-1] and "get_batch: RuntimeError: cuMemcpyHtoD" in err[-1]
    assert not [n for n in os.listdir(bundle_copy) if n.endswith((".calib", ".engine"))]


def test_fake_aborts_like_tensorrt_when_a_callback_raises(monkeypatch):
    """The fake's noexcept trampoline: an escaping exception is a CalibratorAbort
    (a BaseException), which run_cli does not turn into a tidy error."""
    fake, _ = use_fake(monkeypatch, 10)

    class Raw(fake.IInt8EntropyCalibrator2):
        def get_batch_size(self):
            return 8

        def get_batch(self, names):
            raise KeyError(names[0])

        def read_calibration_cache(self):
            return None

    builder = fake.Builder(None)
    network = builder.create_network(0)
    network.inputs.append(type("T", (), {"name": "image", "shape": (-1, 4), "dtype": "float32"}))
    config = builder.create_builder_config()
    config.set_memory_pool_limit("WORKSPACE", 1)
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 4), (1, 4), (8, 4))
    config.add_optimization_profile(profile)
    config.set_flag("INT8")
    config.int8_calibrator = Raw()
    config.set_calibration_profile(builder.create_optimization_profile())
    with pytest.raises(CalibratorAbort, match="get_batch"):
        builder.build_serialized_network(network, config)
    assert not issubclass(CalibratorAbort, Exception)


@pytest.mark.parametrize("major", [8, 10])
def test_corrupt_timing_cache_is_discarded_and_rebuilt(bundle_copy, monkeypatch, major):
    fake, _ = use_fake(monkeypatch, major)
    bundle = load_bundle(bundle_copy)
    version = "8.2.1" if major == 8 else "10.3.0"
    timing = os.path.join(bundle_copy, "timing.trt%s.%s.cache" % (version, GPU))
    open(timing, "wb").write(b"\x00garbage from an interrupted write")
    messages = []
    path = trt_build.ensure_engine(bundle, "encoder", "fp16", log=messages.append)
    assert os.path.isfile(path) and "timing cache rejected" in fake.calls
    assert any("timing cache" in m and "discarded" in m for m in messages), messages
    good = open(timing, "rb").read()
    assert fake.Builder(None).create_builder_config().create_timing_cache(good) is not None
    del fake.calls[:]
    trt_build.ensure_engine(bundle, "encoder", "fp16", force=True, log=messages.append)
    assert "timing cache rejected" not in fake.calls  # the rebuilt one is read back


def test_fp16_build_needs_no_pycuda(bundle_copy, monkeypatch, calib_dir, capsys):
    """export trt for fp16/fp32 names the GPU through the driver, not pycuda; only
    INT8 calibration from images (device copies) asks for pycuda."""
    use_fake(monkeypatch, 8)
    monkeypatch.setattr(trt_cuda, "_CUDA", [])
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    monkeypatch.setattr(trt_cuda, "driver_gpu_name", lambda index=0: "Fake GPU 9000")
    assert export_main(["trt", "--bundle", bundle_copy, "--precision", "fp16",
                        "--graphs", "encoder"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == {"encoder": "encoder.fp16.trt8.2.1.%s.engine" % GPU}
    assert export_main(["trt", "--bundle", bundle_copy, "--precision", "int8",
                        "--graphs", "encoder", "--calib-images", calib_dir]) == 2
    assert "pycuda" in capsys.readouterr().err


@pytest.mark.parametrize("fast_fp16,expected", [(True, "fp16"), (False, "fp32")])
def test_trt_backend_defaults_to_the_fastest_precision(bundle_copy, monkeypatch, fast_fp16,
                                                       expected):
    """``--backend trt`` without ``--precision``: fp16 where the GPU has fast FP16
    (the Nano), fp32 otherwise, and it says which."""
    import io
    from edge.backends import open_backend
    from edge.live_cli import get_parser
    assert get_parser().parse_args(["0", "--bundle", "b"]).precision is None
    use_fake(monkeypatch, 8, fast_fp16=fast_fp16, fast_int8=False)
    log = io.StringIO()
    backend = open_backend(bundle_copy, backend="trt", log=log)
    assert backend.precision == expected
    assert "precision %s (the fastest this GPU supports" % expected in log.getvalue()
    engines = [n for n in os.listdir(bundle_copy) if n.endswith(".engine")]
    assert engines == ["caption.%s.trt8.2.1.%s.engine" % (expected, GPU)]
    backend.close()
    assert open_backend(bundle_copy, backend="ort").precision == "fp32"


def test_unreadable_engine_is_one_clear_line(bundle_copy, monkeypatch):
    """deserialize_cuda_engine returns None (it does not raise) for bytes it cannot
    read; the runner turns that into one line."""
    use_fake(monkeypatch, 8)
    path = os.path.join(bundle_copy, "caption.fp16.trt8.2.1.%s.engine" % GPU)
    open(path, "wb").write(b"not an engine")
    with pytest.raises(NanocapError, match="cannot load engine"):
        trt_runner.TrtGraph(path)


def test_trt_backend_batch_profile_covers_every_input(bundle_copy, monkeypatch):
    """``python -m edge`` with N inputs: the engines' batch profile reaches N (x beam)."""
    from edge.backends import open_backend
    from edge.trt.build import DEFAULT_MAX_BATCH, read_sidecar
    use_fake(monkeypatch, 8)
    inputs = DEFAULT_MAX_BATCH + 4
    trt = open_backend(bundle_copy, backend="trt", precision="fp32", max_batch=inputs)
    frames = list(_frames(inputs, seed=3))
    ref = open_backend(bundle_copy, backend="ort")
    assert [r.tokens for r in trt.caption(frames)] == [r.tokens for r in ref.caption(frames)]
    engines = [f for f in os.listdir(bundle_copy) if f.endswith(".engine")]
    assert engines and all(read_sidecar(os.path.join(bundle_copy, f))["max_batch"] == inputs
                           for f in engines)
    trt.close()
    beam = open_backend(bundle_copy, backend="trt", precision="fp32", decode="beam",
                        beam_size=3, max_batch=inputs)
    sides = [read_sidecar(os.path.join(bundle_copy, f)) for f in os.listdir(bundle_copy)
             if f.endswith(".engine")]
    assert max(s["max_batch"] for s in sides) == 3 * inputs
    beam.close()
