"""Every tensor follows the model's device. On this CPU-only machine the model
sits on PyTorch's ``meta`` device (``tests/meta_device.py``): any tensor a
search, the SCST step, evaluation, captioning, the FLOPs count or a whole
``train fit`` run leaves on the CPU meets a meta tensor and fails, as it would
meet a CUDA tensor on a GPU. Also ``fit --device`` and a checkpoint written on
CUDA read where there is none."""
import argparse
import contextlib
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.vocab import SPECIALS, Vocabulary  # noqa: E402
from meta_device import META, MetaReads  # noqa: E402
from train import distributed, epochs, fit  # noqa: E402
from train.__main__ import main  # noqa: E402
from train.data import batches as tdata  # noqa: E402
from train.data.readers import Record  # noqa: E402
from train.data.synth import write_dataset  # noqa: E402
from train.model.attention import attention_maps  # noqa: E402
from train.model.build import build_captioner
from train.model.captioner import ModelConfig  # noqa: E402
from train.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from train.model.decoding import beam_search, caption_images, greedy_search, sample_search  # noqa: E402
from train.model.flops import model_cost  # noqa: E402
from train.objectives.scst import Reward, scst_batch  # noqa: E402

WORDS = ["a", "red", "blue", "circle", "square"]
VOCAB = Vocabulary(list(SPECIALS) + WORDS)


def _model(decoder, rnn="gru"):
    torch.manual_seed(0)
    return build_captioner(ModelConfig(vocab_size=len(VOCAB), image_size=64, embed=16, hidden=32,
                                 max_len=6, rnn=rnn, decoder=decoder))


def _frames(n, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, 64, 64, 3)).astype(np.uint8)


@pytest.mark.parametrize("decoder,rnn", [("fc", "gru"), ("att", "gru"), ("att", "lstm")])
def test_searches_captioning_and_attention_maps_follow_the_model(decoder, rnn):
    model = _model(decoder, rnn).eval().to(META)
    with MetaReads():
        state, memory = model.start(torch.from_numpy(_frames(3)).to(META))
        for tokens in (greedy_search(model.step, state, 1, 2, 6, memory=memory)[0],
                       beam_search(model.step, state, 1, 2, 6, beam_size=3, memory=memory)[0],
                       sample_search(model.step, state, 1, 2, 6, memory=memory)[0]):
            assert tokens.device == META and tokens.shape == (3, 6)
        for beam in (1, 2):  # CPU frames in, captions out
            assert len(caption_images(model, VOCAB, list(_frames(2)), beam_size=beam)) == 2
        if decoder == "att":
            maps = attention_maps(model, torch.from_numpy(_frames(2)).to(META),
                                  torch.tensor([[3, 4, 2], [5, 2, 0]]), VOCAB.start_id)
            assert maps.device == META and maps.shape == (2, 3, 2, 2)


@pytest.mark.parametrize("decoder,baseline", [("fc", "greedy"), ("att", "mean")])
def test_scst_step_follows_the_model(decoder, baseline):
    model = _model(decoder).train().to(META)
    reward = Reward([[VOCAB.encode("a red circle")], [VOCAB.encode("a blue square")]],
                    len(VOCAB), VOCAB.end_id)
    with MetaReads():
        features = model.encode(torch.from_numpy(_frames(2)).to(META))
        loss, stats = scst_batch(model, features, [0, 1], reward, VOCAB, 3, baseline, 6)
        loss.backward()
    assert loss.device == META and model.out.weight.grad.device == META
    assert (stats["greedy"] is not None) == (baseline == "greedy")


def test_evaluation_of_images_and_of_features_follows_the_model():
    model = _model("att").to(META)
    records = [Record(i, "x%d.jpg" % i, ["a red circle"], "val") for i in range(3)]
    images = tdata.ImageSource(records, 64, _frames(3))
    with MetaReads():
        for inputs in (images, torch.zeros(3, 4, model.feature_dim)):  # features on the CPU
            scores, _ = epochs.evaluate(model, inputs, records, VOCAB)
            assert "CIDEr" in scores


def test_flops_count_on_the_models_device():
    """The same count with the model on the CPU and on ``meta``."""
    on_cpu = model_cost(_model("att"))
    on_meta = model_cost(_model("att").to(META))
    for key in ("encoder_flops", "step_flops", "flops_per_caption", "weight_bytes_per_caption"):
        assert on_meta[key] == on_cpu[key], key


@pytest.mark.parametrize("flags", [
    ["--decoder", "att", "--att-reg", "1", "--freeze-encoder", "--scst-baseline", "greedy"],
    ["--rnn", "lstm", "--freeze-encoder", "--finetune-epochs", "1"]])
def test_a_whole_fit_run_follows_the_device(flags, tmp_path):
    """Cross-entropy (cached features or images), SCST (its feature cache or the
    frozen encoder), validation and checkpoints, with the run's device ``meta``."""
    data = write_dataset(str(tmp_path / "set"), 16, size=64, seed=0)
    parser = argparse.ArgumentParser()
    fit.add_arguments(parser)
    args = parser.parse_args(["--data", data, "--out", str(tmp_path / "run"), "--weights", "none",
                              "--image-size", "64", "--hidden", "16", "--embed", "8",
                              "--batch-size", "8", "--max-len", "5", "--min-count", "1",
                              "--no-progress", "--epochs", "1", "--scst-epochs", "1"] + flags)
    with MetaReads():
        assert fit.fit(args, distributed.Context(device="meta")) == 0
    assert [n for n in ("last.pt", "best.pt", "log.jsonl") if os.path.isfile(str(tmp_path / "run" / n))] \
        == ["last.pt", "best.pt", "log.jsonl"]


def _one_line(capsys, text):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("value,message", [
    ("gpu", "--device must be auto, cpu, cuda or cuda:N, not 'gpu'"),
    ("cuda:x", "--device must be auto, cpu, cuda or cuda:N, not 'cuda:x'"),
    ("cuda", "--device cuda: CUDA is not available here"),
    ("cuda:1", "--device cuda:1: CUDA is not available here")])
def test_device_flag_bad_value_or_absent_cuda_is_one_line(value, message, tmp_path, capsys):
    if torch.cuda.is_available() and value.startswith("cuda") and value != "cuda:x":
        pytest.skip("this machine has CUDA")
    assert main(["fit", "--data", str(tmp_path / "absent.json"), "--out", str(tmp_path / "run"),
                 "--device", value]) == 2
    _one_line(capsys, message)
    assert not os.path.exists(str(tmp_path / "run"))  # refused before anything was made


def test_device_auto_and_cpu():
    want = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert distributed.resolve_device("auto") == want
    assert distributed.resolve_device(" CPU ") == torch.device("cpu")


_TAG_AS_CUDA = []


def _cuda_tagger(obj):
    """Storage location tag while ``saved_as_on_cuda()`` is active (else the usual one)."""
    return "cuda:0" if _TAG_AS_CUDA else None


torch.serialization.register_package(0, _cuda_tagger, lambda obj, location: None)


@contextlib.contextmanager
def saved_as_on_cuda():
    """``torch.save`` inside writes every tensor as a CUDA tensor (location ``cuda:0``),
    as a checkpoint written by a run on a GPU is."""
    _TAG_AS_CUDA.append(True)
    try:
        yield
    finally:
        _TAG_AS_CUDA.pop()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_checkpoint_written_on_cuda_loads_and_exports_without_cuda(tmp_path):
    from export.onnx_export import export_bundle
    path = str(tmp_path / "cuda.pt")
    model = _model("fc").eval()
    with saved_as_on_cuda():
        save_checkpoint(path, model, VOCAB, {"epoch": 1})
    with pytest.raises(RuntimeError, match="CUDA"):  # what it is: tensors on cuda:0
        torch.load(path, weights_only=True)
    assert read_checkpoint(path)["model"]["out.weight"].device.type == "cpu"
    loaded, _, _ = load_checkpoint(path)
    assert torch.equal(loaded.out.weight, model.out.weight)
    meta = export_bundle(path, str(tmp_path / "bundle"), precisions=("fp32",))
    assert "caption" in meta["graphs"]
