"""train.model.decoding (torch greedy/beam): known answers, and token-for-token
agreement with edge.search (numpy) on the same step outputs."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge import search as np_search  # noqa: E402
from test_search import END, START, memory_step, random_step, table_step, trap_table  # noqa: E402
from train.model import decoding  # noqa: E402


def torch_step(numpy_step):
    """Wrap a numpy step so the torch search can drive it (same outputs)."""
    def step(tokens, state, *memory):
        logprobs, new = numpy_step(tokens.numpy(), state.numpy(), *[m.numpy() for m in memory])
        return torch.from_numpy(np.asarray(logprobs)), torch.from_numpy(np.asarray(new))
    return step


def test_trap_greedy_and_beam():
    step = torch_step(table_step(trap_table()))
    state = torch.zeros(3, 1)
    tokens, logprobs = decoding.greedy_search(step, state, START, END, 5)
    assert tokens.dtype == torch.long and tokens.shape == (3, 5)
    assert tokens[0].tolist() == [3, END, 0, 0, 0]
    assert logprobs.dtype == torch.float32
    beam, scores = decoding.beam_search(step, state, START, END, 5, beam_size=2,
                                        length_norm=0.0)
    assert beam[0].tolist() == [4, END, 0, 0, 0]
    assert scores.shape == (3,)
    assert float(scores[0]) == pytest.approx(np.log(0.36), rel=1e-5)


@pytest.mark.parametrize("beam_size,length_norm", [(1, 0.0), (2, 0.0), (3, 0.7),
                                                   (4, 1.0), (6, 0.7)])
def test_torch_and_numpy_agree(beam_size, length_norm):
    for seed in range(6):
        np_step, state = random_step(seed, end_bias=float(seed % 3))
        t_tokens, t_lp = decoding.greedy_search(torch_step(np_step), torch.from_numpy(state),
                                                START, END, 9)
        n_tokens, n_lp = np_search.greedy_search(np_step, state, START, END, 9)
        assert t_tokens.tolist() == n_tokens.tolist()
        np.testing.assert_allclose(t_lp.numpy(), n_lp, rtol=1e-6)
        t_beam, t_scores = decoding.beam_search(torch_step(np_step), torch.from_numpy(state),
                                                START, END, 9, beam_size, length_norm)
        n_beam, n_scores = np_search.beam_search(np_step, state, START, END, 9,
                                                 beam_size, length_norm)
        assert t_beam.tolist() == n_beam.tolist()
        np.testing.assert_allclose(t_scores.numpy(), n_scores, rtol=1e-5)


def test_torch_and_numpy_agree_with_memory():
    np_step, state, memory, _ = memory_step(3)
    t_memory = tuple(torch.from_numpy(m) for m in memory)
    for k in (1, 3):
        t_tokens, _ = decoding.beam_search(torch_step(np_step), torch.from_numpy(state), START,
                                           END, 7, beam_size=k, memory=t_memory)
        n_tokens, _ = np_search.beam_search(np_step, state, START, END, 7, beam_size=k,
                                            memory=memory)
        assert t_tokens.tolist() == n_tokens.tolist()
    t_tokens, _ = decoding.greedy_search(torch_step(np_step), torch.from_numpy(state), START,
                                         END, 7, memory=t_memory)
    n_tokens, _ = np_search.greedy_search(np_step, state, START, END, 7, memory=memory)
    assert t_tokens.tolist() == n_tokens.tolist()


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    from train.model.checkpoint import load_checkpoint
    model, vocab, _ = load_checkpoint(tiny_checkpoint)
    return model, vocab


def test_agree_on_the_real_model_step(tiny_model):
    """The numpy search driven by Captioner.step gives the torch search's tokens."""
    model, vocab = tiny_model
    images = torch.from_numpy(np.random.RandomState(0).randint(0, 255, (4, 64, 64, 3))
                              .astype(np.uint8))
    with torch.no_grad():
        state = model.init_state(model.encode(images))

        def numpy_step(tokens, st):
            lp, new = model.step(torch.from_numpy(tokens), torch.from_numpy(st))
            return lp.numpy(), new.numpy()
        for k in (1, 3):
            t_tokens, _ = decoding.beam_search(model.step, state, 1, 2, 8, beam_size=k)
            n_tokens, _ = np_search.beam_search(numpy_step, state.numpy(), 1, 2, 8, beam_size=k)
            assert t_tokens.tolist() == n_tokens.tolist()


def test_caption_images_any_size(tiny_model):
    model, vocab = tiny_model
    rng = np.random.RandomState(1)
    frames = [rng.randint(0, 255, (50, 80, 3)).astype(np.uint8),
              rng.randint(0, 255, (64, 64, 3)).astype(np.uint8)]
    greedy = decoding.caption_images(model, vocab, frames)
    beam = decoding.caption_images(model, vocab, frames, beam_size=3)
    assert len(greedy) == len(beam) == 2
    for text, ids in greedy + beam:
        assert isinstance(text, str) and text == vocab.decode(ids)
        assert all(i not in (0, 2) for i in ids) and len(ids) <= model.config.max_len
    # batching does not change the result
    assert decoding.caption_images(model, vocab, frames, batch_size=1) == greedy
