"""The captioner: a torchvision backbone whose pooled features set the initial
state of a GRU (or LSTM) language model.

Shapes (N batch, T caption steps, F feature size, S state size, V vocabulary):
- images: ``uint8 [N, H, W, 3]`` BGR, already resized (``edge.image.resize``);
  ``preprocess`` casts, flips to RGB, scales and normalises inside the model,
  so the exported graph takes raw frames.
- ``encode(images) -> features [N, F]``; ``init_state(features) -> state [N, S]``
  where S = hidden (GRU) or 2 * hidden (LSTM: h and c side by side).
- ``init_decoder(features) -> (state [N, S], memory)`` and ``start(images)``
  (= ``init_decoder(encode(images))``): ``memory`` is a tuple of per-image
  tensors ``[N, ...]`` that every step receives unchanged; empty for the ``fc``
  decoder, the attended regions (and their projected keys) for ``att``.
  ``memory_names`` names them in the bundle (``encoder.onnx`` outputs
  ``state`` + memory, ``decoder_step.onnx`` takes ``token, state`` + memory).
- ``step(tokens int [N], state [N, S], *memory) -> (logprobs [N, V], state [N, S])``:
  the one decoding step shared by greedy/beam search and the ONNX export. It
  runs on ``folded_weights()`` (embedding folded into the input gates, one Gemm
  per gate group), a derived view: saved parameter names are unchanged.
- ``forward(images, tokens_in [N, T]) -> logits [N, T, V]`` (teacher forcing).
"""
import contextlib
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from edge.errors import NanocapError

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
BACKBONES = ("mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2",
             "resnet18", "resnet50")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model (stored in checkpoints and bundles)."""
    vocab_size: int
    backbone: str = "mobilenet_v3_small"
    rnn: str = "gru"
    embed: int = 256
    hidden: int = 512
    image_size: int = 224
    max_len: int = 20
    dropout: float = 0.2
    bn_momentum: float = 0.1
    decoder: str = "fc"  # "fc" (pooled features set the state) or "att" (train.model.attention)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def build_backbone(name, weights="none"):
    """A torchvision classifier by name with its classifier removed.

    Returns ``(module: images [N,3,H,W] -> features [N,F], F)``. ``weights`` is
    ``"imagenet"`` (torchvision's DEFAULT weights enum; downloads once) or ``"none"``.
    """
    import torchvision
    if name not in torchvision.models.list_models():
        raise NanocapError("unknown backbone %r (try one of: %s)" % (name, ", ".join(BACKBONES)))
    enum = None
    if weights == "imagenet":
        enum = torchvision.models.get_model_weights(name).DEFAULT
    elif weights not in (None, "none"):
        raise NanocapError("--weights must be imagenet or none, not %r" % weights)
    try:
        net = torchvision.models.get_model(name, weights=enum)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise NanocapError(
            "could not load ImageNet weights for %s (%s). Offline? Download them once "
            "with network access (python -c \"import torchvision; torchvision.models.get_model("
            "'%s', weights='DEFAULT')\") so they land in ~/.cache/torch, or pass --weights none"
            % (name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, name))
    if hasattr(net, "features"):
        body = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    else:  # ResNet-style: everything but the final fc
        body = nn.Sequential(*list(net.children())[:-1], nn.Flatten())
    body.eval()
    with torch.no_grad():
        dim = body(torch.zeros(1, 3, 64, 64)).shape[1]
    return body, int(dim)


class Preprocess(nn.Module):
    """``uint8 [N,H,W,3]`` BGR -> normalised ``float32 [N,3,H,W]`` RGB."""

    def __init__(self):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD_RGB).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.register_buffer("bgr_to_rgb", torch.tensor([2, 1, 0]), persistent=False)

    def forward(self, images):
        # Cast first (TensorRT's parser is handed the image as float32: edge.trt.build),
        # then NCHW, then the channel flip: gathering 3 whole planes is a block copy
        # (0.6 ms less than a per-pixel gather on the last axis at 224 px).
        x = images.float().permute(0, 3, 1, 2).index_select(1, self.bgr_to_rgb)
        return (x - self.mean) / self.std


DECODERS = ("fc", "att")


class Captioner(nn.Module):
    """MobileNet (or other torchvision backbone) + GRU/LSTM captioner with the ``fc``
    decoder; ``train.model.build.build_captioner(config)`` makes the one a config
    asks for (``att``: ``train.model.attention.AttentionCaptioner``, a subclass)."""

    def __init__(self, config, weights="none"):
        super().__init__()
        if config.rnn not in ("gru", "lstm"):
            raise NanocapError("--rnn must be gru or lstm, not %r" % config.rnn)
        if config.decoder not in DECODERS:
            raise NanocapError("--decoder must be fc or att, not %r" % config.decoder)
        self.config = config
        self.preprocess = Preprocess()
        self.backbone, self.feature_dim = build_backbone(config.backbone, weights)
        for module in self.backbone.modules():
            if isinstance(module, nn.BatchNorm2d) and config.bn_momentum:
                module.momentum = config.bn_momentum
        hidden, gates = config.hidden, (3 if config.rnn == "gru" else 4)
        self.state_dim = hidden * (1 if config.rnn == "gru" else 2)
        self.init_state_proj = nn.Linear(self.feature_dim, self.state_dim)
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        rnn_class = nn.GRU if config.rnn == "gru" else nn.LSTM
        self.rnn = rnn_class(config.embed, hidden, batch_first=True)
        assert self.rnn.weight_ih_l0.shape[0] == gates * hidden
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(hidden, config.vocab_size)

    @property
    def device(self):
        """Where the parameters are: every tensor the model is fed or makes follows it."""
        return self.out.weight.device

    # -- encoder -----------------------------------------------------------
    def encode(self, images):
        """``uint8 [N,H,W,3]`` BGR -> pooled features ``[N, F]``."""
        return self.backbone(self.preprocess(images))

    def init_state(self, features):
        """Features ``[N, F]`` -> initial decoder state ``[N, S]``."""
        return torch.tanh(self.init_state_proj(features))

    # -- decoder -----------------------------------------------------------
    def _split_state(self, state):
        hidden = self.config.hidden
        if self.config.rnn == "gru":
            return state, None
        return state[:, :hidden], state[:, hidden:]

    def forward_features(self, features, tokens_in):
        """Teacher forcing: features ``[N,F]``, tokens ``[N,T]`` -> logits ``[N,T,V]``."""
        h, c = self._split_state(self.init_state(features))
        hx = h.unsqueeze(0).contiguous()
        if c is not None:
            hx = (hx, c.unsqueeze(0).contiguous())
        outputs, _ = self.rnn(self.embed(tokens_in.long()), hx)
        return self.out(self.dropout(outputs))

    def forward(self, images, tokens_in):
        """Images ``uint8 [N,H,W,3]``, tokens ``[N,T]`` -> logits ``[N,T,V]``."""
        return self.forward_features(self.encode(images), tokens_in)

    # -- the decoding interface (shared by every search and exported graph) ----
    memory_names = ()  # fc: no per-image memory (att: e.g. ("regions", "keys"))

    def init_decoder(self, features):
        """Encoder output -> ``(state [N,S], memory)``: what every step receives.
        ``memory`` is a tuple of per-image tensors ``[N, ...]`` computed once and
        passed unchanged to every ``step`` (empty for ``fc``)."""
        return self.init_state(features), ()

    def start(self, images):
        """``uint8 [N,H,W,3]`` BGR -> ``(state, memory)`` (``encode`` + ``init_decoder``)."""
        return self.init_decoder(self.encode(images))

    def folded_weights(self):
        """The decoder's weights rearranged for few operators per step (a derived
        view of the saved parameters; checkpoints keep the ``nn.GRU``/``nn.LSTM``
        names). Keys: ``table [V, G*H]`` = embedding @ W_ih^T + biases (one row
        gathered per token instead of an embedding lookup plus a Gemm); ``w_gates
        [H, G'*H]`` the hidden-to-gate weights transposed for ``addmm``; ``w_new``,
        ``b_new`` (GRU: the candidate gate's hidden weights and bias); ``w_out
        [H, V]``, ``b_out [V]``. GRU gates are ordered (r, z | n), LSTM gates
        (i, f, o | g) so one Sigmoid covers a contiguous block.

        Cached while the parameters are unchanged (keyed on their version
        counters); recomputed, not cached, when autograd needs them, except
        inside ``folded_once()``."""
        pinned = getattr(self, "_pinned_fold", None)
        if pinned is not None:
            return pinned
        params = self.fold_params()
        live = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        cached = getattr(self, "_folded", None)
        if not live and cached is not None and cached[0] == key:
            return cached[1]
        with torch.set_grad_enabled(live):
            folded = self._fold(*params)
        if not live:  # plain tensors: a trace records them as constants (initializers)
            folded = dict((name, t.detach().clone()) for name, t in folded.items())
            self._folded = (key, folded)
        return folded

    @contextlib.contextmanager
    def folded_once(self):
        """Within: every ``folded_weights()`` (so every ``step``) returns one fold
        built on entry, with autograd when the parameters need it: a sampled
        batch (``train.objectives.scst``) folds its [V, G*H] table once, not once per step.
        The parameters must not change inside (no optimizer step)."""
        self._pinned_fold = None
        self._pinned_fold = self.folded_weights()
        try:
            yield self._pinned_fold
        finally:
            self._pinned_fold = None

    def fold_params(self):
        """The parameters ``folded_weights`` derives from (``_fold``'s arguments)."""
        return (self.embed.weight, self.rnn.weight_ih_l0, self.rnn.bias_ih_l0,
                self.rnn.weight_hh_l0, self.rnn.bias_hh_l0, self.out.weight, self.out.bias)

    def _fold(self, embed, w_ih, b_ih, w_hh, b_hh, w_out, b_out):
        H = self.config.hidden
        table = embed @ w_ih.t() + b_ih                                     # [V, G*H]
        if self.config.rnn == "gru":       # r and z take both biases; n keeps b_hh apart
            table = torch.cat([table[:, :2 * H] + b_hh[:2 * H], table[:, 2 * H:]], dim=1)
            return {"table": table.contiguous(), "w_gates": w_hh[:2 * H].t().contiguous(),
                    "w_new": w_hh[2 * H:].t().contiguous(), "b_new": b_hh[2 * H:].contiguous(),
                    "w_out": w_out.t().contiguous(), "b_out": b_out}
        order = self.gate_order().to(embed.device)
        table = (table + b_hh).index_select(1, order)
        return {"table": table.contiguous(), "w_gates": w_hh.index_select(0, order).t().contiguous(),
                "w_out": w_out.t().contiguous(), "b_out": b_out}

    def gate_order(self):
        """Column order of the folded gates (LSTM: i f g o -> i f o g); None for GRU."""
        if self.config.rnn == "gru":
            return None
        H = self.config.hidden
        return torch.cat([torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H),
                          torch.arange(2 * H, 3 * H)])

    def step_logits(self, tokens, state, *memory):
        """One decoding step: tokens ``int [N]`` (int32 or int64), state ``[N,S]``,
        memory (``init_decoder``'s, unchanged) -> ``(logits [N,V], new state [N,S])``.

        GRU, 13 operators: Gather, Split, Gemm (r|z, input gates as its C),
        Sigmoid, Split, Gemm (n), Mul, Add, Tanh, Sub, Mul, Add, Gemm (vocabulary); plain
        ONNX ops that TensorRT 8.2 imports. ``fc`` ignores ``memory``."""
        w = self.folded_weights()
        h, new_state = self.cell(w, w["table"].index_select(0, tokens), state)
        return torch.addmm(w["b_out"], h, w["w_out"]), new_state

    def cell(self, w, gi, state):
        """The recurrent update on folded weights ``w``: input-gate pre-activations
        ``gi [N, G*H]`` (a gathered ``table`` row, plus any context) and ``state
        [N,S]`` -> ``(h [N,H], new state [N,S])``."""
        H = self.config.hidden
        if self.config.rnn == "gru":
            gi_rz, gi_n = gi.split([2 * H, H], 1)
            r, z = torch.sigmoid(torch.addmm(gi_rz, state, w["w_gates"])).split(H, 1)
            n = torch.tanh(gi_n + r * torch.addmm(w["b_new"], state, w["w_new"]))
            h = n + z * (state - n)                                         # (1-z) n + z h
            new_state = h
        else:
            h, c = self._split_state(state)
            gates = torch.addmm(gi, h, w["w_gates"])
            i, f, o = torch.sigmoid(gates[:, :3 * H]).split(H, 1)
            c = f * c + i * torch.tanh(gates[:, 3 * H:])
            h = o * torch.tanh(c)
            new_state = torch.cat([h, c], dim=1)
        return h, new_state

    def step(self, tokens, state, *memory):
        """One decoding step: tokens ``int [N]``, state ``[N,S]``, memory ->
        ``(logprobs [N,V], new state [N,S])``: ``step_logits`` + LogSoftmax.
        The step every search (``train.model.decoding``, ``edge.search`` through
        ``decoder_step.onnx``) and every exported graph uses."""
        logits, new_state = self.step_logits(tokens, state, *memory)
        return F.log_softmax(logits, dim=-1), new_state


def count_parameters(model):
    """Number of trainable and frozen parameters."""
    return sum(p.numel() for p in model.parameters())
