"""Real TensorRT on a real GPU (a Jetson or a desktop), with only ``edge/`` installed.

No torch, no onnx: the bundle comes from an exported directory named by the
environment variable ``NANOCAP_TRT_BUNDLE`` (copied to a temporary folder, so
the engines built here do not land in it). Skipped, with the reason, where the
variable is unset, ``import tensorrt`` fails, or no GPU answers. On a Jetson::

    NANOCAP_TRT_BUNDLE=$PWD/bundle python3 -m pytest -q -rs -m trt tests/test_trt_real.py

A Nano builds one engine per graph and precision here: a few minutes each.
ONNX Runtime, where installed, is the reference for fp32 tokens; without it the
fp16 engine is compared with the fp32 one.
"""
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.trt
BUNDLE_ENV = "NANOCAP_TRT_BUNDLE"


@pytest.fixture(scope="module")
def real_trt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT's Python bindings are not installed")
    if getattr(trt, "FAKE", False):
        pytest.skip("fake tensorrt module")
    from edge.errors import NanocapError
    from edge.trt.cuda import cuda_device
    try:
        cuda_device()
    except NanocapError as exc:
        pytest.skip("no usable GPU: %s" % exc)
    return trt


@pytest.fixture(scope="module")
def bundle_dir(real_trt, tmp_path_factory):
    """A copy of the bundle named by $NANOCAP_TRT_BUNDLE (its graphs and metadata)."""
    source = os.environ.get(BUNDLE_ENV)
    if not source:
        pytest.skip("set %s to an exported bundle directory to run the real TensorRT tests"
                    % BUNDLE_ENV)
    from edge.bundle import load_bundle
    bundle = load_bundle(source)  # checks every sha256 first
    copy = str(tmp_path_factory.mktemp("trt") / "bundle")
    os.makedirs(copy)
    for name in list(bundle.meta["files"]) + ["nanocap.json"]:
        shutil.copy(os.path.join(source, name), copy)
    return copy


def _frames(bundle, n=3):
    h, w = bundle.input_size
    return np.random.RandomState(0).randint(0, 256, (n, h, w, 3)).astype(np.uint8)


def _ort_tokens(bundle, frames):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(bundle.graph_path("caption"),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"image": frames})[0]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_builds_runs_and_is_cached(bundle_dir, precision):
    from edge.bundle import load_bundle
    from edge.trt.build import read_sidecar
    from edge.trt.runner import TrtGraph, engine_for
    bundle = load_bundle(bundle_dir)
    frames = _frames(bundle, 5)  # more than max_batch 4: run in two chunks
    path = engine_for(bundle, "caption", precision, workspace_mb=256, max_batch=4)
    side = read_sidecar(path)
    # caption.onnx, or on TensorRT 11 (strongly typed) caption.fp16.onnx for fp16
    assert side["onnx_sha256"] == bundle.meta["files"][side["onnx"]]
    graph = TrtGraph(path)
    tokens, logprobs = graph({"image": frames})
    graph.close()
    assert tokens.dtype == np.int32 and tokens.shape == (5, bundle.max_len)
    assert logprobs.shape == tokens.shape and np.all(logprobs <= 1e-3)
    assert tokens.min() >= 0 and tokens.max() < len(bundle.vocab.itos)
    reference = _ort_tokens(bundle, frames)
    if precision == "fp32" and reference is not None:
        np.testing.assert_array_equal(tokens, reference)
    if precision == "fp16":
        fp32 = TrtGraph(engine_for(bundle, "caption", "fp32", workspace_mb=256, max_batch=4))
        ref = reference if reference is not None else fp32({"image": frames})[0]
        fp32.close()
        assert np.mean(tokens == ref) >= 0.8  # fp16 may flip near-ties, not whole captions
    assert engine_for(bundle, "caption", precision, max_batch=4) == path  # cached


def test_real_step_engines_caption_like_the_caption_engine(bundle_dir, monkeypatch):
    """The Nano's greedy path (encoder + TopK-headed decoder_step, tokens on the GPU)
    gives the caption engine's tokens at fp32."""
    from edge.bundle import load_bundle
    from edge.trt.greedy_steps import CAPTION_ENV, StepCaption
    from edge.trt.runner import open_caption
    bundle = load_bundle(bundle_dir)
    frames = _frames(bundle, 3)
    monkeypatch.setenv(CAPTION_ENV, "graph")
    want = open_caption(bundle, "fp32", workspace_mb=256, max_batch=4)({"image": frames})
    monkeypatch.setenv(CAPTION_ENV, "steps")
    steps = open_caption(bundle, "fp32", workspace_mb=256, max_batch=4)
    assert isinstance(steps, StepCaption)
    tokens, logprobs = steps({"image": frames})
    np.testing.assert_array_equal(tokens, want[0])
    np.testing.assert_allclose(logprobs, want[1], atol=1e-3)
    steps.close()


def test_backend_default_precision_is_the_fastest(bundle_dir, real_trt):
    """``--backend trt`` without ``--precision``: fp16 where the GPU has fast FP16."""
    import io
    from edge.backends import open_backend
    from edge.trt.build import import_tensorrt, new_builder
    fast16 = new_builder(import_tensorrt()).platform_has_fast_fp16
    log = io.StringIO()
    backend = open_backend(bundle_dir, backend="trt", log=log)
    try:
        assert backend.precision == ("fp16" if fast16 else "fp32")
        assert "TensorRT: precision %s" % backend.precision in log.getvalue()
        bundle = backend.bundle
        results = backend.caption(list(_frames(bundle, 2)))
        assert len(results) == 2 and all(isinstance(r.text, str) for r in results)
    finally:
        backend.close()


def test_corrupt_timing_cache_is_rebuilt_on_real_tensorrt(bundle_dir, real_trt):
    from edge.bundle import load_bundle
    from edge.trt.build import ensure_engine, safe_name, trt_version
    from edge.trt.cuda import gpu_name
    bundle = load_bundle(bundle_dir)
    timing = os.path.join(bundle_dir, "timing.trt%s.%s.cache"
                          % (trt_version(real_trt), safe_name(gpu_name())))
    with open(timing, "wb") as handle:
        handle.write(b"\x00not a timing cache")
    messages = []
    path = ensure_engine(bundle, "encoder", "fp32", workspace_mb=256, max_batch=2,
                         force=True, log=messages.append)
    assert os.path.isfile(path)
    with open(timing, "rb") as handle:
        assert handle.read() != b"\x00not a timing cache"
