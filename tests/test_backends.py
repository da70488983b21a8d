"""edge.backends: real ONNX Runtime sessions on the tiny exported bundle."""
import shutil
import sys

import numpy as np
import pytest

from edge import backends
from edge.backends import CaptionResult, open_backend
from edge.bundle import load_bundle
from edge.errors import NanocapError


def _frames():
    rng = np.random.RandomState(0)
    return [rng.randint(0, 255, size=(240, 320, 3)).astype(np.uint8),
            rng.randint(0, 255, size=(48, 100, 3)).astype(np.uint8),
            np.zeros((64, 64, 3), np.uint8)]


def test_ort_greedy_any_size(tiny_bundle):
    backend = open_backend(tiny_bundle, backend="ort")
    try:
        results = backend.caption(_frames())
        assert backend.name == "ort" and backend.decode == "greedy"
        assert backend.providers == ["CPUExecutionProvider"]
        assert len(results) == 3 and all(isinstance(r, CaptionResult) for r in results)
        bundle = load_bundle(tiny_bundle)
        for r in results:
            assert r.latency_ms > 0
            assert r.text == bundle.vocab.decode(r.tokens)
            assert len(r.tokens) < bundle.max_len + 1
            assert all(t not in (0, 1, 2) for t in r.tokens)
        assert sorted(backend.last_stages_ms) == ["decode", "inference", "resize"]
        assert backend.last_stages_ms["inference"] > 0
        # one frame at a time gives the same captions as the batch
        assert [backend.caption([f])[0].text for f in _frames()] == [r.text for r in results]
    finally:
        backend.close()


def test_beam_matches_greedy_when_width_one(tiny_bundle):
    """Beam search over encoder + decoder_step with K=1 is greedy decoding."""
    greedy = open_backend(tiny_bundle, backend="ort", decode="greedy")
    beam1 = open_backend(tiny_bundle, backend="ort", decode="beam", beam_size=1)
    beam3 = open_backend(tiny_bundle, backend="ort", decode="beam", beam_size=3)
    frames = _frames()
    assert [r.tokens for r in beam1.caption(frames)] == [r.tokens for r in greedy.caption(frames)]
    out = beam3.caption(frames)
    assert len(out) == 3 and beam3.last_stages_ms["inference"] > 0


def test_auto_is_ort_without_tensorrt(tiny_bundle, monkeypatch):
    monkeypatch.setattr(backends, "tensorrt_present", lambda: False)
    assert open_backend(load_bundle(tiny_bundle)).name == "ort"


def test_missing_onnxruntime_is_one_clear_line(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(NanocapError) as info:
        open_backend(tiny_bundle, backend="ort")
    assert "pip install onnxruntime" in str(info.value)


def test_missing_tensorrt_is_one_clear_line(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "edge.trt.runner", None)
    with pytest.raises(NanocapError) as info:
        open_backend(tiny_bundle, backend="trt")
    assert "TensorRT" in str(info.value)


def test_unknown_precision_and_backend(tiny_bundle):
    with pytest.raises(NanocapError, match="int8"):
        open_backend(tiny_bundle, backend="ort", precision="int8")
    with pytest.raises(NanocapError, match="unknown backend"):
        open_backend(tiny_bundle, backend="tpu")


def test_corrupt_bundle_refused(tiny_bundle, tmp_path):
    copy = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, copy)
    with open(str(tmp_path / "b" / "caption.onnx"), "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(NanocapError, match="checksum"):
        open_backend(copy, backend="ort")


class FakeTrtGraph(object):
    """FAKE TensorRT runner: runs the ONNX graph with ONNX Runtime instead of an engine."""

    def __init__(self, engine_path):
        import onnxruntime
        self.session = onnxruntime.InferenceSession(engine_path,
                                                    providers=["CPUExecutionProvider"])
        self.closed = False

    def __call__(self, feeds):
        return self.session.run(None, feeds)

    def close(self):
        self.closed = True


def test_trt_backend_dispatches_to_runner(tiny_bundle, monkeypatch):
    """The TRT backend asks ``engine_for`` per graph and runs ``TrtGraph`` (faked here)."""
    import types
    asked = []
    fake = types.ModuleType("edge.trt.runner")
    fake.TrtGraph = FakeTrtGraph

    def engine_for(bundle, graph, precision, workspace_mb=1024):
        asked.append((graph, precision))
        return bundle.graph_path(graph, "fp32")     # the fp32 bundle has no fp16 ONNX

    fake.engine_for = engine_for
    fake.open_caption = lambda bundle, precision, **kw: FakeTrtGraph(
        engine_for(bundle, "caption", precision, **kw))
    monkeypatch.setitem(sys.modules, "edge.trt.runner", fake)
    frames = _frames()
    ort = open_backend(tiny_bundle, backend="ort", decode="beam")
    for decode, graphs in (("greedy", ["caption"]), ("beam", ["encoder", "decoder_step"])):
        del asked[:]
        trt = open_backend(tiny_bundle, backend="trt", decode=decode, precision="fp16")
        assert trt.name == "trt" and asked == [(g, "fp16") for g in graphs]
        if decode == "beam":
            assert [r.text for r in trt.caption(frames)] == [r.text for r in ort.caption(frames)]
        else:
            assert len(trt.caption(frames)) == 3
        engines = list(trt.engines.values())
        trt.close()
        assert all(e.closed for e in engines)
