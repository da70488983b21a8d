"""Self-critical training: sampling, reward, baselines, the loss's sign, and the
``--scst-epochs`` phase of ``train fit`` on a tiny binding set."""
import json
import os

import numpy as np
import pytest
import torch

from edge.vocab import SPECIALS, Vocabulary
from train.__main__ import main
from train.checkpoint import load_checkpoint
from train.decoding import greedy_search, sample_search
from train.model import Captioner, ModelConfig
from train.scst import Reward, mean_baseline, scst_batch, scst_loss
from train.synth import write_dataset

TINY = ["--weights", "none", "--image-size", "64", "--hidden", "32", "--embed", "16",
        "--batch-size", "8", "--max-len", "12", "--min-count", "1", "--no-progress"]
WORDS = ["a", "red", "blue", "circle", "square", "and"]


def _model(seed=0, max_len=8):
    torch.manual_seed(seed)
    vocab = Vocabulary(list(SPECIALS) + WORDS)
    config = ModelConfig(vocab_size=len(vocab), image_size=64, embed=16, hidden=32, max_len=max_len)
    return Captioner(config, weights="none").eval(), vocab


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
    torch.manual_seed(0)
    history = []
    for _ in range(30):
        loss, stats = scst_batch(model, images, [0, 1, 2, 3], reward, vocab, 4, baseline, 8)
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
        assert entry["scst_reward"] >= 0 and entry["scst_length"] > 0
        assert entry["scst_samples"] == 3 and "scst_greedy_reward" in entry and "CIDEr" in entry["val"]
    assert "mean reward" in capsys.readouterr().out
    assert load_checkpoint(os.path.join(run, "last.pt"))[2]["train"]["epoch"] == 3
    # the mean baseline needs two samples: one clear line before any training
    assert main(args + ["--out", str(tmp_path / "other"), "--scst-epochs", "3", "--scst-samples", "1"]) == 2
    assert "--scst-samples must be >= 2" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "other" / "log.jsonl"))
