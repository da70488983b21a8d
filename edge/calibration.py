"""Calibration inputs for int8: real images, and the decoder inputs they lead to.

Shared by the ONNX Runtime quantizer (``export/quantize.py``) and the TensorRT
INT8 entropy calibrator (``edge/trt/calibrator.py``), so both calibrate on the same
data. numpy + OpenCV; ONNX Runtime only for ``decoder_step`` feeds.
"""
import os
import sys

import numpy as np

from edge.errors import NanocapError
from edge.image import list_images, read_image, resize

DEFAULT_IMAGES = 64


def calibration_images(directory, size, limit=DEFAULT_IMAGES, log=None):
    """Up to ``limit`` images of ``directory`` resized to ``size`` (H, W):
    ``uint8 [K,H,W,3]`` BGR. Unreadable files are skipped and counted."""
    if not directory or not os.path.isdir(directory):
        raise NanocapError("int8 calibration needs --calib-images DIR (a directory of "
                           "images like the ones the model will see); got %r" % (directory,))
    frames, skipped = [], 0
    for path in list_images(directory):
        try:
            frames.append(resize(read_image(path), size))
        except NanocapError:
            skipped += 1
        if len(frames) >= limit:
            break
    if not frames:
        raise NanocapError("no readable images for int8 calibration in %s%s" % (
            directory, " (%d unreadable)" % skipped if skipped else ""))
    if skipped:
        (log or sys.stderr).write("calibration: skipped %d unreadable image(s) in %s\n"
                                  % (skipped, directory))
    return np.stack(frames)


def calibration_feeds(graph, bundle_dir, images, max_len, start_id, batch=8, drop_last=False):
    """Feed dicts (input name -> array) for calibrating ``graph``.

    caption/encoder: ``{"image": uint8 [b,H,W,3]}`` batches of ``images``.
    decoder_step: the ``{"token": int32 [b], "state": float32 [b,S]}`` pairs (plus
    the encoder's memory outputs, e.g. the att decoder's keys/values) met
    while greedily decoding those images with the bundle's fp32 ``encoder.onnx``
    and ``decoder_step.onnx`` (ONNX Runtime, CPU). ``drop_last`` drops a short
    final batch (TensorRT calibrates with one fixed batch size)."""
    stop = len(images) - (len(images) % batch if drop_last else 0)
    batches = [images[i:i + batch] for i in range(0, stop, batch)]
    if graph != "decoder_step":
        return [{"image": b} for b in batches]
    import onnxruntime as ort
    opts = {"providers": ["CPUExecutionProvider"]}
    enc = ort.InferenceSession(os.path.join(bundle_dir, "encoder.onnx"), **opts)
    step = ort.InferenceSession(os.path.join(bundle_dir, "decoder_step.onnx"), **opts)
    memory_names = [o.name for o in enc.get_outputs()][1:]  # att: keys, values
    feeds = []
    for frames in batches:
        outputs = enc.run(None, {"image": frames})
        state, memory = outputs[0], dict(zip(memory_names, outputs[1:]))
        token = np.full((len(frames),), start_id, dtype=np.int32)
        for _ in range(max_len):
            feed = dict(memory, token=token, state=state)
            feeds.append(feed)
            logprobs, state = step.run(None, feed)
            token = logprobs.argmax(axis=1).astype(np.int32)
    return feeds
