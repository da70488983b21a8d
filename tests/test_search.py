"""edge.search (numpy greedy/beam) on hand-built step functions with known answers.

Torch-free: also runs on the Python 3.6 floor (``.venv36``).
"""
import numpy as np
import pytest

from edge.search import beam_search, greedy_search, trim_tokens

PAD, START, END, A, B, C = 0, 1, 2, 3, 4, 5
V = 6


def table_step(table):
    """A step whose next-token distribution depends only on the previous token.

    ``table[prev]`` holds probabilities over V tokens; the state ``[N, 1]`` is
    unused (carried through) so that reordering of states is still exercised.
    """
    logtable = np.log(np.asarray(table, dtype=np.float64) + 1e-12).astype(np.float32)

    def step(tokens, state):
        return logtable[np.asarray(tokens)], state + 1.0
    return step


def trap_table():
    """Greedy takes A (0.6) then <end> (0.34): 0.204. Best is B <end>: 0.4 * 0.9 = 0.36."""
    table = np.full((V, V), 1.0 / V)
    table[START] = [0, 0, 0, 0.6, 0.4, 0]
    table[A] = [0, 0, 0.34, 0.33, 0, 0.33]
    table[B] = [0, 0, 0.9, 0.05, 0.05, 0]
    table[C] = [0, 0, 1.0, 0, 0, 0]
    return table


def random_step(seed, vocab=11, hidden=7, end_bias=1.0):
    """A small random RNN step in numpy: ``(tokens [N], state [N,S]) -> (logprobs, state)``."""
    rng = np.random.RandomState(seed)
    w_state = rng.randn(hidden, hidden).astype(np.float32) * 0.8
    embed = rng.randn(vocab, hidden).astype(np.float32)
    w_out = rng.randn(hidden, vocab).astype(np.float32) * 2.0
    b_out = np.zeros(vocab, dtype=np.float32)
    b_out[END] = end_bias

    def step(tokens, state):
        new = np.tanh(state.dot(w_state) + embed[np.asarray(tokens)]).astype(np.float32)
        logits = new.dot(w_out) + b_out
        logits = logits - logits.max(axis=1, keepdims=True)
        logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return logprobs.astype(np.float32), new
    return step, rng.randn(5, hidden).astype(np.float32)


def test_greedy_falls_into_the_trap_and_beam_finds_the_best():
    step, state = table_step(trap_table()), np.zeros((2, 1), dtype=np.float32)
    tokens, logprobs = greedy_search(step, state, START, END, max_len=5)
    assert tokens.tolist() == [[A, END, PAD, PAD, PAD]] * 2
    np.testing.assert_allclose(logprobs[0], np.log([0.6, 0.34, 1, 1, 1]), rtol=1e-5)
    beam, scores = beam_search(step, state, START, END, max_len=5, beam_size=2,
                               length_norm=0.0)
    assert beam.tolist() == [[B, END, PAD, PAD, PAD]] * 2
    np.testing.assert_allclose(scores, np.log(0.36), rtol=1e-5)


def test_beam_of_one_is_greedy():
    step, state = random_step(3)
    greedy, logprobs = greedy_search(step, state, START, END, max_len=9)
    beam, scores = beam_search(step, state, START, END, max_len=9, beam_size=1,
                               length_norm=0.0)
    assert beam.tolist() == greedy.tolist()
    np.testing.assert_allclose(scores, logprobs.sum(axis=1), rtol=1e-5)


def test_max_len_without_end_fills_every_column():
    table = np.full((V, V), 0.01)
    table[:, C] = 0.9                       # <end> never wins
    step = table_step(table)
    tokens, _ = greedy_search(step, np.zeros((1, 1), np.float32), START, END, max_len=4)
    assert tokens.tolist() == [[C, C, C, C]]
    beam, _ = beam_search(step, np.zeros((1, 1), np.float32), START, END, max_len=4)
    assert beam.tolist() == [[C, C, C, C]]


def test_finished_beams_stay_finished_and_length_norm_prefers_longer():
    # From <start>: <end> at once (0.5) or A (0.5) then A... A <end>: each A costs little.
    table = np.full((V, V), 1e-6)
    table[START, END], table[START, A] = 0.5, 0.5
    table[A, A], table[A, END] = 0.3, 0.7
    step, state = table_step(table), np.zeros((1, 1), np.float32)
    short, short_score = beam_search(step, state, START, END, max_len=6, beam_size=3,
                                     length_norm=0.0)
    assert short.tolist() == [[END, PAD, PAD, PAD, PAD, PAD]]
    np.testing.assert_allclose(short_score, np.log(0.5), rtol=1e-5)
    longer, score = beam_search(step, state, START, END, max_len=6, beam_size=3,
                                length_norm=1.0)
    assert longer.tolist() == [[A, END, PAD, PAD, PAD, PAD]]
    np.testing.assert_allclose(score, np.log(0.5 * 0.7) / 2, rtol=1e-5)


@pytest.mark.parametrize("beam_size", [2, 3, 5])
def test_beam_never_scores_below_greedy(beam_size):
    for seed in range(4):
        step, state = random_step(seed)
        _, logprobs = greedy_search(step, state, START, END, max_len=8)
        _, scores = beam_search(step, state, START, END, max_len=8, beam_size=beam_size,
                                length_norm=0.0)
        assert np.all(scores >= logprobs.sum(axis=1) - 1e-4)


def test_beam_rejects_zero_width():
    step, state = random_step(0)
    with pytest.raises(ValueError):
        beam_search(step, state, START, END, max_len=3, beam_size=0)


def test_trim_tokens():
    assert trim_tokens([A, B, END, C]) == [A, B]
    assert trim_tokens(np.array([A, PAD, B])) == [A]


def memory_step(seed, vocab=11, hidden=7, regions=4):
    """``random_step`` that also attends to a per-image memory ``[N, R, hidden]``
    (mean-pooled and added to the state): the attention decoder's calling shape."""
    base, state = random_step(seed, vocab, hidden)
    seen = []

    def step(tokens, state, memory):
        seen.append(memory.shape)
        return base(tokens, (state + memory.mean(axis=1)).astype(np.float32))
    memory = np.random.RandomState(seed + 100).randn(state.shape[0], regions, hidden)
    return step, state, (memory.astype(np.float32),), seen


def test_memory_reaches_every_step_repeated_per_beam():
    step, state, memory, seen = memory_step(0)
    n = state.shape[0]
    tokens, _ = greedy_search(step, state, START, END, 6, memory=memory)
    assert seen and all(shape == (n, 4, 7) for shape in seen)
    del seen[:]
    beam, _ = beam_search(step, state, START, END, 6, beam_size=3, memory=memory)
    assert seen and all(shape == (n * 3, 4, 7) for shape in seen)
    # each image decodes with its own memory: one image alone gives the same tokens
    alone, _ = beam_search(step, state[2:3], START, END, 6, beam_size=3,
                           memory=(memory[0][2:3],))
    assert alone[0].tolist() == beam[2].tolist()
    alone, _ = greedy_search(step, state[2:3], START, END, 6, memory=(memory[0][2:3],))
    assert alone[0].tolist() == tokens[2].tolist()


def test_topk_matches_a_stable_descending_sort_with_ties_and_minus_inf():
    """The partition-based top-k picks what a full stable sort would: ties towards
    the lower index, also when the k-th value is tied or -inf (one live beam)."""
    from edge.search import _topk_stable
    rng = np.random.RandomState(0)
    rows = [rng.randint(0, 4, size=40).astype(np.float32) for _ in range(30)]   # many ties
    rows += [np.where(np.arange(40) < 2, rng.randn(40), -np.inf).astype(np.float32)]
    rows += [np.full(40, -np.inf, np.float32), rng.randn(40).astype(np.float32)]
    scores = np.stack(rows)
    for k in (1, 3, 5, 40):
        values, index = _topk_stable(scores, k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        assert index.tolist() == expected.tolist()
        assert np.array_equal(values, np.take_along_axis(scores, expected, axis=1))
    nan_row = np.array([[np.nan, 1.0, np.nan, 0.5]], np.float32)
    assert _topk_stable(nan_row, 2)[1].shape == (1, 2)               # a broken model: no crash
