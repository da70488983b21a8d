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
from train.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from train.model.decoding import greedy_search  # noqa: E402
from tests.conftest import PY36, needs_py36  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, size=64, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


def torch_greedy(model, images, vocab, max_len):
    """PyTorch greedy decoding (train.model.decoding) of uint8 images -> (tokens, logprobs)."""
    with torch.no_grad():
        state = model.init_state(model.encode(images))
    return greedy_search(model.step, state, vocab.start_id, vocab.end_id, max_len)


def write_images(directory, n=24, seed=1):
    """``n`` small synthetic JPEG photos (a coloured disc on a plain background) in
    ``directory``: calibration / verification images made here (no shared data folder needed)."""
    import cv2
    os.makedirs(directory, exist_ok=True)
    rs = np.random.RandomState(seed)
    for i in range(n):
        img = np.zeros((80, 96, 3), np.uint8)
        img[:] = rs.randint(0, 255, 3)
        colour = tuple(int(c) for c in rs.randint(0, 255, 3))
        cv2.circle(img, (int(rs.randint(20, 70)), int(rs.randint(20, 60))),
                   int(rs.randint(5, 20)), colour, -1)
        cv2.imwrite(os.path.join(directory, "%02d.jpg" % i), img)
    return directory


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
    proc = subprocess.run([PY36, "-c", script, model_path, str(tmp_path / "images.npy"), out],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return np.load(out)


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
    from train.data.synth import write_dataset
    from train.evaluation import metrics
    monkeypatch.setattr(metrics, "find_java", lambda: None)  # fast: no METEOR process
    data_dir = str(tmp_path / "synth")
    write_dataset(data_dir, 20, size=64)
    out = str(tmp_path / "scored")
    meta = export_bundle(tiny_checkpoint, out, data=os.path.join(data_dir, "dataset.json"),
                         split="val", score_limit=3)
    scores = meta["scores"]["fp32"]
    assert scores["split"] == "val" and scores["images"] == 2  # the 2 val images of 20
    assert load_bundle(out).meta["scores"] == meta["scores"]
    # the stored figures are the bundle's captions of those images, scored
    from edge.backends import open_backend
    from train.data.readers import load_dataset
    from train.evaluation.evaluate import decode_records
    records = [r for r in load_dataset(os.path.join(data_dir, "dataset.json")) if r.split == "val"]
    backend = open_backend(out, backend="ort")
    hyps, _, _ = decode_records(backend, records, 8)
    want = metrics.coco_scores(dict((r.image_id, r.captions) for r in records), hyps)
    for key in ("Bleu_4", "CIDEr", "ROUGE_L"):
        assert scores[key] == pytest.approx(want[key]), key


def _snapshot(directory):
    """{file name: bytes} of a directory, and the names beside it (temp folders)."""
    files = dict((n, open(os.path.join(directory, n), "rb").read())
                 for n in sorted(os.listdir(directory)))
    return files, sorted(os.listdir(os.path.dirname(directory)))


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_arguments_fail_before_anything_is_written(tiny_bundle, tiny_checkpoint, tmp_path,
                                                        capsys):
    out = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, out)
    not_dir = str(tmp_path / "file.txt")
    open(not_dir, "w").write("x")
    garbage = str(tmp_path / "garbage")
    os.makedirs(garbage)
    open(os.path.join(garbage, "a.jpg"), "wb").write(b"not a jpeg")
    before = _snapshot(out)
    bad = [(["--precision", "fp32,int8"], "--calib-images"),
           (["--precision", "int8", "--calib-images", garbage], "no readable images"),
           (["--out", os.path.join(not_dir, "sub")], "cannot be created"),
           (["--precision", "int8", "--calib-images", not_dir], "not a directory"),
           (["--precision", "fp8"], "unknown precision fp8"),
           (["--max-len", "0"], "--max-len"),
           (["--beam", "1"], "--beam"),
           (["--batch", "0"], "--batch"),
           (["--data", str(tmp_path / "none.json")], "none.json")]
    for extra, words in bad:
        code = export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out] + extra)
        line = _one_line(capsys)
        assert code == 2 and words in line, (extra, line)
        assert _snapshot(out) == before, extra
    fresh = str(tmp_path / "fresh")
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", fresh,
                        "--precision", "int8"]) == 2
    assert "--calib-images" in _one_line(capsys) and not os.path.exists(fresh)
    nested = str(tmp_path / "new" / "dirs" / "b")  # missing parents are made
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", nested,
                        "--no-check"]) == 0
    assert load_bundle(nested).max_len == 8


def test_failed_export_keeps_the_old_bundle(tiny_bundle, tiny_checkpoint, tmp_path,
                                            monkeypatch, capsys):
    """A failure after the graphs are written (here: scoring) leaves the old bundle
    byte for byte and no temporary folder; a good export then replaces it whole."""
    import export.onnx_export as onnx_export
    out = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, out)
    open(os.path.join(out, "stale.engine"), "wb").write(b"old engine")
    data = str(tmp_path / "data.json")
    open(data, "w").write("{}")
    before = _snapshot(out)
    written = []

    def fail_scoring(bundle_dir, *args):
        written.extend(os.listdir(bundle_dir))
        raise NanocapError("scoring failed")
    monkeypatch.setattr(onnx_export, "score_bundle", fail_scoring)
    code = export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out, "--data", data,
                        "--max-len", "4", "--no-check"])
    assert code == 2 and "scoring failed" in _one_line(capsys)
    assert "nanocap.json" in written and "caption.onnx" in written  # it got that far
    assert _snapshot(out) == before
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out,
                        "--max-len", "4", "--no-check"]) == 0
    assert load_bundle(out).max_len == 4 and not os.path.exists(os.path.join(out, "stale.engine"))
    assert sorted(os.listdir(str(tmp_path))) == ["b", "data.json"]


def test_not_a_checkpoint_is_one_safe_line(tiny_bundle, tiny_checkpoint, tmp_path, capsys):
    """An ONNX file, a plain pickle, a truncated or empty file as --checkpoint: one
    line naming it, never PyTorch's advice to retry with weights_only=False."""
    import pickle
    truncated = str(tmp_path / "cut.pt")
    data = open(tiny_checkpoint, "rb").read()
    open(truncated, "wb").write(data[:len(data) // 2])
    pickled = str(tmp_path / "plain.pt")
    pickle.dump({"format": "nanocap-checkpoint"}, open(pickled, "wb"))
    empty = str(tmp_path / "empty.pt")
    open(empty, "wb").close()
    evil = str(tmp_path / "evil.pt")
    torch.save({"format": "nanocap-checkpoint", "x": np.random.RandomState(0)}, evil)
    cases = [(os.path.join(tiny_bundle, "caption.onnx"), "ONNX"), (pickled, "pickle"),
             (truncated, "damaged"), (empty, "empty"), (evil, "could run code")]
    for path, words in cases:
        code = export_main(["onnx", "--checkpoint", path, "--out", str(tmp_path / "o")])
        line = _one_line(capsys)
        assert code == 2 and path in line and words in line, line
        assert "weights_only" not in line
    assert not os.path.exists(str(tmp_path / "o"))


def test_export_prints_agreement_and_speed(tiny_checkpoint, tmp_path, capsys):
    images = write_images(str(tmp_path / "imgs"), 12)
    out = str(tmp_path / "b")
    assert export_main(["onnx", "--checkpoint", tiny_checkpoint, "--out", out,
                        "--precision", "fp32,fp16,int8", "--calib-images", images,
                        "--beam", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("agreement with PyTorch and speed against fp32 on 12 calibration" in l
               for l in lines)
    for precision in ("fp32", "fp16", "int8"):
        assert any(l.split()[:2] == [precision, "caption_match"] and "fp32's speed" in l
                   for l in lines), precision
    agreement = json.loads(lines[-1])["agreement"]
    assert sorted(agreement) == ["fp16", "fp32", "int8"]
    assert agreement["fp32"]["caption_match"] == 1.0
    assert agreement["fp32"]["speed_vs_fp32"] == 1.0
    assert agreement["fp32"]["beam_caption_match"] == 1.0
    assert all(e["ms_per_image"] > 0 for e in agreement.values())


def test_verdicts_say_when_a_variant_is_slower_and_less_faithful():
    from export.verify import verdicts
    report = {"fp32": {"caption_match": 1.0, "speed_vs_fp32": 1.0},
              "fp16": {"caption_match": 1.0, "speed_vs_fp32": 1.3},
              "int8": {"caption_match": 0.69, "speed_vs_fp32": 0.84}}
    lines = verdicts(report)
    assert len(lines) == 1 and "WARNING: int8 is both slower (0.84x) and less faithful" in lines[0]
    report["int8"]["speed_vs_fp32"] = 1.2  # faster: an honest trade, no warning
    assert verdicts(report) == []
    report["fp16"]["speed_vs_fp32"] = 0.5  # slower but as faithful: a note
    lines = verdicts(report)
    assert len(lines) == 1 and "note: fp16 is slower" in lines[0]


def _memory_model():
    """A GRU captioner with one memory tensor (the attention decoder's calling
    shape): ``regions [N, 2, H]`` made once from the features, added (mean) to
    the state at every step."""
    from train.model.captioner import Captioner, ModelConfig

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
    from train.model.decoding import decode_batch
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
