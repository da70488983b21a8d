"""Greedy captions on a GPU too small for the one-graph caption engine: an encoder
engine and a TopK-headed decoder_step engine, tokens and state kept on the GPU
(edge/trt/greedy_steps.py), with the fake TensorRT (tests/fake_tensorrt/)."""
import os
import shutil

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edge.bundle import load_bundle  # noqa: E402
from edge.trt import cuda as trt_cuda, runner as trt_runner  # noqa: E402
from edge.trt.engine_size import budget_bytes, engine_weights  # noqa: E402
from edge.trt.greedy_steps import CAPTION_ENV, StepCaption, mask_after_end  # noqa: E402
from tests.fake_tensorrt import FakeCuda  # noqa: E402
from tests.test_trt_fake import use_fake  # noqa: E402


def _bundle(beam_bundles, decoder, tmp_path):
    path = str(tmp_path / decoder)
    shutil.copytree(beam_bundles[decoder], path)
    return load_bundle(path)


def _frames(n, seed=5):
    return np.random.RandomState(seed).randint(0, 256, (n, 64, 64, 3)).astype(np.uint8)


def _small_gpu(monkeypatch, bundle):
    """A fake GPU whose engine budget is below the caption graph's per-use weights."""
    held = engine_weights(bundle.graph_path("caption"))["per_use_fp16_bytes"]
    cuda = FakeCuda(total=(held - 1) * 16)
    monkeypatch.setattr(trt_cuda, "_CUDA", [cuda])
    assert budget_bytes(cuda.total_memory()) < held
    return cuda


@pytest.mark.parametrize("major", [8, 11])
@pytest.mark.parametrize("decoder", ["fc", "att"])
def test_step_engines_caption_like_the_caption_graph(beam_bundles, tmp_path, monkeypatch,
                                                      major, decoder):
    fake, _ = use_fake(monkeypatch, major)
    bundle = _bundle(beam_bundles, decoder, tmp_path)
    cuda = _small_gpu(monkeypatch, bundle)
    messages = []
    runner = trt_runner.open_caption(bundle, "fp32", log=messages.append)
    assert isinstance(runner, StepCaption)
    assert any("over this GPU's" in m and "step engines" in m for m in messages), messages
    engines = sorted(n for n in os.listdir(bundle.directory) if n.endswith(".engine"))
    assert [e.split(".")[0] for e in engines] == ["decoder_step_greedy", "encoder"]
    frames = _frames(7)
    want = ort.InferenceSession(bundle.graph_path("caption")).run(None, {"image": frames})
    before = dict(cuda.counts)
    tokens, logprobs = runner({"image": frames})
    np.testing.assert_array_equal(tokens, want[0])
    np.testing.assert_allclose(logprobs, want[1], atol=1e-5)
    # no host round trip per step: frames + start tokens in, tokens + scores out
    assert cuda.counts["to_device"] - before["to_device"] == 2
    assert cuda.counts["to_host"] - before["to_host"] == 2
    assert fake.calls.count("execute") == 1 + bundle.max_len
    tokens16, _ = trt_runner.open_caption(bundle, "fp16", log=str)({"image": frames})
    assert np.mean(tokens16 == want[0]) >= 0.9


def test_a_caption_engine_that_fits_stays_one_call(beam_bundles, tmp_path, monkeypatch):
    fake, _ = use_fake(monkeypatch, 8)
    bundle = _bundle(beam_bundles, "fc", tmp_path)
    monkeypatch.setattr(trt_cuda, "_CUDA", [FakeCuda(total=4 << 30)])  # a Nano, tiny model
    runner = trt_runner.open_caption(bundle, "fp16", log=str)
    assert isinstance(runner, trt_runner.TrtGraph)
    del fake.calls[:]
    runner({"image": _frames(3)})
    assert fake.calls.count("execute") == 1
    monkeypatch.setenv(CAPTION_ENV, "steps")
    assert isinstance(trt_runner.open_caption(bundle, "fp16", log=str), StepCaption)


def test_the_trt_backend_takes_the_steps_on_a_small_gpu(beam_bundles, tmp_path, monkeypatch,
                                                        capsys):
    from edge.backends import open_backend
    use_fake(monkeypatch, 8)
    bundle = _bundle(beam_bundles, "att", tmp_path)
    _small_gpu(monkeypatch, bundle)
    frames = list(_frames(3, seed=9))
    trt = open_backend(bundle.directory, backend="trt", precision="fp32")
    assert "step engines" in capsys.readouterr().err
    ref = open_backend(bundle.directory, backend="ort")
    assert [r.text for r in trt.caption(frames)] == [r.text for r in ref.caption(frames)]
    trt.close()


def test_mask_after_end_matches_the_graph_rule():
    tokens = np.array([[5, 2, 7, 2], [2, 6, 6, 6], [4, 4, 4, 4]], dtype=np.int32)
    scores = -np.arange(12, dtype=np.float32).reshape(3, 4)
    masked, masked_scores = mask_after_end(tokens, scores, 2)
    np.testing.assert_array_equal(masked, [[5, 2, 0, 0], [2, 0, 0, 0], [4, 4, 4, 4]])
    assert masked_scores[0, 2] == 0 and masked_scores[0, 1] == -1 and masked_scores[2, 3] == -11


def test_export_trt_builds_the_step_engines_where_the_caption_would_not_fit(
        beam_bundles, tmp_path, monkeypatch, capsys):
    import json
    from export.__main__ import main as export_main
    use_fake(monkeypatch, 8)
    bundle = _bundle(beam_bundles, "fc", tmp_path)
    _small_gpu(monkeypatch, bundle)
    assert export_main(["trt", "--bundle", bundle.directory, "--graphs", "caption"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "building the encoder and greedy step engines instead" in out[0]
    assert sorted(json.loads(out[-1])) == ["decoder_step_greedy", "encoder"]
    assert not [n for n in os.listdir(bundle.directory) if n.startswith("caption.")
                and n.endswith(".engine")]
