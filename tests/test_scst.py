"""Self-critical training: sampling, reward, baselines, the loss's sign, the
folded weights built once per batch, and the ``--scst-epochs`` phase of
``train fit`` on a tiny binding set (the frozen encoder, an unreadable image
read lazily, a resumed run, two gloo ranks)."""
import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge.vocab import SPECIALS, Vocabulary
from train import epochs as epochs_module
from train.__main__ import main
from train.data.synth import write_dataset
from train.model.build import build_captioner
from train.model.captioner import Captioner, ModelConfig
from train.model.checkpoint import load_checkpoint, read_checkpoint
from train.model.decoding import greedy_search, sample_search
from train.objectives.cider import CiderD
from train.objectives.scst import Reward, mean_baseline, scst_batch, scst_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ["--weights", "none", "--image-size", "64", "--hidden", "32", "--embed", "16",
        "--batch-size", "8", "--max-len", "12", "--min-count", "1", "--no-progress"]
WORDS = ["a", "red", "blue", "circle", "square", "and"]


def _model(seed=0, max_len=8):
    torch.manual_seed(seed)
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    config = ModelConfig(vocab_size=len(vocab), image_size=64, embed=16, hidden=32, max_len=max_len)
    return build_captioner(config, weights="none").eval(), vocab


def _images(n, seed=0):
    return torch.from_numpy(np.random.RandomState(seed).randint(0, 255, (n, 64, 64, 3)).astype(np.uint8))


def test_sampled_logprobs_are_the_models_and_pads_follow_end():
    model, vocab = _model()
    with torch.no_grad():
        features = model.encode(_images(6))
    state, memory = model.init_decoder(features)
    torch.manual_seed(1)
    tokens, logprobs, mask = sample_search(model.step, state, vocab.start_id, vocab.end_id, 8,
                                           memory=memory)
    assert tokens.shape == logprobs.shape == mask.shape == (6, 8) and logprobs.requires_grad
    for row, keep in zip(tokens.tolist(), mask.tolist()):
        ends = [t for t, tok in enumerate(row) if tok == vocab.end_id]
        last = ends[0] if ends else 7
        assert keep == [t <= last for t in range(8)]
        assert all(tok == 0 for tok in row[last + 1:]) and all(tok > 0 for tok in row[:last + 1])
    # teacher forcing over the sampled tokens gives the same log-probabilities
    # (<pad> and <start> are never drawn: the policy renormalises without them)
    tokens_in = torch.cat([torch.full((6, 1), vocab.start_id), tokens[:, :-1]], dim=1)
    model.dropout.p = 0.0
    forced = model.forward_features(features, tokens_in)
    forced[:, :, [0, vocab.start_id]] = float("-inf")
    forced = torch.log_softmax(forced, dim=-1)
    forced = torch.where(mask, forced.gather(2, tokens.unsqueeze(2)).squeeze(2), torch.zeros(()))
    assert torch.allclose(forced, logprobs, atol=1e-5)
    # a near-zero temperature samples the greedy caption
    cold, _, _ = sample_search(model.step, state, vocab.start_id, vocab.end_id, 8,
                               temperature=1e-4, memory=memory)
    greedy, _ = greedy_search(model.step, state, vocab.start_id, vocab.end_id, 8, memory=memory)
    assert torch.equal(cold, greedy)


def test_sampling_follows_the_step_distribution():
    probs = torch.tensor([0.1, 0.1, 0.4, 0.0, 0.24, 0.16])  # <end> (2) half the time once
    expected = torch.tensor([0.0, 0.0, 0.5, 0.0, 0.3, 0.2])  # <pad>, <start> are left out

    def step(tokens, state):
        return torch.log(probs.clamp(min=1e-12)).expand(len(tokens), -1), state

    tokens, _, _ = sample_search(step, torch.zeros(4000, 1), 1, 2, 1,
                                 generator=torch.Generator().manual_seed(0))
    freq = np.bincount(tokens[:, 0].numpy(), minlength=6) / 4000.0
    assert np.abs(freq - expected.numpy()).max() < 0.03


def test_reward_is_cider_d_against_the_images_own_references():
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    refs = [[vocab.encode("a red circle and a blue square")] * 3,
            [vocab.encode("a blue circle"), vocab.encode("a blue circle and a red square")],
            [vocab.encode("a red square")]]
    reward = Reward(refs, len(vocab), vocab.end_id)
    right = torch.tensor([vocab.encode("a red circle and a blue square")[1:] + [0, 0]])
    scores = reward(torch.cat([right, right]), [0, 1])
    assert scores[0] > 5 and scores[1] < scores[0] / 2


def test_mean_baseline_leaves_each_sample_out():
    rewards = np.array([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    assert np.allclose(mean_baseline(rewards, 3), [4.0, 3.5, 1.5, 1.5, 1.5, 0.0])


def test_loss_sign_makes_better_than_baseline_samples_more_likely():
    logits = torch.zeros(1, 5, requires_grad=True)
    logprobs = torch.log_softmax(logits, dim=1)[0, [1, 3]].view(2, 1)   # two one-token samples
    loss = scst_loss(logprobs, torch.ones(2, 1, dtype=torch.bool), torch.tensor([1.0, -1.0]))
    loss.backward()
    with torch.no_grad():
        after = torch.softmax(logits - 0.5 * logits.grad, dim=1)[0]
    assert after[1] > 0.2 > after[3]  # the rewarded token gained, the penalised one lost


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_a_few_scst_steps_raise_the_reward(baseline):
    model, vocab = _model(seed=3)
    images = _images(4, seed=2)
    refs = [[vocab.encode(c)] for c in ("a red circle", "a blue square", "a red square and a blue circle",
                                        "a blue circle")]
    reward = Reward(refs, len(vocab), vocab.end_id)
    params = [p for n, p in model.named_parameters() if not n.startswith("backbone")]
    optimizer = torch.optim.Adam(params, lr=2e-2)
    with torch.no_grad():
        features = model.encode(images)
    torch.manual_seed(0)
    history = []
    for _ in range(30):
        loss, stats = scst_batch(model, features, [0, 1, 2, 3], reward, vocab, 4, baseline, 8)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(stats["reward"])
        assert stats["length"] > 0 and (stats["greedy"] is not None) == (baseline == "greedy")
    assert np.mean(history[-5:]) > 1.5 * np.mean(history[:5]), history


def test_fit_runs_scst_after_cross_entropy_and_logs_reward_and_length(tmp_path, capsys):
    data = write_dataset(str(tmp_path / "binding"), 40, size=64, seed=0, scenes="binding")
    run = str(tmp_path / "run")
    args = ["fit", "--data", data, "--out", run, "--lr", "3e-3", "--epochs", "1"] + TINY
    assert main(args + ["--scst-epochs", "2", "--scst-samples", "3", "--scst-baseline", "greedy"]) == 0
    log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert [e["phase"] for e in log] == ["joint", "scst", "scst"]
    for entry in log[1:]:
        assert entry["scst_reward"] > 0 and entry["scst_length"] > 0
        assert entry["scst_samples"] == 3 and "scst_greedy_reward" in entry and "CIDEr" in entry["val"]
    assert "mean reward" in capsys.readouterr().out
    assert load_checkpoint(os.path.join(run, "last.pt"))[2]["train"]["epoch"] == 3
    # the mean baseline needs two samples: one clear line before any training
    assert main(args + ["--out", str(tmp_path / "other"), "--scst-epochs", "3", "--scst-samples", "1"]) == 2
    assert "--scst-samples must be >= 2" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "other" / "log.jsonl"))


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_folded_weights_are_built_once_per_batch(baseline):
    model, vocab = _model()
    model.train()
    folds = []
    real_fold = model._fold
    model._fold = lambda *params: folds.append(1) or real_fold(*params)
    reward = Reward([[vocab.encode("a red circle")]] * 3, len(vocab), vocab.end_id)
    with torch.no_grad():
        features = model.encode(_images(3))
    scst_batch(model, features, [0, 1, 2], reward, vocab, 2, baseline, 8)
    assert len(folds) == 1
    # and the gradients are those of folding at every step
    state, memory = model.init_decoder(features)
    grads = []
    for once in (True, False):
        torch.manual_seed(5)
        model.zero_grad()
        with model.folded_once() if once else contextlib.nullcontext():
            _, logprobs, mask = sample_search(model.step, state.detach(), vocab.start_id,
                                              vocab.end_id, 8, memory=memory)
        scst_loss(logprobs, mask, torch.tensor([1.0, -0.5, 2.0])).backward()
        grads.append([p.grad.clone() for p in (model.embed.weight, model.rnn.weight_hh_l0)])
    assert grads[0][1].abs().sum() > 0
    for once, every_step in zip(*grads):
        assert torch.allclose(once, every_step, atol=1e-6)


def _trimmed(vocab, text):
    """A caption as the reward compares it: words and ``<end>``, no ``<start>``."""
    return vocab.encode(text)[1:]


REFS = [["a red circle", "a red circle and a blue square"], ["a blue square"],
        ["a blue circle and a red square", "a red square"], ["a blue circle"]]


def test_reward_document_frequencies_come_from_the_training_split():
    """An image's reward is the same whatever else is in its batch: the document
    frequencies are those of all training references, not of the batch's."""
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    reward = Reward([[vocab.encode(c) for c in refs] for refs in REFS], len(vocab), vocab.end_id)
    sample = torch.tensor([_trimmed(vocab, "a red square") + [0] * 3])
    alone = reward(sample, [0])[0]
    in_batch = reward(torch.cat([sample] * 3), [0, 2, 3])[0]
    split = [[_trimmed(vocab, c) for c in refs] for refs in REFS]
    want = CiderD.from_references(split, len(vocab)).score([sample[0, :4].tolist()], [split[0]])[0]
    batch_only = CiderD.from_references([split[0]], len(vocab)).score(
        [sample[0, :4].tolist()], [split[0]])[0]
    assert alone == pytest.approx(want, rel=1e-9) and in_batch == pytest.approx(want, rel=1e-9)
    assert abs(batch_only - want) > 0.1  # the test tells the two apart


def test_end_counts_as_a_word_in_samples_and_references_alike():
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    reward = Reward([[vocab.encode(c) for c in refs] for refs in REFS], len(vocab), vocab.end_id)
    samples = ["a red circle", "a red square and", "a blue square"]
    rows = torch.tensor([_trimmed(vocab, c) + [0] * (8 - len(c.split()) - 1) for c in samples])
    cut_off = torch.tensor([vocab.encode("a red circle and a blue square a")[1:9]])  # no <end>
    got = reward(torch.cat([rows, cut_off]), [0, 2, 1, 0])
    split = [[_trimmed(vocab, c) for c in refs] for refs in REFS]
    scorer = CiderD.from_references(split, len(vocab))
    want = scorer.score([_trimmed(vocab, c) for c in samples] + [cut_off[0].tolist()],
                        [split[0], split[2], split[1], split[0]])
    np.testing.assert_allclose(got, want, rtol=1e-9)
    words_only = [[r[:-1] for r in refs] for refs in split]  # <end> left out on both sides
    other = CiderD.from_references(words_only, len(vocab)).score(
        [_trimmed(vocab, c)[:-1] for c in samples], [words_only[0], words_only[2], words_only[1]])
    assert np.abs(other - want[:3]).max() > 0.05  # the test tells the two apart


def _fit(data, run, *extra):
    return main(["fit", "--data", data, "--out", run, "--lr", "3e-3", "--epochs", "1",
                 "--scst-samples", "2", "--val-images", "2"] + TINY + list(extra))


@pytest.fixture(scope="module")
def binding(tmp_path_factory):
    """21 binding scenes at 64 px: 17 train, 2 val, 2 test."""
    return write_dataset(str(tmp_path_factory.mktemp("binding")), 21, size=64, seed=0,
                         scenes="binding")


def test_encoder_is_frozen_during_scst(binding, tmp_path):
    """The backbone's weights and BatchNorm statistics leave SCST as they entered it;
    the decoder's do not."""
    run = str(tmp_path / "run")
    assert _fit(binding, run) == 0
    before = read_checkpoint(os.path.join(run, "last.pt"))["model"]
    assert _fit(binding, run, "--scst-epochs", "1", "--scst-lr", "1e-2") == 0  # resumes into SCST
    after = read_checkpoint(os.path.join(run, "last.pt"))
    assert after["train"]["phase"] == 1 and after["train"]["epoch"] == 2
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    for key in backbone:
        assert torch.equal(before[key], after["model"][key]), key
    assert not torch.equal(before["out.weight"], after["model"]["out.weight"])


def test_scst_resumes_exactly(binding, tmp_path, monkeypatch):
    """Interrupted after its first SCST epoch and resumed, a run ends where an
    uninterrupted one does, tensor for tensor (weights, Adam state, counters)."""
    args = ["--scst-epochs", "2", "--preload-mb", "0", "--workers", "1"]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    assert _fit(binding, straight, *args) == 0
    real_end_epoch = epochs_module.end_epoch

    def end_epoch_then_ctrl_c(model, vocab, optimizer, state, *rest, **kwargs):
        real_end_epoch(model, vocab, optimizer, state, *rest, **kwargs)
        if state["epoch"] == 2:  # after the first SCST epoch's checkpoint
            raise KeyboardInterrupt

    monkeypatch.setattr(epochs_module, "end_epoch", end_epoch_then_ctrl_c)
    assert _fit(binding, resumed, *args) == 130
    monkeypatch.undo()
    assert read_checkpoint(os.path.join(resumed, "last.pt"))["train"]["epoch"] == 2
    assert _fit(binding, resumed, *args) == 0
    from test_fit_state import assert_same_tensors
    a, b = (read_checkpoint(os.path.join(r, "last.pt")) for r in (straight, resumed))
    assert a["train"]["epoch"] == 3 and a["optimizer"]["state"]
    for key in ("model", "optimizer", "train"):
        assert_same_tensors(a[key], b[key], key)


def test_unreadable_image_read_lazily_is_skipped_and_named(binding, tmp_path, capsys):
    folder = str(tmp_path / "set")
    shutil.copytree(os.path.dirname(binding), folder)
    shutil.copy(os.path.join(ROOT, "tests", "fixtures", "corrupt", "garbage.jpg"),
                os.path.join(folder, "images", "00003.png"))
    run = str(tmp_path / "run")
    assert _fit(os.path.join(folder, "dataset.json"), run, "--scst-epochs", "1",
                "--preload-mb", "0", "--workers", "1") == 0
    lines = [l for l in capsys.readouterr().out.splitlines() if "skipped this epoch" in l]
    assert len(lines) == 2 and all("00003.png" in l for l in lines), lines  # CE, then SCST
    log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert [(e["phase"], e["skipped"]) for e in log] == [("joint", 1), ("scst", 1)]


def test_scst_on_two_gloo_ranks_with_an_odd_number_of_images(binding, tmp_path):
    """17 training images, 2 ranks, batch 8: the ranks get the same number of
    batches and the SCST epoch ends (it used to hang until killed)."""
    run = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    ranks = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "train", "fit", "--data", binding, "--out", run, "--epochs", "1",
         "--scst-epochs", "1", "--scst-samples", "2", "--val-images", "2"] + TINY,
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True)
    try:
        out, err = ranks.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        ranks.terminate()  # torchrun passes SIGTERM on to the ranks (each in its own session)
        try:
            ranks.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            ranks.kill()
        pytest.fail("the two ranks did not finish within 240 s (a collective one rank never reached?)")
    assert ranks.returncode == 0, err[-3000:]
    assert "train 17 images" in out
    log = [json.loads(line) for line in open(os.path.join(run, "log.jsonl"))]
    assert [e["phase"] for e in log] == ["joint", "scst"]
    assert any(l.startswith("weights identical on 2 ranks") for l in out.splitlines())


@pytest.mark.parametrize("flags,encodes", [(["--freeze-encoder"], False), ([], True)])
def test_a_frozen_encoder_run_reads_the_feature_cache(binding, tmp_path, monkeypatch, flags, encodes):
    """With ``--freeze-encoder`` (no fine-tuning) SCST's epoch runs no encoder pass:
    it reads the decoder phase's feature cache; after joint training it encodes."""
    from train.objectives import scst

    encoded, in_epoch = [], []
    real_encode, real_epoch = Captioner.encode, scst.run_scst_epoch

    def counting_encode(self, images):
        if in_epoch:
            encoded.append(images.shape[0])
        return real_encode(self, images)

    def flagged_epoch(*args, **kwargs):
        in_epoch.append(True)
        try:
            return real_epoch(*args, **kwargs)
        finally:
            in_epoch.pop()

    monkeypatch.setattr(Captioner, "encode", counting_encode)
    monkeypatch.setattr(scst, "run_scst_epoch", flagged_epoch)
    assert _fit(binding, str(tmp_path / "run"), "--scst-epochs", "1", *flags) == 0
    assert (sum(encoded) > 0) == encodes, encoded
