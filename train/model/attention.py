"""The attention decoder (``train fit --decoder att``): Show, Attend and Tell's
soft attention in the Att2in arrangement, on the Captioner's folded step.

Shapes (N batch, R = h*w regions, F feature size, A attention size = hidden H,
G gates (GRU 3, LSTM 4), S state, V vocabulary, T steps):

- ``encode(images) -> regions [N, R, F]``: the backbone's last feature map
  before pooling, one row per cell in row-major order (3x3 at 96 px for
  MobileNetV3-small, 2x2 at 64 px, 7x7 at 224 px).
- ``init_decoder(regions) -> (state [N,S], (keys [N,R,A], values [N,R,G*H]))``:
  the initial state from the mean region feature (``init_state``, as ``fc``
  from its pooled vector); ``keys`` = regions @ W_k + b_k; ``values`` =
  regions @ W_ctx, the regions already multiplied into the GRU/LSTM input
  gates (the context enters the RNN beside the word embedding: the RNN's input
  is ``[embedding; context]``, and both halves of its input weights are
  folded: the embedding into ``table``, the context into ``values``). Computed
  once per image; every step takes them unchanged (``memory_names``).
- ``step(tokens, state, keys, values) -> (logprobs [N,V], state)``: additive
  attention conditioned on the hidden state, ``e = w_s . tanh(keys + h W_q)``,
  ``alpha = softmax_R(e)``, context gates ``alpha @ values`` added to the
  gathered ``table`` row, then the shared recurrent ``cell`` and the output
  Gemm. ``return_attention=True`` also returns ``alpha [N, R]`` (the figure of
  ``train caption --attention``: the same code path). Attention adds MatMul,
  Unsqueeze, Add, Tanh, MatMul, Squeeze, Softmax (opset 13, last axis),
  Unsqueeze, MatMul, Squeeze, Add: plain ops TensorRT 8.2 imports.
- ``forward_features(regions, tokens_in [N,T]) -> logits [N,T,V]``: teacher
  forcing loops over the same step; it leaves the step's attention weights
  ``attention_weights [N,T,R]`` for ``attention_penalty`` (the doubly
  stochastic regulariser of ``fit --att-reg LAMBDA``).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from edge.errors import NanocapError
from train.model.captioner import Captioner


class AttentionCaptioner(Captioner):
    """Backbone regions + additive attention + GRU/LSTM (``config.decoder == "att"``)."""

    memory_names = ("keys", "values")

    def __init__(self, config, weights="none"):
        super().__init__(config, weights)
        hidden = config.hidden
        rnn_class = nn.GRU if config.rnn == "gru" else nn.LSTM
        self.rnn = rnn_class(config.embed + self.feature_dim, hidden, batch_first=True)
        self.att_key = nn.Linear(self.feature_dim, hidden)
        self.att_query = nn.Linear(hidden, hidden, bias=False)
        self.att_score = nn.Linear(hidden, 1, bias=False)  # a bias would cancel in softmax
        self.attention_weights = None

    # -- encoder -----------------------------------------------------------
    def feature_map(self, images):
        """``uint8 [N,H,W,3]`` BGR -> the last feature map ``[N, F, h, w]`` (before pooling)."""
        return self.backbone[:-2](self.preprocess(images))  # drop the pooling and Flatten

    def encode(self, images):
        """``uint8 [N,H,W,3]`` BGR -> regions ``[N, R, F]`` (R = h*w, row-major)."""
        return self.feature_map(images).flatten(2).transpose(1, 2)

    def init_decoder(self, features, w=None):
        """Regions ``[N,R,F]`` -> ``(state [N,S], (keys [N,R,A], values [N,R,G*H]))``."""
        w = self.folded_weights() if w is None else w
        state = self.init_state(features.mean(1))
        return state, (self.att_key(features), torch.matmul(features, w["w_ctx"]))

    # -- folded weights ------------------------------------------------------
    def fold_params(self):
        return Captioner.fold_params(self) + (self.att_query.weight, self.att_score.weight)

    def _fold(self, embed, w_ih, b_ih, w_hh, b_hh, w_out, b_out, w_query, w_score):
        """``Captioner._fold`` on the embedding half of the input weights, plus
        ``w_ctx [F, G*H]`` (the context half, in the folded gate order),
        ``w_query [H, A]`` and ``w_score [A, 1]``."""
        E = self.config.embed
        folded = Captioner._fold(self, embed, w_ih[:, :E], b_ih, w_hh, b_hh, w_out, b_out)
        w_ctx = w_ih[:, E:]
        order = self.gate_order()
        if order is not None:
            w_ctx = w_ctx.index_select(0, order.to(w_ctx.device))
        folded.update(w_ctx=w_ctx.t().contiguous(), w_query=w_query.t().contiguous(),
                      w_score=w_score.t().contiguous())
        return folded

    # -- the step ------------------------------------------------------------
    def attend(self, w, state, keys, values):
        """Additive attention: ``(context gates [N, G*H], alpha [N, R])``."""
        h, _ = self._split_state(state)
        query = torch.matmul(h, w["w_query"]).unsqueeze(1)                 # [N,1,A]
        energy = torch.matmul(torch.tanh(keys + query), w["w_score"]).squeeze(2)  # [N,R]
        alpha = torch.softmax(energy, dim=-1)
        return torch.matmul(alpha.unsqueeze(1), values).squeeze(1), alpha

    def advance(self, w, tokens, state, keys, values):
        """One step before the vocabulary layer: ``(h [N,H], new state [N,S], alpha [N,R])``."""
        context, alpha = self.attend(w, state, keys, values)
        h, new_state = self.cell(w, w["table"].index_select(0, tokens) + context, state)
        return h, new_state, alpha

    def step_logits(self, tokens, state, keys, values, return_attention=False):
        """``(logits [N,V], new state [N,S])`` (+ ``alpha [N,R]`` when asked)."""
        w = self.folded_weights()
        h, new_state, alpha = self.advance(w, tokens, state, keys, values)
        logits = torch.addmm(w["b_out"], h, w["w_out"])
        return (logits, new_state, alpha) if return_attention else (logits, new_state)

    def step(self, tokens, state, keys, values, return_attention=False):
        """``(logprobs [N,V], new state [N,S])`` (+ ``alpha [N,R]`` when asked)."""
        out = self.step_logits(tokens, state, keys, values, return_attention)
        return (F.log_softmax(out[0], dim=-1),) + tuple(out[1:])

    # -- teacher forcing -----------------------------------------------------
    def forward_features(self, features, tokens_in):
        """Regions ``[N,R,F]``, tokens ``[N,T]`` -> logits ``[N,T,V]``; sets
        ``attention_weights [N,T,R]`` (alpha of every step) for ``attention_penalty``."""
        w = self.folded_weights()
        state, (keys, values) = self.init_decoder(features, w)
        tokens_in = tokens_in.long()
        outputs, alphas = [], []
        for t in range(tokens_in.shape[1]):
            h, state, alpha = self.advance(w, tokens_in[:, t], state, keys, values)
            outputs.append(h)
            alphas.append(alpha)
        self.attention_weights = torch.stack(alphas, dim=1)
        return self.out(self.dropout(torch.stack(outputs, dim=1)))


def attention_penalty(alphas, targets):
    """Show, Attend and Tell's doubly stochastic regulariser: ``alphas [N,T,R]``
    (``attention_weights``), ``targets int [N,T]`` (the tokens each step is
    trained to emit, ``<pad>`` = 0) -> ``mean_{N,R} (1 - sum_t alpha_t)^2``
    over the steps whose target is a word or ``<end>``, so a caption's penalty
    does not depend on how long the other captions of its batch are."""
    live = (targets != 0).to(alphas.dtype).unsqueeze(2)                     # [N,T,1]
    coverage = (alphas * live).sum(1)                                        # [N,R]
    return ((1.0 - coverage) ** 2).mean()


def attention_maps(model, images, tokens, start_id):
    """The attention weights behind ``tokens``: ``images uint8 [N,H,W,3]`` (at the
    model's size), ``tokens int [N,T]`` (generated, no ``<start>``) -> ``float
    [N, T, h, w]``, map t being the one step t generated token t from (replayed
    through ``step(..., return_attention=True)``)."""
    device = model.device
    with torch.no_grad():
        feature_map = model.feature_map(images.to(device))
        state, memory = model.init_decoder(feature_map.flatten(2).transpose(1, 2))
        current = torch.full((images.shape[0],), int(start_id), dtype=torch.long, device=device)
        tokens = tokens.to(device)
        maps = []
        for t in range(tokens.shape[1]):
            _, state, alpha = model.step(current, state, *memory, return_attention=True)
            maps.append(alpha)
            current = tokens[:, t].long()
    return torch.stack(maps, dim=1).reshape(images.shape[0], tokens.shape[1],
                                            *feature_map.shape[2:])


def require_attention(model, what="the checkpoint"):
    """``model`` if it is an ``att`` model, else ``NanocapError`` (one line)."""
    if not isinstance(model, AttentionCaptioner):
        raise NanocapError("--attention needs an attention checkpoint (train fit --decoder att); "
                           "%s has the %r decoder" % (what, model.config.decoder))
    return model


def write_attention_figures(captioner, files, frames, out_dir):
    """The Show-Attend-Tell picture of each captioned frame: ``captioner`` a
    ``train.evaluation.torch_backend.TorchBackend`` on an ``att`` checkpoint, ``frames``
    uint8 BGR images (any size) read from ``files``. Writes ``OUT_DIR/<name>.png``
    (the caption's words, then ``<end>``, each over its attention map); returns
    the paths written."""
    import os

    import numpy as np

    from edge.image import resize
    from train.evaluation.attention_figure import save_attention_figure
    model, vocab = require_attention(captioner.model), captioner.vocab
    os.makedirs(out_dir, exist_ok=True)
    size = captioner.input_size
    written = []
    for path, frame, result in zip(files, frames, captioner.caption(frames)):
        ended = len(result.tokens) < int(model.config.max_len)
        ids = list(result.tokens) + ([vocab.end_id] if ended else [])
        image = torch.from_numpy(resize(frame, size)[None]).to(captioner.device)
        maps = attention_maps(model, image, torch.tensor([ids]), vocab.start_id)[0]
        words = [vocab.itos[i] for i in ids]
        name = os.path.splitext(os.path.basename(path))[0] + ".png"
        written.append(save_attention_figure(os.path.join(out_dir, name), frame, words,
                                             np.asarray(maps.cpu())))
    return written
