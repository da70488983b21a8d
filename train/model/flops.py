"""The model's cost: parameters and FLOPs per caption (encoder + T decoder steps).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the real
modules (convolutions, matmuls; a multiply-add is 2 FLOPs, MACs = FLOPs / 2).
One caption = one encoder pass + ``init_decoder`` + ``T`` decoder steps, where T
is the bundle's ``max_len`` (the one-graph greedy decode always runs T steps).
Beam search runs each step on K hypotheses, so it costs encoder + T * K steps.
The ``att`` decoder's price shows in both: ``init_decoder`` projects the R
regions into keys and gate values once; each step adds the query Gemm, the
R x A score and the R x G*H context MatMuls (its memory reads are activations).
Weights do not change the count, so a bundle's model config alone suffices.

Bytes of weights read per caption (``weight_bytes``), per precision: every
encoder weight once, then per decoder step the hidden-to-gate and vocabulary
weights (read again every step: at GRU-512 they exceed any GPU cache of a
Jetson) and one row of the folded input-gate table per caption in flight.
fp32 4 bytes, fp16 2; int8 as ``export/quantize.py`` writes it: the encoder's
non-depthwise Conv weights 1 byte, everything else fp32. Activations are not
counted (small at batch 1, and they stay in cache).
"""
import torch

from train.model.captioner import ModelConfig

from train.model.build import build_captioner


def _count(fn):
    """FLOPs executed by ``fn()`` (forward only, no grad)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return int(counter.get_total_flops())


PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 4}


def _encoder_bytes(model, precision):
    """Bytes of the encoder's weights (backbone + initial-state projection)."""
    total = 0
    for module in [model.backbone, model.init_state_proj] + (
            [model.att_key] if hasattr(model, "att_key") else []):  # att: keys once per image
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                size = PRECISION_BYTES[precision]
                if (precision == "int8" and isinstance(sub, torch.nn.Conv2d) and name == "weight"
                        and sub.groups == 1):
                    size = 1
                total += param.numel() * size
    return total


def weight_bytes(model, beam_size=3, max_len=None):
    """``{precision: {"encoder", "step", "greedy", "beam"}}``: bytes of weights read
    by one caption (see the module doc); ``step`` is one greedy (batch-1) step."""
    steps = int(max_len or model.config.max_len)
    with torch.no_grad():
        folded = model.folded_weights()
    gates = folded["table"].shape[1]                               # G * H
    once = ("table", "w_ctx")  # att: w_ctx makes the values once per image (init_decoder)
    shared = sum(t.numel() for k, t in folded.items() if k not in once)
    values = folded["w_ctx"].numel() if "w_ctx" in folded else 0
    out = {}
    for precision, size in PRECISION_BYTES.items():
        size = 4 if precision == "int8" else size                  # decoder stays float
        encoder = _encoder_bytes(model, precision) + values * size
        step = lambda rows: (shared + rows * gates) * size      # noqa: E731
        out[precision] = {"encoder": encoder, "step": step(1),
                          "greedy": encoder + steps * step(1),
                          "beam": encoder + steps * step(int(beam_size))}
    return out


def model_cost(model, max_len=None, beam_size=3):
    """``{"params", "encoder_flops", "step_flops", "flops_per_caption":
    {"greedy", "beam"}, "macs_per_caption", "max_len", "beam_size", ...}``
    for a ``Captioner`` at its configured image size."""
    config = model.config
    steps = int(max_len or config.max_len)
    size = int(config.image_size)
    model = model.eval()
    device = model.device
    image = torch.zeros((1, size, size, 3), dtype=torch.uint8, device=device)
    with torch.no_grad():  # the derived decoder view exists before counting (as in a graph)
        model.folded_weights()
    encoder = _count(lambda: model.start(image))

    with torch.no_grad():
        _, memory = model.start(image)

    def step_cost(n):  # the att decoder's memory (regions' keys, values) repeated per row
        state = torch.zeros((n, model.state_dim), device=device)
        tokens = torch.ones(n, dtype=torch.long, device=device)
        rows = tuple(m.expand(n, *m.shape[1:]) for m in memory)
        return _count(lambda: model.step(tokens, state, *rows))

    step1, stepk = step_cost(1), step_cost(int(beam_size))
    greedy = encoder + steps * step1
    return {"name": "%s + %s%s-%d" % (config.backbone, "att-" if config.decoder == "att" else "",
                                       config.rnn.upper(), config.hidden),
            "params": int(sum(p.numel() for p in model.parameters())),
            "image_size": size, "vocab_size": int(config.vocab_size),
            "max_len": steps, "beam_size": int(beam_size),
            "encoder_flops": encoder, "step_flops": step1,
            "flops_per_caption": {"greedy": greedy, "beam": encoder + steps * stepk},
            "macs_per_caption": greedy // 2,
            "weight_bytes_per_caption": weight_bytes(model, beam_size, steps)}


def cost_from_config(config_dict, max_len=None, beam_size=3):
    """``model_cost`` of a randomly initialised model built from a config dict
    (a bundle's ``meta["model"]``): no checkpoint needed."""
    model = build_captioner(ModelConfig.from_dict(config_dict), weights="none")
    return model_cost(model, max_len=max_len, beam_size=beam_size)
