"""ONNX Runtime's TensorRT provider options (edge/ort_trt.py) and how OrtBackend
passes them: the provider itself is not installable here, so a stand-in
``onnxruntime`` module records what a session is given."""
import os
import sys
import types

import pytest

from edge.ort_trt import (building_note, engine_prefix, provider_options, refused_option,
                          trt_options)


def test_options_cache_engines_and_timing_beside_the_bundle(tmp_path):
    options = trt_options(str(tmp_path), "caption", fp16=True)
    assert options == {"trt_engine_cache_enable": "True",
                       "trt_engine_cache_path": str(tmp_path),
                       "trt_engine_cache_prefix": "caption.fp16.ort-trt",
                       "trt_timing_cache_enable": "True",
                       "trt_timing_cache_path": str(tmp_path),
                       "trt_fp16_enable": "True"}
    assert trt_options(str(tmp_path), "encoder", fp16=False)["trt_fp16_enable"] == "False"
    assert engine_prefix("encoder", False) == "encoder.fp32.ort-trt"
    listed = provider_options(["TensorrtExecutionProvider", "CPUExecutionProvider"], options)
    assert listed == [options, {}]


def test_refused_option_and_building_note(tmp_path):
    error = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Invalid TensorRT EP option: "
                         "trt_engine_cache_prefix")
    assert refused_option(error) == "trt_engine_cache_prefix"
    assert refused_option(RuntimeError("CUDA failure 100")) is None
    note = building_note(str(tmp_path), "caption", True)
    assert "builds its fp16 engine for caption.onnx" in note and str(tmp_path) in note
    open(os.path.join(str(tmp_path), "caption.fp16.ort-trt_123_0_sm53.engine"), "w").close()
    assert building_note(str(tmp_path), "caption", True) is None
    assert building_note(str(tmp_path), "caption", False) is not None


def _stand_in_onnxruntime(sessions, refuses=("trt_engine_cache_prefix",
                                             "trt_timing_cache_path")):
    """An ``onnxruntime`` whose TensorRT provider is an ONNX Runtime 1.11's: it refuses
    the options it does not know, as its pybind layer does."""
    import onnxruntime as real
    stand_in = types.ModuleType("onnxruntime")
    stand_in.__dict__.update(dict((k, getattr(real, k)) for k in
                                  ("SessionOptions", "GraphOptimizationLevel", "ExecutionMode")))
    stand_in.get_available_providers = lambda: ["TensorrtExecutionProvider",
                                                "CUDAExecutionProvider", "CPUExecutionProvider"]

    def session(path, sess_options=None, providers=None, provider_options=None):
        sessions.append((os.path.basename(path), list(providers), provider_options))
        for name in refuses:
            if name in provider_options[0]:
                raise RuntimeError("Invalid TensorRT EP option: %s" % name)
        return real.InferenceSession(path, providers=["CPUExecutionProvider"])
    stand_in.InferenceSession = session
    return stand_in


@pytest.mark.parametrize("precision,fp16", [(None, "True"), ("fp32", "False")])
def test_ort_backend_gives_the_tensorrt_provider_its_caches(tiny_bundle, monkeypatch, capsys,
                                                            precision, fp16):
    from edge.backends import open_backend
    sessions = []
    monkeypatch.setitem(sys.modules, "onnxruntime", _stand_in_onnxruntime(sessions))
    backend = open_backend(tiny_bundle, backend="ort", precision=precision)
    assert "TensorRT provider builds its" in capsys.readouterr().err
    names = [s[0] for s in sessions]
    assert names == ["caption.onnx"] * 3  # retried twice, each time without one refused option
    last = sessions[-1][2][0]
    assert sessions[-1][1][0] == "TensorrtExecutionProvider"
    assert last["trt_engine_cache_enable"] == "True" and last["trt_fp16_enable"] == fp16
    assert last["trt_engine_cache_path"] == os.path.abspath(tiny_bundle)
    assert "trt_engine_cache_prefix" not in last and last["trt_timing_cache_enable"] == "True"
    assert sessions[0][2][1:] == [{}, {}]
    backend.close()
