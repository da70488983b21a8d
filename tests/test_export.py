"""Bundle export: metadata round trip, parity with PyTorch, checksums, the CLI,
and identical tokens under ONNX Runtime 1.10 on Python 3.6 (when installed)."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edge.bundle import load_bundle  # noqa: E402
from edge.errors import NanocapError  # noqa: E402
from export.__main__ import main as export_main  # noqa: E402
from export.onnx_export import export_bundle  # noqa: E402
from train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from train.decoding import greedy_search  # noqa: E402

VENV36 = os.environ.get("NANOCAP_PY36", "/work/venv36/bin/python")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, size=64, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def torch_greedy(model, images, vocab, max_len):
    """PyTorch greedy decoding (train.decoding) of uint8 images -> (tokens, logprobs)."""
    with torch.no_grad():
        state = model.init_state(model.encode(images))
    return greedy_search(model.step, state, vocab.start_id, vocab.end_id, max_len)


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_bundle_metadata_round_trip(tiny_bundle, tiny_checkpoint):
    bundle = load_bundle(tiny_bundle)
    model, vocab, _ = load_checkpoint(tiny_checkpoint)
    meta = bundle.meta
    assert bundle.vocab.itos == vocab.itos
    assert bundle.max_len == model.config.max_len == 8
    assert bundle.input_size == (64, 64)
    assert meta["input"]["layout"] == "NHWC" and meta["input"]["channels"] == "BGR"
    assert meta["model"]["hidden"] == 32
    assert meta["provenance"]["opset"] == 13 and meta["provenance"]["torch"] == torch.__version__
    assert sorted(meta["files"]) == ["caption.onnx", "decoder_step.onnx", "encoder.onnx"]
    caption = bundle.graph_entry("caption")
    assert caption["inputs"] == [{"name": "image", "dtype": "uint8", "shape": ["N", 64, 64, 3]}]
    assert caption["outputs"] == [{"name": "tokens", "dtype": "int32", "shape": ["N", 8]},
                                  {"name": "logprobs", "dtype": "float32", "shape": ["N", 8]}]
    step = bundle.graph_entry("decoder_step")
    assert [(i["name"], i["dtype"], i["shape"]) for i in step["inputs"]] == [
        ("token", "int32", ["N"]), ("state", "float32", ["N", 32])]
    assert [(o["name"], o["shape"]) for o in step["outputs"]] == [
        ("logprobs", ["N", len(vocab)]), ("state_out", ["N", 32])]
    assert bundle.precisions("caption") == ["fp32"]


def test_graphs_match_pytorch(tiny_bundle, tiny_checkpoint):
    model, vocab, _ = load_checkpoint(tiny_checkpoint)
    images = _images(3)
    tokens, scores = torch_greedy(model, torch.from_numpy(images), vocab, 8)
    out_tokens, out_scores = _session(os.path.join(tiny_bundle, "caption.onnx")).run(
        None, {"image": images})
    assert out_tokens.dtype == np.int32 and out_tokens.shape == (3, 8)
    np.testing.assert_array_equal(out_tokens, tokens.numpy())
    np.testing.assert_allclose(out_scores, scores.numpy(), atol=1e-4)

    state = _session(os.path.join(tiny_bundle, "encoder.onnx")).run(None, {"image": images})[0]
    with torch.no_grad():
        ref_state = model.init_state(model.encode(torch.from_numpy(images)))
        token = np.array([vocab.start_id, 5, 7], dtype=np.int32)
        ref_lp, ref_next = model.step(torch.from_numpy(token), ref_state)
    np.testing.assert_allclose(state, ref_state.numpy(), atol=1e-4)
    lp, nxt = _session(os.path.join(tiny_bundle, "decoder_step.onnx")).run(
        None, {"token": token, "state": state})
    np.testing.assert_allclose(lp, ref_lp.numpy(), atol=1e-4)
    np.testing.assert_allclose(nxt, ref_next.numpy(), atol=1e-4)


def test_tokens_are_zero_after_end(tiny_checkpoint, tmp_path):
    """A model that prefers <end> after one word: tokens and logprobs are 0 after it."""
    model, vocab, payload = load_checkpoint(tiny_checkpoint)
    word = vocab.stoi["circle"]
    with torch.no_grad():
        model.out.bias.zero_()
        model.out.weight.zero_()
        model.out.bias[word] = 5.0
        # <end> wins once the embedding of "circle" has gone through the GRU input:
        model.embed.weight.zero_()
        model.rnn.weight_hh_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
        model.init_state_proj.weight.zero_()
        model.init_state_proj.bias.fill_(-1.0)
        model.embed.weight[word, 0] = 10.0
        model.rnn.weight_ih_l0.zero_()
        model.rnn.bias_ih_l0.zero_()
        hidden = model.config.hidden
        model.rnn.weight_ih_l0[2 * hidden, 0] = 1.0  # n gate of unit 0 follows it
        model.out.weight[vocab.end_id, 0] = 100.0
    ckpt = str(tmp_path / "end.pt")
    save_checkpoint(ckpt, model, vocab)
    export_bundle(ckpt, str(tmp_path / "b"), max_len=5)
    tokens, scores = _session(str(tmp_path / "b" / "caption.onnx")).run(
        None, {"image": _images(2)})
    assert tokens.tolist() == [[word, vocab.end_id, 0, 0, 0]] * 2
    assert np.all(scores[:, 2:] == 0) and np.all(scores[:, 0] < 0) and np.all(scores <= 0)
    ref_tokens, _ = torch_greedy(model, torch.from_numpy(_images(2)), vocab, 5)
    np.testing.assert_array_equal(tokens, ref_tokens.numpy())


def test_corrupted_or_edited_file_is_refused(tiny_bundle, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(tiny_bundle, copy)
    load_bundle(copy)  # intact copy loads
    path = os.path.join(copy, "decoder_step.onnx")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(NanocapError, match="checksum"):
        load_bundle(copy)
    os.remove(path)
    with pytest.raises(NanocapError, match="missing"):
        load_bundle(copy)


def test_cli_export_and_errors(tiny_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out,
                        "--max-len", "4"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["max_len"] == 4
    assert load_bundle(out).graph_entry("caption")["outputs"][0]["shape"] == ["N", 4]
    assert export_main(["onnx", "--checkpoint", str(tmp_path / "nope.pt"),
                        "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint not found" in err[0]
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out,
                        "--precision", "fp8"]) == 2
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", tiny_checkpoint]) == 2
    assert "not a directory" in capsys.readouterr().err


def run_on_py36(model_path, images, tmp_path):
    """Tokens of ``model_path`` on ``images`` under Python 3.6 + onnxruntime 1.10."""
    np.save(str(tmp_path / "images.npy"), images)
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              "assert sys.version_info[:2] == (3, 6), sys.version\n"
              "assert ort.__version__.startswith('1.10'), ort.__version__\n"
              "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
              "t, lp = s.run(None, {'image': np.load(sys.argv[2])})\n"
              "np.save(sys.argv[3], t)\n")
    out = str(tmp_path / "tokens36.npy")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([VENV36, "-c", script, model_path, str(tmp_path / "images.npy"), out],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


needs_py36 = pytest.mark.skipif(not os.path.exists(VENV36),
                                reason="no Python 3.6 venv with onnxruntime 1.10")


@needs_py36
def test_same_tokens_under_onnxruntime_1_10_on_python36(tiny_bundle, tmp_path):
    images = _images(4, seed=3)
    path = os.path.join(tiny_bundle, "caption.onnx")
    old = run_on_py36(path, images, tmp_path)
    now = _session(path).run(None, {"image": images})[0]
    assert old.dtype == np.int32
    np.testing.assert_array_equal(old, now)


def test_export_with_data_stores_scores(tiny_checkpoint, tmp_path, monkeypatch):
    """``--data``: each precision is scored by ``train eval`` into nanocap.json."""
    from train import metrics
    from train.synth import write_dataset
    monkeypatch.setattr(metrics, "find_java", lambda: None)  # fast: no METEOR process
    data_dir = str(tmp_path / "synth")
    write_dataset(data_dir, 20, size=64)
    out = str(tmp_path / "scored")
    meta = export_bundle(tiny_checkpoint, out, data=os.path.join(data_dir, "dataset.json"),
                         split="val", score_limit=3)
    scores = meta["scores"]["fp32"]
    assert scores["split"] == "val" and scores["images"] <= 3
    assert 0.0 <= scores["CIDEr"] and 0.0 <= scores["Bleu_4"] <= 1.0
    assert load_bundle(out).meta["scores"] == meta["scores"]


def test_beam_graph_matches_pytorch_beam_search(tiny_checkpoint, tmp_path):
    """``--beam 3``: beam search in one graph, within the floor, equal to train.decoding."""
    from export.floor import floor_problems
    from train.decoding import beam_search
    out = str(tmp_path / "beam")
    meta = export_bundle(tiny_checkpoint, out, beam=3, max_len=6)
    assert meta["beam"] == {"size": 3, "length_norm": 0.7}
    entry = load_bundle(out).graph_entry("caption_beam")
    assert entry["outputs"] == [{"name": "tokens", "dtype": "int32", "shape": ["N", 6]},
                                {"name": "score", "dtype": "float32", "shape": ["N"]}]
    path = os.path.join(out, "caption_beam.onnx")
    assert floor_problems(path) == []
    model, vocab, _ = load_checkpoint(tiny_checkpoint)
    images = _images(3, seed=4)
    with torch.no_grad():
        state = model.init_state(model.encode(torch.from_numpy(images)))
    ref_tokens, ref_scores = beam_search(model.step, state, vocab.start_id, vocab.end_id, 6,
                                         beam_size=3, length_norm=0.7)
    tokens, scores = _session(path).run(None, {"image": images})
    np.testing.assert_array_equal(tokens, ref_tokens.numpy())
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4)
    if os.path.exists(VENV36):
        np.testing.assert_array_equal(run_on_py36(path, images, tmp_path), tokens)


def _memory_model():
    """A GRU captioner with one memory tensor (the attention decoder's calling
    shape): ``regions [N, 2, H]`` made once from the features, added (mean) to
    the state at every step."""
    from train.model import Captioner, ModelConfig

    class MemoryCaptioner(Captioner):
        memory_names = ("regions",)

        def init_decoder(self, features):
            return self.init_state(features), (features[:, :64].reshape(-1, 2, 32),)

        def step(self, tokens, state, regions):
            return Captioner.step(self, tokens, state + regions.mean(1))

    torch.manual_seed(1)
    config = ModelConfig(vocab_size=19, image_size=64, embed=16, hidden=32, max_len=6)
    return MemoryCaptioner(config, weights="none").eval()


def test_memory_tensors_flow_from_encoder_to_every_step(tmp_path):
    """encoder.onnx outputs state + memory, decoder_step.onnx takes them, nanocap.json
    names them, and the unchanged device backend's beam search passes them through."""
    from edge.backends import OrtBackend
    from edge.bundle import write_meta
    from edge.vocab import SPECIALS, Vocabulary
    from export.graph_files import describe_io
    from export.graphs import build_graph, example_inputs
    from export.onnx_export import export_graph
    from edge.search import trim_tokens
    from train.decoding import decode_batch
    model = _memory_model()
    vocab = Vocabulary(list(SPECIALS) + ["w%d" % i for i in range(15)])
    graphs = {}
    for graph in ("caption", "encoder", "decoder_step"):
        path = str(tmp_path / ("%s.onnx" % graph))
        onnx_model = export_graph(build_graph(graph, model, vocab, 6), example_inputs(graph, model),
                                  path, graph)
        graphs[graph] = {"fp32": dict(describe_io(onnx_model), file="%s.onnx" % graph)}
    names = lambda g, side: [t["name"] for t in graphs[g]["fp32"][side]]  # noqa: E731
    assert names("encoder", "outputs") == ["state", "regions"]
    assert names("decoder_step", "inputs") == ["token", "state", "regions"]
    write_meta(str(tmp_path), {"vocab": vocab.to_dict(), "max_len": 6, "graphs": graphs,
                               "input": {"height": 64, "width": 64, "layout": "NHWC",
                                         "channels": "BGR", "dtype": "uint8"},
                               "model": model.config.to_dict(), "scores": {}})
    images = _images(3, seed=4)
    frames = [images[i] for i in range(3)]
    for decode, beam in (("greedy", 1), ("beam", 3)):
        backend = OrtBackend(load_bundle(str(tmp_path)), decode=decode, beam_size=3)
        got = [r.tokens for r in backend.caption(frames)]
        want = decode_batch(model, vocab, torch.from_numpy(images), beam_size=beam)
        assert got == [trim_tokens(row, vocab.end_id) for row in want.tolist()], decode


def test_folded_decoder_weights_are_shared_initializers(tiny_bundle):
    """The unrolled caption graph holds each folded decoder weight once, as an
    initializer (not a copy per step, nor the folding MatMul itself)."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(os.path.join(tiny_bundle, "caption.onnx"))
    names = sorted(t.name for t in model.graph.initializer if t.name.startswith("folded_"))
    assert names == ["folded_b_new", "folded_b_out", "folded_table", "folded_w_gates",
                     "folded_w_new", "folded_w_out"]
    big = [n.output[0] for n in model.graph.node if n.op_type == "Constant" and
           numpy_helper.to_array(n.attribute[0].t).size > 64]
    assert big == []
    assert not any("embed" in t.name or "weight_ih" in t.name for t in model.graph.initializer)
