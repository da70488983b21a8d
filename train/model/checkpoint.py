"""Checkpoints: state_dict + model config + vocabulary, never pickled modules.

Loaded with ``torch.load(..., weights_only=True)``: a checkpoint from a stranger
cannot run code. Layout::

    {"format": "nanocap-checkpoint", "version": 1, "config": {...},
     "vocab": {...}, "model": state_dict, "train": {epoch, step, best_score, ...},
     "optimizer": optimizer state_dict (optional)}
"""
import os
import pickle

import torch

from edge.errors import NanocapError
from edge.vocab import Vocabulary
from train.model.build import build_captioner
from train.model.captioner import ModelConfig


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


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6


def read_checkpoint(path):
    """The raw checkpoint dict (tensors on CPU), safely unpickled.

    Any file that is not a nanocap checkpoint is one ``NanocapError`` line naming
    it. PyTorch's own messages are not passed on: they advise retrying with
    ``weights_only=False``, which would let a stranger's pickle run code."""
    if not os.path.isfile(path):
        raise NanocapError("checkpoint not found: %s" % path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != ZIP_MAGIC:
        raise NanocapError("cannot read checkpoint %s: %s, not a nanocap checkpoint (the .pt "
                           "file written by train fit)" % (path, _looks_like(path, head)))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise NanocapError("cannot read checkpoint %s: it holds Python objects other than "
                           "tensors and plain data, refused since loading them could run "
                           "code" % path)
    except Exception as exc:  # zip/storage errors vary by torch version
        raise NanocapError("cannot read checkpoint %s: the file is damaged or truncated (%s)"
                           % (path, type(exc).__name__))
    if not isinstance(payload, dict) or payload.get("format") != "nanocap-checkpoint":
        raise NanocapError("not a nanocap checkpoint: %s" % path)
    return payload


def _looks_like(path, head):
    """A short guess at what a non-checkpoint file is, for the error line."""
    if path.lower().endswith(".onnx"):
        return "it is an ONNX graph"
    if not head:
        return "it is an empty file"
    if head[:1] == b"\x80":
        return "it is a plain pickle (never loaded: it could run code)"
    return "it is not a PyTorch zip archive"


def load_checkpoint(path, device="cpu"):
    """Rebuild ``(model in eval mode, vocab, payload)`` from a checkpoint alone."""
    payload = read_checkpoint(path)
    config = ModelConfig.from_dict(payload["config"])
    model = build_captioner(config, weights="none")
    model.load_state_dict(payload["model"])
    model.to(device).eval()
    return model, Vocabulary.from_dict(payload["vocab"]), payload
