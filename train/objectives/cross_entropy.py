"""The cross-entropy objective of ``train fit`` (teacher forcing): the module
DDP wraps, the loss over the non-pad targets, and one batch's loss with the
attention regulariser (``--att-reg``)."""
import torch.nn as nn
import torch.nn.functional as F

from train.model.attention import attention_penalty


class TrainStep(nn.Module):
    """What DDP wraps: ``(inputs, tokens_in [M,T], owner [M]) -> logits [M,T,V]``;
    inputs are images ``uint8 [B,H,W,3]`` or cached features ``[B,F]`` (any float dtype)."""

    def __init__(self, model, from_features):
        super().__init__()
        self.model, self.from_features = model, from_features

    def forward(self, inputs, tokens_in, owner):
        features = inputs.float() if self.from_features else self.model.encode(inputs)
        return self.model.forward_features(features.index_select(0, owner), tokens_in)


def caption_loss(logits, targets, smoothing):
    """Cross-entropy over non-pad targets: logits ``[M,T,V]``, targets ``[M,T]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=0, label_smoothing=smoothing)


def batch_loss(step_module, batch, args, device):
    """Loss of one ``collate`` batch on ``device``: the captions' cross-entropy,
    plus ``--att-reg`` times ``attention_penalty`` (scalar tensor)."""
    tokens = batch["tokens"].to(device, non_blocking=True)
    targets = tokens[:, 1:]
    logits = step_module(batch["inputs"].to(device, non_blocking=True), tokens[:, :-1],
                         batch["owner"].to(device, non_blocking=True))
    loss = caption_loss(logits, targets, args.label_smoothing)
    if args.att_reg:
        model = getattr(step_module, "module", step_module).model
        loss = loss + args.att_reg * attention_penalty(model.attention_weights, targets)
    return loss
