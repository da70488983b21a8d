"""Greedy and beam search over one decoding step (torch).

Written once over a step function, in the style of self-critical.pytorch's
base class: the search only needs next-token log-probabilities::

    step(tokens int [N], state [N, S], *memory) -> (logprobs [N, V], state [N, S])

which is ``train.model.captioner.Captioner.step``; the initial state and the memory
(per-image tensors passed to every step, repeated per beam; empty for ``fc``)
are ``model.start(images)``. The torch-free twin used on the
device is ``edge.search`` (numpy); both follow the same rules so they agree
token for token on the same step outputs:

- the output holds the generated tokens (no ``<start>``), ``<end>`` included
  when emitted, then ``<pad>`` (0); its width is always ``max_len``;
- a finished sequence stays finished (it only extends with ``<pad>`` at no cost);
- beam candidates are ranked by their summed log-probability; the final
  choice among the K beams divides each sum by ``length ** length_norm``
  (length counts ``<end>``; ``length_norm=0`` means no normalisation);
- ties are broken towards the lower index (beam, then token id).
"""
import numpy as np
import torch

from edge.image import resize
from edge.search import DEFAULT_LENGTH_NORM, PAD_ID, trim_tokens


@torch.no_grad()
def greedy_search(step, state, start_id, end_id, max_len, memory=()):
    """Pick the most likely token at every step.

    Returns ``(tokens LongTensor [N, max_len], logprobs FloatTensor [N, max_len])``:
    the chosen ids (``<pad>`` after ``<end>``) and their log-probabilities
    (0 after ``<end>``).
    """
    n, device = state.shape[0], state.device
    tokens = torch.full((n, max_len), PAD_ID, dtype=torch.long, device=device)
    logprobs = torch.zeros((n, max_len), dtype=torch.float32, device=device)
    current = torch.full((n,), start_id, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for t in range(max_len):
        step_logprobs, state = step(current, state, *memory)
        step_logprobs = step_logprobs.float()
        best = step_logprobs.argmax(dim=1)                        # first max on ties
        best_lp = step_logprobs.gather(1, best.unsqueeze(1)).squeeze(1)
        best = torch.where(done, torch.full_like(best, PAD_ID), best)
        tokens[:, t] = best
        logprobs[:, t] = torch.where(done, torch.zeros_like(best_lp), best_lp)
        done = done | (best == end_id)
        if bool(done.all()):
            break
        current = best
    return tokens, logprobs


def _topk_stable(scores, k):
    """Top-``k`` of each row of ``scores [N, M]``, ties towards the lower index.

    Sorting (stable, descending) rather than ``torch.topk``, whose tie order is
    unspecified, keeps the result identical to ``edge.search``.
    """
    values, index = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], index[:, :k]


def _length_normalised(sums, lengths, length_norm):
    """``sums [N, K] / lengths [N, K] ** length_norm`` (no-op when 0)."""
    if not length_norm:
        return sums
    return sums / lengths.float().clamp(min=1.0) ** length_norm


@torch.no_grad()
def beam_search(step, state, start_id, end_id, max_len, beam_size=3,
                length_norm=DEFAULT_LENGTH_NORM, memory=()):
    """Keep the ``beam_size`` best partial captions of each image.

    ``state [N, S]`` -> ``(tokens LongTensor [N, max_len], scores FloatTensor [N])``:
    the best beam per image (``<pad>`` after ``<end>``) and its summed
    log-probability divided by ``length ** length_norm``.
    """
    n, k, device = state.shape[0], int(beam_size), state.device
    if k < 1:
        raise ValueError("beam_size must be >= 1, not %r" % beam_size)
    state = state.repeat_interleave(k, dim=0)                     # [N*K, S]
    memory = tuple(m.repeat_interleave(k, dim=0) for m in memory)  # [N*K, ...]
    sums = torch.full((n, k), float("-inf"), device=device)
    sums[:, 0] = 0.0                                              # one live beam at first
    history = torch.full((n, k, max_len), PAD_ID, dtype=torch.long, device=device)
    lengths = torch.zeros((n, k), dtype=torch.long, device=device)
    done = torch.zeros((n, k), dtype=torch.bool, device=device)
    current = torch.full((n * k,), start_id, dtype=torch.long, device=device)
    rows = torch.arange(n, device=device).unsqueeze(1)
    for t in range(max_len):
        step_logprobs, state = step(current, state, *memory)
        step_logprobs = step_logprobs.float().view(n, k, -1)
        vocab_size = step_logprobs.shape[2]
        frozen = torch.full_like(step_logprobs, float("-inf"))
        frozen[:, :, PAD_ID] = 0.0                                # finished: pad, no cost
        step_logprobs = torch.where(done.unsqueeze(2), frozen, step_logprobs)
        candidates = (sums.unsqueeze(2) + step_logprobs).view(n, k * vocab_size)
        sums, flat = _topk_stable(candidates, k)
        origin, token = flat // vocab_size, flat % vocab_size     # [N, K] each
        history = history[rows, origin]
        history[:, :, t] = token
        was_done = done[rows, origin]
        lengths = lengths[rows, origin] + (~was_done).long()
        done = was_done | (token == end_id)
        state = state.view(n, k, -1)[rows, origin].view(n * k, -1)
        if bool(done.all()):
            break
        current = token.view(-1)
    final = _length_normalised(sums, lengths, length_norm)
    best_score, best = _topk_stable(final, 1)
    return history[rows[:, 0], best[:, 0]], best_score[:, 0]


def sample_search(step, state, start_id, end_id, max_len, temperature=1.0, generator=None,
                  memory=()):
    """Draw one caption per row by multinomial sampling, keeping the graph for
    policy gradients (self-critical training, ``train.objectives.scst``).

    ``step``, ``state [N, S]`` and ``memory`` as for ``greedy_search``; ``generator``
    (None: the global one) lives on ``state``'s device. The policy is the step's distribution without
    ``<pad>`` and ``<start>`` (never valid words), renormalised; tokens are drawn
    from it sharpened by ``temperature``, their log-probabilities are its own.
    Returns ``(tokens LongTensor [N, max_len], logprobs FloatTensor [N, max_len],
    mask BoolTensor [N, max_len])`` on ``state``'s device: ``<pad>`` after ``<end>``; each chosen token's
    log-probability (differentiable; 0 after ``<end>``); True up to and including
    ``<end>``.
    """
    n = state.shape[0]
    tokens = torch.full((n, max_len), PAD_ID, dtype=torch.long, device=state.device)
    mask = torch.zeros((n, max_len), dtype=torch.bool, device=state.device)
    chosen_logprobs = []
    current = torch.full((n,), start_id, dtype=torch.long, device=state.device)
    done = torch.zeros(n, dtype=torch.bool, device=state.device)
    for t in range(max_len):
        step_logprobs, state = step(current, state, *memory)
        step_logprobs = torch.log_softmax(step_logprobs.float().index_fill(
            1, torch.tensor([PAD_ID, start_id], device=state.device), float("-inf")), dim=1)
        with torch.no_grad():
            probs = torch.softmax(step_logprobs / temperature, dim=1)
            drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        picked = step_logprobs.gather(1, drawn.unsqueeze(1)).squeeze(1)
        drawn = torch.where(done, torch.full_like(drawn, PAD_ID), drawn)
        chosen_logprobs.append(torch.where(done, torch.zeros_like(picked), picked))
        tokens[:, t] = drawn
        mask[:, t] = ~done
        done = done | (drawn == end_id)
        if bool(done.all()):
            break
        current = drawn
    logprobs = torch.stack(chosen_logprobs, dim=1)
    if logprobs.shape[1] < max_len:
        logprobs = torch.cat([logprobs, logprobs.new_zeros((n, max_len - logprobs.shape[1]))], dim=1)
    return tokens, logprobs, mask


def decode_batch(model, vocab, images, beam_size=1, length_norm=DEFAULT_LENGTH_NORM):
    """Decode a batch: ``uint8 [N, H, W, 3]`` BGR tensor at the model's size (on any
    device: it moves to the model's) -> ``tokens LongTensor [N, max_len]`` on the
    model's device (greedy when ``beam_size == 1``)."""
    max_len = int(model.config.max_len)
    with torch.no_grad():
        state, memory = model.start(images.to(model.device))
        if beam_size <= 1:
            tokens, _ = greedy_search(model.step, state, vocab.start_id, vocab.end_id, max_len,
                                      memory=memory)
        else:
            tokens, _ = beam_search(model.step, state, vocab.start_id, vocab.end_id, max_len,
                                    beam_size=beam_size, length_norm=length_norm, memory=memory)
    return tokens


def _as_batch(images, size):
    """Frames (list of BGR uint8 arrays of any size, or an ``[N,H,W,3]`` array or
    tensor) -> uint8 tensor ``[N, size, size, 3]`` resized with ``edge.image.resize``."""
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    frames = [resize(np.asarray(f, dtype=np.uint8), (size, size)) for f in images]
    return torch.from_numpy(np.stack(frames)) if frames else torch.zeros(
        (0, size, size, 3), dtype=torch.uint8)


def caption_images(model, vocab, images_uint8_NHWC, beam_size=1, batch_size=64,
                   length_norm=DEFAULT_LENGTH_NORM):
    """Caption BGR frames with a ``Captioner`` (in eval mode).

    ``images_uint8_NHWC``: ``uint8 [N, H, W, 3]`` BGR (array or tensor) or a list
    of frames of any size; each is resized to the model's ``image_size``.
    Returns ``[(text, token ids without <end>/<pad>), ...]`` in input order.
    """
    size = int(model.config.image_size)
    results = []
    frames = list(images_uint8_NHWC)
    for begin in range(0, len(frames), batch_size):
        batch = _as_batch(frames[begin:begin + batch_size], size)
        tokens = decode_batch(model, vocab, batch, beam_size, length_norm).cpu()
        for row in tokens.tolist():
            ids = trim_tokens(row, vocab.end_id)
            results.append((vocab.decode(ids), ids))
    return results
