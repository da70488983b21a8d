"""Greedy captions from step engines that hold each weight once, on the GPU.

The one-graph ``caption`` engine unrolls T decoder steps; where TensorRT may hold
its weights once per step beyond the GPU's budget (``edge.trt.engine_size``:
on a 4 GB Nano at the design size), ``StepCaption`` gives the same contract
from two engines built once each: ``encoder`` and ``decoder_step`` with a
TopK(1) head (``edge.trt.heads``). Per caption: the frames go to the GPU once,
the encoder's state and memory stay there, then T step launches each read the
token the previous one wrote (tokens ``[T+1, N]`` and their log-probabilities
``[T, N]`` are rows of two device buffers, the state alternates between two
buffers), and the tokens and scores come back in one copy each: no host round
trip per step. What follows ``<end>`` is masked as in the caption graph.

``open_caption`` chooses: the ``caption`` engine where its per-use weight
estimate at this precision fits ``budget_bytes(GPU memory)``, else the steps
(``NANOCAP_TRT_CAPTION=graph|steps`` forces one), and says which on ``log``.
"""
import os

import numpy as np

from edge.trt.engine_size import budget_bytes, engine_weights
from edge.trt.runner import DeviceBuffers, TrtGraph, engine_for

CAPTION_ENV = "NANOCAP_TRT_CAPTION"


def mask_after_end(tokens, scores, end_id):
    """Tokens ``[N,T]`` and scores ``[N,T]`` with every position after the first
    ``end_id`` set to 0 (as the caption graph's output)."""
    ended = tokens == end_id
    alive = (np.cumsum(ended, axis=1) - ended) == 0
    return np.where(alive, tokens, 0).astype(np.int32), np.where(alive, scores, 0.0)


class StepCaption(object):
    """``{"image": uint8 [N,H,W,3]} -> [tokens int32 [N,T], logprobs float32 [N,T]]``
    from an encoder engine and a greedy-headed decoder_step engine (TrtGraphs)."""

    outputs = ["tokens", "logprobs"]

    def __init__(self, encoder, step, start_id, end_id, max_len, cuda):
        self.encoder, self.step, self.cuda = encoder, step, cuda
        self.start_id, self.end_id, self.max_len = int(start_id), int(end_id), int(max_len)
        self.max_batch = min(encoder.max_batch, step.max_batch)
        self.memory = DeviceBuffers(cuda)

    def __call__(self, feeds):
        image = feeds["image"]
        with self.cuda.active():
            parts = [self._caption(image[i:i + self.max_batch])
                     for i in range(0, len(image), self.max_batch)]
        return [np.concatenate([p[k] for p in parts]) for k in (0, 1)]

    def _caption(self, image):
        n, steps, get = len(image), self.max_len, self.memory.get
        frames = np.ascontiguousarray(image, dtype=self.encoder.dtype("image"))
        encoded = self.encoder.set_shapes({"image": frames.shape})
        pointers = {"image": get("image", frames.nbytes)}
        self.cuda.to_device(pointers["image"], frames)
        for name, shape in encoded.items():
            pointers[name] = get(name, _nbytes(shape, self.encoder.dtype(name)))
        self.encoder.launch(pointers)
        tokens = np.full((steps + 1, n), self.start_id, dtype=np.int32)
        token_rows = get("tokens", tokens.nbytes)
        self.cuda.to_device(token_rows, tokens[:1])
        score_rows = get("scores", steps * n * 4)
        shapes = dict((name, shape) for name, shape in encoded.items())
        shapes["token"] = (n,)
        outs = self.step.set_shapes(dict((k, v) for k, v in shapes.items()
                                         if k in self.step.inputs))
        state = [pointers["state"], get("state_b", _nbytes(encoded["state"], np.float32))]
        scratch = get("logprobs", _nbytes(outs["logprobs"], np.float32))
        memory = dict((k, pointers[k]) for k in self.step.inputs if k in encoded)
        for t in range(steps):
            step = dict(memory, token=int(token_rows) + t * n * 4, state=state[t % 2],
                        state_out=state[(t + 1) % 2], logprobs=scratch,
                        best_token=int(token_rows) + (t + 1) * n * 4,
                        best_logprob=int(score_rows) + t * n * 4)
            self.step.launch(step)
        scores = np.empty((steps, n), dtype=np.float32)
        self.cuda.to_host(tokens, token_rows)
        self.cuda.to_host(scores, score_rows)
        self.cuda.synchronize()
        return mask_after_end(tokens[1:].T, scores.T, self.end_id)

    def close(self):
        self.memory = DeviceBuffers(self.cuda)
        self.encoder.close()
        self.step.close()


def _nbytes(shape, dtype):
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def caption_fits(bundle, precision, total_memory):
    """``(fits, figures, budget)``: whether the caption graph's per-use weight
    estimate at ``precision`` fits this GPU's engine budget."""
    figures = engine_weights(bundle.graph_path("caption", "fp32"))
    held = figures["per_use_bytes" if precision == "fp32" else "per_use_fp16_bytes"]
    budget = budget_bytes(total_memory)
    return held <= budget, held, budget


def open_caption(bundle, precision, cuda, log, **build):
    """The greedy caption for ``bundle`` on this GPU: a ``TrtGraph`` of the caption
    engine where it fits (one call per caption), else a ``StepCaption``."""
    forced = os.environ.get(CAPTION_ENV, "auto")
    fits, held, budget = caption_fits(bundle, precision, cuda.total_memory())
    if forced == "graph" or (forced != "steps" and fits):
        return TrtGraph(engine_for(bundle, "caption", precision, log=log, **build), cuda)
    why = ("%s=steps" % CAPTION_ENV if forced == "steps" else
           "caption.onnx may hold %.0f MiB of weights copied per step (%s), over this GPU's "
           "%.0f MiB engine budget" % (held / 1048576.0, precision, budget / 1048576.0))
    log("TensorRT: %s: greedy captions run the encoder and greedy step engines (each "
        "weight once; tokens stay on the GPU)" % why)
    encoder = TrtGraph(engine_for(bundle, "encoder", precision, log=log, **build), cuda)
    step = TrtGraph(engine_for(bundle, "decoder_step", precision, log=log, head="greedy",
                               **build), cuda)
    return StepCaption(encoder, step, bundle.vocab.start_id, bundle.vocab.end_id,
                       bundle.max_len, cuda)
