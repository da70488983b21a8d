"""Checkpoints: state_dict + model config + vocabulary, never pickled modules.

Loaded with ``torch.load(..., weights_only=True)``: a checkpoint from a stranger
cannot run code. Layout::

    {"format": "nanocap-checkpoint", "version": 1, "config": {...},
     "vocab": {...}, "model": state_dict, "train": {epoch, step, best_score, ...},
     "optimizer": optimizer state_dict (optional)}
"""
import os

import torch

from edge.errors import NanocapError
from edge.vocab import Vocabulary
from train.model import Captioner, ModelConfig


def save_checkpoint(path, model, vocab, train_state=None, optimizer=None):
    """Write atomically (temp file + rename), so a crash never leaves half a file."""
    model = getattr(model, "module", model)  # unwrap DDP
    payload = {"format": "nanocap-checkpoint", "version": 1,
               "config": model.config.to_dict(), "vocab": vocab.to_dict(),
               "model": model.state_dict(), "train": dict(train_state or {})}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_checkpoint(path):
    """The raw checkpoint dict (tensors on CPU), safely unpickled."""
    if not os.path.isfile(path):
        raise NanocapError("checkpoint not found: %s" % path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors vary by torch version
        raise NanocapError("cannot read checkpoint %s: %s" % (path, str(exc).splitlines()[0]))
    if not isinstance(payload, dict) or payload.get("format") != "nanocap-checkpoint":
        raise NanocapError("not a nanocap checkpoint: %s" % path)
    return payload


def load_checkpoint(path, device="cpu"):
    """Rebuild ``(model in eval mode, vocab, payload)`` from a checkpoint alone."""
    payload = read_checkpoint(path)
    config = ModelConfig.from_dict(payload["config"])
    model = Captioner(config, weights="none")
    model.load_state_dict(payload["model"])
    model.to(device).eval()
    return model, Vocabulary.from_dict(payload["vocab"]), payload
