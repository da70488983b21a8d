"""PyTorch eager reference backend, with the same interface as the edge backends.

``TorchBackend(checkpoint, decode="greedy"|"beam", beam_size=3, threads=None)``:
``caption(frames) -> [CaptionResult(text, tokens, latency_ms)]`` for a list of
``uint8 [H, W, 3]`` BGR frames of any size; ``last_stages_ms`` holds the
``resize``, ``inference`` (encoder + search in torch) and ``decode``
(detokenising) times of the last call in ms. The benchmark measures it in the
same run as ONNX Runtime so that speed-ups are honest on a noisy machine, and
its fp32 captions are the reference for caption agreement.
"""
import time

import numpy as np
import torch

from edge.backends import CaptionResult
from edge.errors import NanocapError
from edge.image import resize
from edge.search import trim_tokens
from train.model.checkpoint import load_checkpoint
from train.model.decoding import decode_batch


class TorchBackend(object):
    """The checkpoint run eagerly on the CPU (or ``device``)."""

    name = "torch"

    def __init__(self, checkpoint, decode="greedy", beam_size=3, device="cpu", threads=None):
        if decode not in ("greedy", "beam"):
            raise NanocapError("decode must be greedy or beam, not %r" % decode)
        if threads:
            torch.set_num_threads(int(threads))  # process-wide: torch has no per-model setting
        self.model, self.vocab, _ = load_checkpoint(checkpoint, device=device)
        self.device = torch.device(device)
        self.beam_size = 1 if decode == "greedy" else int(beam_size)
        self.decode = decode
        size = int(self.model.config.image_size)
        self.input_size = (size, size)
        self.providers = ["torch-%s (%d threads)" % (device, torch.get_num_threads())]
        self.last_stages_ms = {}

    def caption(self, frames):
        """Frames (list of uint8 BGR arrays) -> list of ``CaptionResult``."""
        if not len(frames):
            return []
        t0 = time.perf_counter()
        batch = np.stack([resize(f, self.input_size) for f in frames])
        images = torch.from_numpy(batch).to(self.device)
        t1 = time.perf_counter()
        tokens = decode_batch(self.model, self.vocab, images, self.beam_size).cpu().tolist()
        t2 = time.perf_counter()
        ids = [trim_tokens(row, self.vocab.end_id) for row in tokens]
        texts = [self.vocab.decode(row) for row in ids]
        t3 = time.perf_counter()
        self.last_stages_ms = {"resize": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                               "decode": (t3 - t2) * 1e3}
        per_frame = (t3 - t0) * 1e3 / len(frames)
        return [CaptionResult(text, row, per_frame) for text, row in zip(texts, ids)]

    def close(self):
        self.model = None
