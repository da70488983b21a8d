"""The captioner's shapes, step == teacher forcing, checkpoints."""
import pytest
import torch

from edge.errors import NanocapError
from edge.vocab import SPECIALS, Vocabulary
from train.model.build import build_captioner
from train.model.captioner import ModelConfig
from train.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

V = 12


def _model(rnn="gru", seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=V, rnn=rnn, embed=8, hidden=16, image_size=64, max_len=6)
    return build_captioner(config, weights="none").eval()


def _images(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 64, 64, 3), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("rnn, state_dim", [("gru", 16), ("lstm", 32)])
def test_shapes(rnn, state_dim):
    model = _model(rnn)
    images = _images()
    features = model.encode(images)
    assert features.shape == (3, model.feature_dim) and model.feature_dim == 576
    state = model.init_state(features)
    assert state.shape == (3, state_dim)
    logprobs, new_state = model.step(torch.tensor([1, 4, 5]), state)
    assert logprobs.shape == (3, V) and new_state.shape == (3, state_dim)
    assert torch.allclose(logprobs.exp().sum(1), torch.ones(3), atol=1e-5)
    assert model(images, torch.ones(3, 7, dtype=torch.long)).shape == (3, 7, V)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_step_equals_teacher_forcing(rnn):
    model = _model(rnn)
    images = _images()
    tokens = torch.tensor([[1, 4, 5, 6, 2], [1, 7, 3, 9, 10], [1, 11, 8, 2, 0]])
    with torch.no_grad():
        forced = torch.log_softmax(model(images, tokens), dim=-1)
        state = model.init_state(model.encode(images))
        for t in range(tokens.shape[1]):
            logprobs, state = model.step(tokens[:, t], state)
            assert torch.allclose(logprobs, forced[:, t], atol=1e-5), t


def test_checkpoint_round_trip(tmp_path):
    model = _model("lstm", seed=1)
    vocab = Vocabulary(list(SPECIALS) + ["w%d" % i for i in range(V - 4)])
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, model, vocab, {"epoch": 3})
    # loadable with weights_only=True: no pickled modules or classes inside
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["rnn"] == "lstm" and raw["train"]["epoch"] == 3
    loaded, loaded_vocab, payload = load_checkpoint(path)
    assert loaded_vocab.itos == vocab.itos and loaded.config == model.config
    images = _images(2, seed=5)
    tokens = torch.tensor([[1, 4, 5], [1, 6, 2]])
    with torch.no_grad():
        assert torch.equal(loaded(images, tokens), model(images, tokens))
    assert not any(k.startswith("module.") for k in payload["model"])


def test_bad_checkpoints_and_config(tmp_path):
    with pytest.raises(NanocapError, match="not found"):
        read_checkpoint(str(tmp_path / "none.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(NanocapError, match="cannot read checkpoint"):
        read_checkpoint(str(junk))
    torch.save({"hello": 1}, str(tmp_path / "other.pt"))
    with pytest.raises(NanocapError, match="not a nanocap checkpoint"):
        read_checkpoint(str(tmp_path / "other.pt"))
    with pytest.raises(NanocapError, match="unknown backbone"):
        build_captioner(ModelConfig(vocab_size=V, backbone="mobilenet_v9"))
    with pytest.raises(NanocapError, match="--rnn"):
        build_captioner(ModelConfig(vocab_size=V, rnn="transformer"))


def test_folded_view_follows_the_parameters():
    model = _model("gru")
    state, tokens = torch.randn(2, 16), torch.tensor([1, 4])
    with torch.no_grad():
        before, _ = model.step(tokens, state)
        assert torch.equal(model.step(tokens.int(), state)[0], before)   # int32 tokens too
        model.embed.weight[4] += 1.0            # an in-place update, as an optimizer makes
        after, _ = model.step(tokens, state)
    assert torch.equal(after[0], before[0]) and not torch.allclose(after[1], before[1])
    other = _model("gru", seed=7)
    with torch.no_grad():
        other.step(tokens, state)               # its own folded view, then new weights
        other.load_state_dict(model.state_dict())
        assert torch.equal(other.step(tokens, state)[0], after)
    model.train()
    logprobs, _ = model.step(tokens, state)     # autograd reaches the saved parameters
    logprobs[:, 3].sum().backward()
    assert model.embed.weight.grad[4].abs().sum() > 0 and model.out.weight.grad is not None
    assert set(model.state_dict()) == set(other.state_dict())  # no folded tensors saved
    assert not any("fold" in k or "table" in k for k in model.state_dict())
