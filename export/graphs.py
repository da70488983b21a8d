"""Torch wrapper modules that define the exported graphs (see ``edge/bundle.py``).

Each wrapper reuses the Captioner's own ``encode``/``init_state``/``step``; the
only logic added here is the greedy loop, unrolled in Python so the ONNX graph
has no ``Loop`` node (TensorRT 8.2 / JetPack 4.6 floor).

Shapes (N dynamic batch, H/W input size, T steps, S state, V vocabulary):
- ``CaptionGraph``:     image uint8 [N,H,W,3] -> tokens int32 [N,T], logprobs float32 [N,T]
- ``EncoderGraph``:     image uint8 [N,H,W,3] -> state float32 [N,S], *memory
- ``DecoderStepGraph``: token int32 [N], state float32 [N,S], *memory
                        -> logprobs float32 [N,V], state_out float32 [N,S]

``memory`` is the model's per-image tensors (``Captioner.memory_names``, e.g.
the attention decoder's regions and keys; none for ``fc``, whose bundle has
exactly the inputs/outputs of ``GRAPH_IO``): the encoder computes them once,
every step takes them unchanged (``graph_io`` gives a model's names; the
backends pass every extra encoder output to every step, repeated per beam).

Greedy decoding rule, as ``train.model.decoding.greedy_search`` (the PyTorch reference
that ``export verify`` compares against): at each step the token is ``argmax``
of the float log-probabilities (first index on ties); once ``<end>`` has been
emitted every later token is 0 (``<pad>``) and its log-probability 0. The graph
form differs only in being traceable: no early exit, masking after the loop.
"""
import torch
import torch.nn as nn

# (graph name, input names, output names): the contract in edge/bundle.py.
GRAPH_IO = {
    "caption": (["image"], ["tokens", "logprobs"]),
    "encoder": (["image"], ["state"]),
    "decoder_step": (["token", "state"], ["logprobs", "state_out"]),
    "caption_beam": (["image"], ["tokens", "score"]),
}
NEG = -1.0e4  # "impossible" log-probability: finite, so fp16 engines hold it too


class CaptionGraph(nn.Module):
    """Greedy captioning in one graph: ``max_len`` decoder steps unrolled.

    Per step only the model's ``step`` and one TopK (K=1: the first maximum's
    value and index, as ``argmax``) run; the token fed back is the raw choice.
    What follows ``<end>`` is masked once for the whole caption after the loop
    (``ended [N,T] @ strictly-upper-triangular ones [T,T]`` counts the ends
    before each position: a MatMul instead of CumSum, which TensorRT 8.2 lacks).
    """

    def __init__(self, model, start_id, end_id, max_len):
        super().__init__()
        self.model = model
        self.start_id = int(start_id)
        self.end_id = int(end_id)
        self.max_len = int(max_len)
        # int32 constants: comparisons stay int32 (no int64 casts, no bool constants,
        # which TensorRT 8.2 cannot hold as weights).
        self.register_buffer("start", torch.tensor([self.start_id], dtype=torch.int32),
                             persistent=False)
        self.register_buffer("before", torch.ones(self.max_len, self.max_len).triu(1),
                             persistent=False)

    def forward(self, image):
        state, memory = self.model.start(image)
        # [N] start tokens built from the batch size (ConstantOfShape, no Loop).
        token = torch.zeros_like(state[:, 0], dtype=torch.int32) + self.start
        tokens, scores = [], []
        for _ in range(self.max_len):
            logprobs, state = self.model.step(token, state, *memory)
            best, index = torch.topk(logprobs, 1, dim=1)                   # [N, 1] each
            tokens.append(index)
            scores.append(best)
            token = index.view(-1)
        tokens, scores = torch.cat(tokens, dim=1), torch.cat(scores, dim=1)  # [N, T]
        ends_before = torch.matmul((tokens == self.end_id).float(), self.before)
        alive = ends_before == 0.0
        return (torch.where(alive, tokens, torch.zeros_like(tokens)).to(torch.int32),
                torch.where(alive, scores, torch.zeros_like(scores)))


def repeat_memory(memory, k):
    """Each per-image memory tensor ``[N, ...]`` -> ``[N*K, ...]`` (row i*K+j = image i)."""
    return tuple(m.unsqueeze(1).expand(-1, k, *m.shape[1:]).reshape(-1, *m.shape[1:])
                 for m in memory)


class BeamGraph(nn.Module):
    """Beam search in one graph: K beams, ``max_len`` steps unrolled.

    image uint8 [N,H,W,3] -> tokens int32 [N,T] (best beam, 0 after <end>),
    score float32 [N] (summed log-probability / length ** length_norm).
    The rules of ``train.model.decoding.beam_search`` (the reference it is checked
    against), in TensorRT 8.2's op set: TopK with a constant K, beams reordered
    with GatherElements (on float and int32 data only: the finished flags are
    gathered as int32 0/1), integer Div instead of Mod, a finite ``NEG`` for -inf.
    """

    def __init__(self, model, start_id, end_id, max_len, beam_size, length_norm, pad_id=0):
        super().__init__()
        self.model, self.max_len, self.k = model, int(max_len), int(beam_size)
        self.length_norm = float(length_norm)
        vocab = model.config.vocab_size
        frozen = torch.full((vocab,), NEG)
        frozen[pad_id] = 0.0  # a finished beam extends with <pad> at no cost
        first = torch.full((self.k,), NEG)
        first[0] = 0.0  # one live beam at first
        for name, value in (("frozen", frozen), ("first", first),
                            ("start", torch.tensor([start_id], dtype=torch.int32)),
                            ("end", torch.tensor([end_id], dtype=torch.int32))):
            self.register_buffer(name, value, persistent=False)

    def forward(self, image):
        k, vocab = self.k, self.model.config.vocab_size
        state, memory = self.model.start(image)                           # [N,S]
        memory = repeat_memory(memory, k)                                   # [N*K, ...]
        width = state.shape[1]
        state = state.unsqueeze(1).expand(-1, k, -1)                        # [N,K,S]
        sums = state[:, :, 0] * 0.0 + self.first                            # [N,K]
        lengths = sums * 0.0
        token = torch.zeros_like(sums, dtype=torch.int32) + self.start     # [N,K]
        done = token == self.end                                            # all false
        history = None
        for _ in range(self.max_len):
            logprobs, flat_state = self.model.step(token.reshape(-1), state.reshape(-1, width),
                                                    *memory)
            logprobs = torch.where(done.unsqueeze(2), self.frozen,
                                   logprobs.reshape(-1, k, vocab))
            candidates = (sums.unsqueeze(2) + logprobs).reshape(-1, k * vocab)
            sums, flat = torch.topk(candidates, k, dim=1)
            origin = torch.div(flat, vocab, rounding_mode="trunc")           # [N,K]
            token = (flat - origin * vocab).to(torch.int32)
            state = torch.gather(flat_state.reshape(-1, k, width), 1,
                                 origin.unsqueeze(2).expand(-1, -1, width))
            # TensorRT 8.2 gathers no BOOL (export/trt_ops.py): gather 0/1 int32, compare
            was_done = torch.gather(done.to(torch.int32), 1, origin) > 0
            lengths = torch.gather(lengths, 1, origin) + (~was_done).float()
            step_tokens = torch.where(was_done, torch.zeros_like(token), token).unsqueeze(2)
            if history is None:
                history = step_tokens
            else:
                history = torch.gather(history, 1, origin.unsqueeze(2).expand(
                    -1, -1, history.shape[2]))
                history = torch.cat([history, step_tokens], dim=2)
            done = was_done | (token == self.end)
        final = sums / lengths.clamp(min=1.0) ** self.length_norm if self.length_norm else sums
        score, best = torch.max(final, dim=1)
        tokens = torch.gather(history, 1, best.view(-1, 1, 1).expand(-1, 1, self.max_len))
        return tokens.reshape(-1, self.max_len), score  # reshape: a static T axis


class EncoderGraph(nn.Module):
    """Image frames -> initial decoder state, then the model's memory tensors."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        state, memory = self.model.start(image)
        return (state,) + tuple(memory) if memory else state


class DecoderStepGraph(nn.Module):
    """One decoder step for beam search on the device (int32 tokens in)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, token, state, *memory):
        return self.model.step(token, state, *memory)


def graph_io(name, model):
    """``(input names, output names)`` of graph ``name`` for ``model``: ``GRAPH_IO``
    plus the model's memory tensors (``model.memory_names``) as extra outputs of
    ``encoder`` and extra inputs of ``decoder_step`` (none for ``fc``)."""
    inputs, outputs = GRAPH_IO[name]
    memory = list(getattr(model, "memory_names", ()))
    if name == "encoder":
        return list(inputs), list(outputs) + memory
    if name == "decoder_step":
        return list(inputs) + memory, list(outputs)
    return list(inputs), list(outputs)


def build_graph(name, model, vocab, max_len, beam_size=3, length_norm=0.7):
    """The wrapper module for graph ``name`` (a key of ``GRAPH_IO``).

    The model's ``folded_weights`` are computed here, outside any trace, and
    held as buffers of the wrapper: a trace then records each as one shared
    initializer (not the folding itself, nor a copy per unrolled step)."""
    module = _build(name, model, vocab, max_len, beam_size, length_norm)
    if hasattr(model, "folded_weights"):
        with torch.no_grad():
            for key, tensor in model.folded_weights().items():
                module.register_buffer("folded_" + key, tensor)
    return module


def _build(name, model, vocab, max_len, beam_size, length_norm):
    if name == "caption_beam":
        return BeamGraph(model, vocab.start_id, vocab.end_id, max_len, beam_size,
                         length_norm, vocab.pad_id).eval()
    if name == "caption":
        return CaptionGraph(model, vocab.start_id, vocab.end_id, max_len).eval()
    if name == "encoder":
        return EncoderGraph(model).eval()
    if name == "decoder_step":
        return DecoderStepGraph(model).eval()
    raise ValueError("unknown graph %r" % name)


def example_inputs(name, model, batch=1):
    """Example tensors used to trace graph ``name`` (shapes as in the contract)."""
    size = model.config.image_size
    image = torch.zeros(batch, size, size, 3, dtype=torch.uint8)
    if name in ("caption", "encoder", "caption_beam"):
        return (image,)
    token = torch.ones(batch, dtype=torch.int32)
    with torch.no_grad():
        state, memory = model.start(image)
    return (token, torch.zeros_like(state)) + tuple(memory)
