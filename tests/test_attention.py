"""The attention decoder (``--decoder att``): its step against an unfolded
reference, teacher forcing = the step, every search and exported graph equal to
PyTorch, ``export verify``, checkpoint/bundle parity, the attention pictures,
``fit --decoder att``, the FLOPs price, and old fc checkpoints loading as fc."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from edge.search import trim_tokens  # noqa: E402
from edge.vocab import SPECIALS, Vocabulary  # noqa: E402
from train.model.build import build_captioner
from train.model.captioner import Captioner, ModelConfig  # noqa: E402
from train.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from train.model.decoding import beam_search, greedy_search  # noqa: E402
from tests.conftest import needs_py36  # noqa: E402
from tests.test_export import run_on_py36  # noqa: E402

WORDS = ["a", "red", "blue", "green", "circle", "square", "triangle", "and"]


def _images(n, size=64, seed=0):
    """``n`` scenes ``uint8 [n,size,size,3]``: a plain background and one square
    (random colours and place), so a random backbone tells them apart."""
    rs = np.random.RandomState(seed)
    out = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = rs.randint(0, 256, 3)
        y, x = rs.randint(0, size * 3 // 4, 2)
        out[i, y:y + size // 4, x:x + size // 4] = rs.randint(0, 256, 3)
    return out


def _model(rnn="gru", seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=len(SPECIALS) + len(WORDS), rnn=rnn, image_size=64,
                         embed=16, hidden=32, max_len=7, decoder="att")
    model = build_captioner(config, weights="none")
    for module in model.backbone.modules():  # BN statistics of real scenes: random
        if isinstance(module, torch.nn.BatchNorm2d):  # features then differ per image
            module.momentum = 1.0
    with torch.no_grad():
        model.train().encode(torch.from_numpy(_images(32, seed=1)))
        model.att_score.weight.mul_(20.0)  # sharper attention than the random init gives
    return model.eval()


@pytest.fixture(scope="module")
def att_checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("att") / "att.pt")
    save_checkpoint(path, _model(), Vocabulary(list(SPECIALS) + WORDS), {"epoch": 0})
    return path


@pytest.fixture(scope="module")
def att_bundle(att_checkpoint, tmp_path_factory):
    """fp32 + fp16 + int8, with ``caption_beam.onnx`` (K=3)."""
    import cv2
    from export.onnx_export import export_bundle
    calib = str(tmp_path_factory.mktemp("calib"))
    for i, image in enumerate(_images(8, size=80, seed=7)):
        cv2.imwrite(os.path.join(calib, "%d.png" % i), image)
    out = str(tmp_path_factory.mktemp("bundle") / "att")
    export_bundle(att_checkpoint, out, precisions=("fp32", "fp16", "int8"), calib_images=calib,
                  beam=3)
    return out


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_step_equals_the_unfolded_rnn_and_teacher_forcing(rnn):
    """step = nn.GRU/LSTM on [embedding; attention-weighted region mean];
    forward_features (teacher forcing) = the step, one position at a time."""
    model = _model(rnn)
    images = torch.from_numpy(_images(3))
    regions = model.encode(images)
    assert regions.shape == (3, 4, model.feature_dim)  # 2x2 cells at 64 px
    state, (keys, values) = model.start(images)
    tokens = torch.tensor([1, 5, 9])
    with torch.no_grad():
        logprobs, new_state, alpha = model.step(tokens, state, keys, values, return_attention=True)
        assert torch.allclose(alpha.sum(1), torch.ones(3)) and alpha.shape == (3, 4)
        context = (alpha.unsqueeze(2) * regions).sum(1)
        x = torch.cat([model.embed(tokens), context], 1).unsqueeze(1)
        H = model.config.hidden
        hx = state.unsqueeze(0) if rnn == "gru" else (
            state[:, :H].unsqueeze(0).contiguous(), state[:, H:].unsqueeze(0).contiguous())
        out, _ = model.rnn(x, hx)
        assert torch.allclose(model.out(out[:, 0]).log_softmax(-1), logprobs, atol=1e-5)
        assert torch.allclose(model.start(images)[0],
                              torch.tanh(model.init_state_proj(regions.mean(1))))
        logits = model.forward_features(regions, torch.tensor([[1, 5, 6], [5, 5, 6], [9, 5, 6]]))
        second, _ = model.step(torch.tensor([5] * 3), new_state, keys, values)
    assert torch.allclose(logits[:, 0].log_softmax(-1), logprobs, atol=1e-5)
    assert torch.allclose(logits[:, 1].log_softmax(-1), second, atol=1e-5)
    assert torch.allclose(model.attention_weights[:, 0], alpha)  # what the regulariser reads


def test_fc_checkpoint_without_the_field_loads_as_fc(tmp_path, att_checkpoint):
    torch.manual_seed(0)
    fc = build_captioner(ModelConfig(vocab_size=12, image_size=64, embed=16, hidden=32), weights="none")
    path = str(tmp_path / "old.pt")
    save_checkpoint(path, fc, Vocabulary(list(SPECIALS) + WORDS))
    payload = torch.load(path, weights_only=False)
    del payload["config"]["decoder"]  # as written before the field existed
    torch.save(payload, path)
    model, _, _ = load_checkpoint(path)
    assert type(model) is Captioner and model.config.decoder == "fc" and model.memory_names == ()
    att, _, _ = load_checkpoint(att_checkpoint)
    assert att.config.decoder == "att" and att.memory_names == ("keys", "values")


def test_graphs_and_device_searches_equal_pytorch(att_bundle, att_checkpoint):
    """caption.onnx / caption_beam.onnx / encoder + decoder_step (numpy searches,
    the ORT backend) all give PyTorch's tokens; nanocap.json names the memory."""
    from edge.backends import OrtBackend
    from edge.bundle import load_bundle
    from export.floor import floor_problems
    model, vocab, _ = load_checkpoint(att_checkpoint)
    images = _images(4, seed=3)
    with torch.no_grad():
        state, memory = model.start(torch.from_numpy(images))
    greedy, greedy_lp = greedy_search(model.step, state, vocab.start_id, vocab.end_id, 7,
                                      memory=memory)
    beam, beam_score = beam_search(model.step, state, vocab.start_id, vocab.end_id, 7,
                                   beam_size=3, length_norm=0.7, memory=memory)
    assert len(set(map(tuple, greedy.tolist()))) > 1  # the images are told apart
    bundle = load_bundle(att_bundle)
    run = lambda graph, feeds: ort.InferenceSession(  # noqa: E731
        os.path.join(att_bundle, graph + ".onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    tokens, lp = run("caption", {"image": images})
    np.testing.assert_array_equal(tokens, greedy.numpy())
    np.testing.assert_allclose(lp, greedy_lp.numpy(), atol=1e-4)
    tokens, score = run("caption_beam", {"image": images})
    np.testing.assert_array_equal(tokens, beam.numpy())
    np.testing.assert_allclose(score, beam_score.numpy(), atol=1e-4)
    for graph in ("caption", "caption_beam", "encoder", "decoder_step"):
        assert floor_problems(os.path.join(att_bundle, graph + ".onnx")) == [], graph
    outputs = [t["name"] for t in bundle.graph_entry("encoder")["outputs"]]
    inputs = [t["name"] for t in bundle.graph_entry("decoder_step")["inputs"]]
    assert outputs == ["state", "keys", "values"] and inputs == ["token", "state", "keys", "values"]
    assert bundle.meta["model"]["decoder"] == "att"
    for decode, want in (("greedy", greedy), ("beam", beam)):
        backend = OrtBackend(bundle, decode=decode, beam_size=3)
        got = [r.tokens for r in backend.caption(list(images))]
        assert got == [trim_tokens(row, vocab.end_id) for row in want.tolist()], decode


def test_verify_fp32_matches_and_variants_run(att_bundle, att_checkpoint):
    from export.verify import verify
    from edge.bundle import load_bundle
    frames = _images(6, seed=5)
    report = verify(att_checkpoint, att_bundle, frames)
    assert report["fp32"]["caption_match"] == 1.0
    assert report["fp32"]["beam_caption_match"] == 1.0
    assert set(report) == {"fp32", "fp16", "int8"}
    model, vocab, _ = load_checkpoint(att_checkpoint)
    with torch.no_grad():
        state, memory = model.start(torch.from_numpy(frames))
    want, _ = greedy_search(model.step, state, vocab.start_id, vocab.end_id, 7, memory=memory)
    bundle = load_bundle(att_bundle)
    for precision in ("fp16", "int8"):  # the figure is the share of captions the variant keeps
        tokens = ort.InferenceSession(bundle.graph_path("caption", precision),
                                      providers=["CPUExecutionProvider"]).run(None, {"image": frames})[0]
        same = [vocab.decode(a) == vocab.decode(b) for a, b in zip(want.tolist(), tokens.tolist())]
        assert report[precision]["caption_match"] == pytest.approx(np.mean(same)), precision


def test_checkpoint_and_bundle_caption_alike_and_attention_pictures(
        att_bundle, att_checkpoint, tmp_path, capsys):
    """``train caption``: --checkpoint = --bundle; --attention writes one picture per
    image (fc checkpoint, or a bundle: one line, non-zero exit)."""
    import cv2
    from train.__main__ import main as train_main
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(_images(3, size=90, seed=9)):
        cv2.imwrite(str(folder / ("p%d.png" % i)), image)
    out = {}
    for flag, source in (("--checkpoint", att_checkpoint), ("--bundle", att_bundle)):
        for beam in ("1", "3"):
            assert train_main(["caption", str(folder), flag, source, "--beam", beam]) == 0
            out[flag, beam] = capsys.readouterr().out
    assert out["--checkpoint", "1"] == out["--bundle", "1"]
    assert out["--checkpoint", "3"] == out["--bundle", "3"]
    pictures = tmp_path / "att"
    assert train_main(["caption", str(folder), "--checkpoint", att_checkpoint,
                       "--attention", str(pictures)]) == 0
    assert sorted(os.listdir(str(pictures))) == ["p0.png", "p1.png", "p2.png"]
    figure = cv2.imread(str(pictures / "p0.png"))
    assert figure is not None and figure.shape[1] > 2 * figure.shape[0] / 3
    capsys.readouterr()
    torch.manual_seed(0)
    fc = str(tmp_path / "fc.pt")
    save_checkpoint(fc, build_captioner(ModelConfig(vocab_size=12, image_size=64, embed=16, hidden=32)),
                    Vocabulary(list(SPECIALS) + WORDS))
    for args in (["--checkpoint", fc], ["--bundle", att_bundle]):
        assert train_main(["caption", str(folder), "--attention", str(tmp_path / "x")] + args) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--attention needs" in err[0], err


def test_attention_maps_replay_the_step(att_checkpoint):
    """The pictures' maps are the step's own weights (the same code path)."""
    from train.model.attention import attention_maps
    model, vocab, _ = load_checkpoint(att_checkpoint)
    images = torch.from_numpy(_images(2, seed=1))
    tokens = torch.tensor([[5, 6, 7, 3], [9, 4, 8, 3]])
    maps = attention_maps(model, images, tokens, vocab.start_id)
    assert maps.shape == (2, 4, 2, 2)
    with torch.no_grad():
        state, memory = model.start(images)
        fed = torch.cat([torch.full((2, 1), vocab.start_id), tokens[:, :3]], dim=1)
        alphas = []
        for t in range(4):
            _, state, alpha = model.step(fed[:, t], state, *memory, return_attention=True)
            alphas.append(alpha)
    for t in range(4):  # map t comes from the state after tokens < t
        assert torch.allclose(maps[:, t].reshape(2, 4), alphas[t]), t
    assert not torch.allclose(alphas[0], alphas[2])


def test_fit_decoder_att_trains_then_scst_and_flags(tmp_path, capsys):
    from train.__main__ import main as train_main
    from train.data.synth import write_dataset
    data = str(tmp_path / "synth")
    write_dataset(data, 40, size=64)
    run = str(tmp_path / "run")
    common = ["fit", "--data", os.path.join(data, "dataset.json"), "--weights", "none",
              "--image-size", "64", "--hidden", "32", "--embed", "16", "--epochs", "1",
              "--no-progress", "--min-count", "1", "--max-len", "12"]
    assert train_main(common + ["--out", run, "--decoder", "att", "--att-reg", "1.0",
                                "--scst-epochs", "1"]) == 0
    model, _, _ = load_checkpoint(os.path.join(run, "last.pt"))
    assert model.config.decoder == "att"
    entries = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert [e["phase"] for e in entries] == ["joint", "scst"]
    assert all(np.isfinite(e["train_loss"]) for e in entries)
    capsys.readouterr()
    assert train_main(common + ["--out", str(tmp_path / "bad"), "--att-reg", "0.5"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--att-reg" in err[0], err


def test_frozen_encoder_caches_region_features_for_att(tmp_path):
    """``--freeze-encoder`` with ``--decoder att``: the cache holds the regions
    ``[N, R, F]`` the attention needs, then a joint fine-tuning epoch runs."""
    from train.__main__ import main as train_main
    from train.data.synth import write_dataset
    data = str(tmp_path / "synth")
    write_dataset(data, 40, size=64)
    run = str(tmp_path / "run")
    assert train_main(["fit", "--data", os.path.join(data, "dataset.json"), "--weights", "none",
                       "--image-size", "64", "--hidden", "32", "--embed", "16", "--epochs", "1",
                       "--no-progress", "--min-count", "1", "--max-len", "12", "--out", run,
                       "--decoder", "att", "--freeze-encoder", "--finetune-epochs", "1"]) == 0
    entries = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert [e["phase"] for e in entries][-1] != entries[0]["phase"]  # decoder, then joint
    cache = np.load(os.path.join(run, "features-train.npy"), mmap_mode="r")
    assert cache.ndim == 3 and cache.dtype == np.float16  # [N, R, F] regions, on disk


def test_flops_report_the_price_of_attention():
    from train.model.flops import model_cost
    torch.manual_seed(0)
    config = dict(vocab_size=40, image_size=64, embed=16, hidden=32, max_len=7)
    fc = model_cost(build_captioner(ModelConfig(**config)))
    att = model_cost(_model())
    assert att["step_flops"] > fc["step_flops"] and att["encoder_flops"] > fc["encoder_flops"]
    assert "att-GRU-32" in att["name"]
    fc_bytes, att_bytes = (c["weight_bytes_per_caption"]["fp32"] for c in (fc, att))
    assert att_bytes["step"] > fc_bytes["step"] and att_bytes["encoder"] > fc_bytes["encoder"]


@needs_py36
def test_same_tokens_under_onnxruntime_1_10_on_python36(att_bundle, tmp_path):
    images = _images(4, seed=3)
    for graph in ("caption", "caption_beam"):
        path = os.path.join(att_bundle, graph + ".onnx")
        now = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
            None, {"image": images})[0]
        np.testing.assert_array_equal(run_on_py36(path, images, tmp_path), now)


def test_lstm_att_caption_graph_equals_pytorch(tmp_path):
    """The LSTM variant through the one-graph greedy export (the GRU one above)."""
    from export.floor import floor_problems
    from export.graphs import build_graph, example_inputs
    from export.onnx_export import export_graph
    model = _model("lstm")
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    path = str(tmp_path / "caption.onnx")
    export_graph(build_graph("caption", model, vocab, 7), example_inputs("caption", model), path,
                 "caption")
    images = _images(4, seed=3)
    with torch.no_grad():
        state, memory = model.start(torch.from_numpy(images))
    want, _ = greedy_search(model.step, state, vocab.start_id, vocab.end_id, 7, memory=memory)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"image": images})[0]
    np.testing.assert_array_equal(got, want.numpy())
    assert floor_problems(path) == []
