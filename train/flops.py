"""The model's cost: parameters and FLOPs per caption (encoder + T decoder steps).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the real
modules (convolutions, matmuls; a multiply-add is 2 FLOPs, MACs = FLOPs / 2).
One caption = one encoder pass + ``init_state`` + ``T`` decoder steps, where T
is the bundle's ``max_len`` (the one-graph greedy decode always runs T steps).
Beam search runs each step on K hypotheses, so it costs encoder + T * K steps.
Weights do not change the count, so a bundle's model config alone suffices.
"""
import torch

from train.model import Captioner, ModelConfig


def _count(fn):
    """FLOPs executed by ``fn()`` (forward only, no grad)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return int(counter.get_total_flops())


def model_cost(model, max_len=None, beam_size=3):
    """``{"params", "encoder_flops", "step_flops", "flops_per_caption":
    {"greedy", "beam"}, "macs_per_caption", "max_len", "beam_size", ...}``
    for a ``Captioner`` at its configured image size."""
    config = model.config
    steps = int(max_len or config.max_len)
    size = int(config.image_size)
    model = model.eval()
    image = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    encoder = _count(lambda: model.init_state(model.encode(image)))

    def step_cost(n):
        state = torch.zeros((n, model.state_dim))
        return _count(lambda: model.step(torch.ones(n, dtype=torch.long), state))

    step1, stepk = step_cost(1), step_cost(int(beam_size))
    greedy = encoder + steps * step1
    return {"name": "%s + %s-%d" % (config.backbone, config.rnn.upper(), config.hidden),
            "params": int(sum(p.numel() for p in model.parameters())),
            "image_size": size, "vocab_size": int(config.vocab_size),
            "max_len": steps, "beam_size": int(beam_size),
            "encoder_flops": encoder, "step_flops": step1,
            "flops_per_caption": {"greedy": greedy, "beam": encoder + steps * stepk},
            "macs_per_caption": greedy // 2}


def cost_from_config(config_dict, max_len=None, beam_size=3):
    """``model_cost`` of a randomly initialised model built from a config dict
    (a bundle's ``meta["model"]``): no checkpoint needed."""
    model = Captioner(ModelConfig.from_dict(config_dict), weights="none")
    return model_cost(model, max_len=max_len, beam_size=beam_size)
