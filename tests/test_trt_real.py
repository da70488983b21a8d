"""Real TensorRT on a real GPU (Jetson or desktop): skipped wherever ``import
tensorrt`` or the GPU (through pycuda) is not available."""
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.trt


@pytest.fixture(scope="module")
def real_trt():
    trt = pytest.importorskip("tensorrt")
    if getattr(trt, "FAKE", False):
        pytest.skip("fake tensorrt module")
    from edge.errors import NanocapError
    from edge.trt.runner import cuda_device
    try:
        cuda_device()
    except NanocapError as exc:
        pytest.skip("no usable GPU: %s" % exc)
    return trt


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_engine_matches_onnxruntime(real_trt, tiny_bundle, tmp_path, precision):
    ort = pytest.importorskip("onnxruntime")
    from edge.bundle import load_bundle
    from edge.trt.runner import TrtGraph, engine_for
    copy = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, copy)
    bundle = load_bundle(copy)
    frames = np.random.RandomState(0).randint(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    path = engine_for(bundle, "caption", precision, workspace_mb=256, max_batch=4)
    assert os.path.isfile(path + ".json")
    graph = TrtGraph(path)
    tokens, logprobs = graph({"image": frames})
    session = ort.InferenceSession(bundle.graph_path("caption"),
                                   providers=["CPUExecutionProvider"])
    ref_tokens, ref_logprobs = session.run(None, {"image": frames})
    assert tokens.dtype == np.int32 and tokens.shape == ref_tokens.shape
    if precision == "fp32":
        np.testing.assert_array_equal(tokens, ref_tokens)
        np.testing.assert_allclose(logprobs, ref_logprobs, atol=1e-3)
    graph.close()
    assert engine_for(bundle, "caption", precision, max_batch=4) == path  # cached
