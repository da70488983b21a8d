"""``python -m export onnx``: a checkpoint -> a bundle directory (``edge/bundle.py``).

Writes ``caption.onnx`` (greedy decoding unrolled in one graph), ``encoder.onnx``
and ``decoder_step.onnx`` (for beam search on the device), their fp16 / int8
variants when asked (``export/quantize.py``) and ``nanocap.json``. Every graph is
exported with the TorchScript exporter at opset 13, IR version 7, dynamic batch
only, and checked against the JetPack 4.6 floor (``export/floor.py``).
"""
import datetime
import os
import shutil
import tempfile

import numpy as np
import onnx
import torch

from edge.atomic import make_readable, replace_dir
from edge.backends import tensorrt_present
from edge.bundle import META_NAME, PRECISIONS, load_bundle, write_meta
from edge.errors import NanocapError
from edge.search import DEFAULT_LENGTH_NORM
from export.floor import check_floor, force_ir_version
from export.graph_files import describe_io, graph_file
from export.graphs import build_graph, example_inputs, graph_io
from train.model.checkpoint import load_checkpoint

OPSET = 13
GRAPHS = ("caption", "encoder", "decoder_step")


def export_graph(module, inputs, path, graph):
    """Trace ``module`` to ONNX at ``path`` (opset 13, IR 7, dynamic batch only)."""
    input_names, output_names = graph_io(graph, module.model)
    dynamic = dict((n, {0: "N"}) for n in input_names + output_names)
    with torch.no_grad():
        torch.onnx.export(module, inputs, path, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    model = force_ir_version(onnx.load(path))
    with torch.no_grad():
        outputs = module(*inputs)
    _static_dims(model, outputs if isinstance(outputs, tuple) else (outputs,))
    onnx.save(model, path)
    check_floor(model, os.path.basename(path))
    return model


def _static_dims(model, outputs):
    """Write the traced outputs' sizes into graph outputs whose non-batch axes the
    exporter left symbolic (its shape inference gives up after GatherElements)."""
    for info, tensor in zip(model.graph.output, outputs):
        for axis, dim in enumerate(info.type.tensor_type.shape.dim):
            if axis > 0 and not dim.HasField("dim_value"):
                dim.dim_value = int(tensor.shape[axis])


def _provenance(checkpoint_path, payload):
    import onnxruntime
    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "opset": OPSET,
            "ir_version": 7, "exporter": "torch.onnx.export(dynamo=False)",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": os.path.basename(checkpoint_path),
            "train": dict((k, v) for k, v in payload.get("train", {}).items()
                          if isinstance(v, (int, float, str)))}


def parse_precisions(text):
    """``"fp32,fp16"`` -> ``("fp32", "fp16")``; fp32 is always exported first."""
    if isinstance(text, str):
        text = text.split(",")
    wanted = [p.strip() for p in text if p.strip()]
    bad = [p for p in wanted if p not in PRECISIONS]
    if bad:
        raise NanocapError("unknown precision %s (choose from %s)"
                           % (", ".join(bad), ",".join(PRECISIONS)))
    return tuple(["fp32"] + [p for p in PRECISIONS[1:] if p in wanted])


def check_arguments(precisions, max_len, beam, batch, calib_images, data, out_dir):
    """Every argument of ``export_bundle`` checked before anything is written:
    ``NanocapError`` naming the first bad one. Returns the parsed precisions."""
    precisions = parse_precisions(precisions)
    if max_len is not None and int(max_len) < 1:
        raise NanocapError("--max-len must be at least 1, not %s" % max_len)
    if beam and int(beam) < 2:
        raise NanocapError("--beam must be 2 or more (greedy is caption.onnx), not %s" % beam)
    if int(batch) < 1:
        raise NanocapError("--batch must be at least 1, not %s" % batch)
    if "int8" in precisions and not calib_images:
        raise NanocapError("--precision int8 needs --calib-images DIR (a directory of images "
                           "like the ones the model will see)")
    if calib_images and not os.path.isdir(calib_images):
        raise NanocapError("--calib-images %s is not a directory" % calib_images)
    if data and not os.path.exists(data):
        raise NanocapError("--data %s not found" % data)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NanocapError("--out %s exists and is not a directory" % out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise NanocapError("--out %s cannot be created (%s is not a writable directory)"
                           % (out_dir, parent))
    return precisions


def check_replaceable(out_dir, inputs=()):
    """``out_dir`` may be replaced: it does not exist, is empty, or is a nanocap
    bundle (holds ``nanocap.json``) holding none of ``inputs``; anything else
    (a run folder with its checkpoints, a home folder) is refused with one line."""
    if not os.path.isdir(out_dir) or not os.listdir(out_dir):
        return
    if not os.path.isfile(os.path.join(out_dir, META_NAME)):
        raise NanocapError("--out %s is a folder that is not a nanocap bundle (no %s): "
                           "refusing to replace it; give a new folder or an old bundle"
                           % (out_dir, META_NAME))
    inside = os.path.realpath(out_dir) + os.sep
    for path in inputs:
        if path and os.path.realpath(path).startswith(inside):
            raise NanocapError("--out %s holds %s, an input of this export: refusing to "
                               "replace it" % (out_dir, path))


def check_frames(calib_images, size, count=32):
    """``(frames uint8 [K,H,W,3], what they are)`` for the agreement report: up to
    ``count`` calibration images, else 16 seeded random-noise frames."""
    if calib_images:
        from edge.calibration import calibration_images
        frames = calibration_images(calib_images, size, limit=count)
        return frames, "calibration image(s) from %s" % calib_images
    frames = np.random.RandomState(0).randint(0, 256, (16,) + tuple(size) + (3,))
    return frames.astype(np.uint8), "random-noise frames (--calib-images DIR gives real ones)"


def export_bundle(checkpoint_path, out_dir, precisions=("fp32",), max_len=None,
                  calib_images=None, batch=1, data=None, split="test", score_limit=None,
                  beam=0, length_norm=DEFAULT_LENGTH_NORM, agreement_log=None):
    """Export ``checkpoint_path`` to the bundle directory ``out_dir``; returns the meta dict.

    ``precisions``: any of fp32/fp16/int8 (fp32 always). ``max_len``: greedy steps T
    (default: the model's). ``calib_images``: directory of images for int8
    calibration. ``batch``: batch size used for tracing (the axis stays dynamic).
    ``data``: a dataset to score every precision on (``train.evaluation.evaluate``).
    ``beam``: K >= 2 adds ``caption_beam.onnx``, beam search with K beams in one
    graph (``meta["beam"]`` records K and the length normalisation).
    ``agreement_log``: a ``print``-like callable: measure and report every
    precision's agreement with PyTorch and speed against fp32
    (``export.verify.agreement_report``); the figures are returned in
    ``meta["agreement"]`` (not written to ``nanocap.json``).

    Arguments are checked before anything is written; the bundle is built in a
    temporary folder beside ``out_dir`` that replaces ``out_dir`` only when it
    is complete, so a failed export leaves the old bundle as it was.
    """
    precisions = check_arguments(precisions, max_len, beam, batch, calib_images, data, out_dir)
    check_replaceable(out_dir, (checkpoint_path, calib_images, data))
    model, vocab, payload = load_checkpoint(checkpoint_path)
    size = (model.config.image_size, model.config.image_size)
    frames = source = None
    if calib_images or agreement_log:
        frames, source = check_frames(calib_images, size)  # also checks the images early
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".%s.partial-" % os.path.basename(os.path.abspath(out_dir)),
                            dir=parent)
    try:
        meta = _write_bundle(work, model, vocab, payload, checkpoint_path, precisions,
                             int(max_len or model.config.max_len), calib_images, batch, beam,
                             length_norm)
        report = None
        if agreement_log:
            from export.verify import agreement_report
            report = agreement_report(model, vocab, work, frames, source, log=agreement_log)
        if data:
            for precision in precisions:
                score_bundle(work, precision, data, split, score_limit)
            meta = load_bundle(work).meta
        make_readable(work)
        replace_dir(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if report is not None:
        meta = dict(meta, agreement=report)
    return meta


def _write_bundle(out_dir, model, vocab, payload, checkpoint_path, precisions, max_len,
                  calib_images, batch, beam, length_norm):
    """Write every graph, variant and ``nanocap.json`` into the empty ``out_dir``."""
    graphs = {}
    for graph in GRAPHS + (("caption_beam",) if beam else ()):
        module = build_graph(graph, model, vocab, max_len, beam, length_norm)
        path = os.path.join(out_dir, graph_file(graph, "fp32"))
        onnx_model = export_graph(module, example_inputs(graph, model, batch), path, graph)
        entry = {"file": graph_file(graph, "fp32")}
        entry.update(describe_io(onnx_model))
        graphs[graph] = {"fp32": entry}
    size = model.config.image_size
    meta = {"vocab": vocab.to_dict(), "max_len": max_len,
            "input": {"height": size, "width": size, "layout": "NHWC",
                      "channels": "BGR", "dtype": "uint8"},
            "model": model.config.to_dict(), "graphs": graphs,
            "provenance": _provenance(checkpoint_path, payload), "scores": {}}
    if beam:
        meta["beam"] = {"size": int(beam), "length_norm": float(length_norm)}
    if len(precisions) > 1:
        from export.quantize import add_variants
        add_variants(out_dir, meta, precisions[1:], calib_images=calib_images)
    meta = write_meta(out_dir, meta)
    if "int8" in precisions:
        tensorrt_calibration(out_dir, calib_images)
    return meta


def tensorrt_calibration(bundle_dir, calib_images, log=print):
    """Where TensorRT is importable, write its INT8 calibration cache for every graph
    (``<graph>.<ONNX sha256[:16]>.trt<version>.calib``, reused by ``export trt --precision int8`` and the
    device) by building the INT8 engines here. Without TensorRT or a GPU: a note."""
    if not tensorrt_present():
        return []
    from edge.trt.build import ensure_engine
    bundle = load_bundle(bundle_dir)
    try:
        return [ensure_engine(bundle, graph, "int8", calib_images=calib_images, log=log)
                for graph in GRAPHS]
    except NanocapError as exc:
        log("export: no TensorRT INT8 calibration cache written (%s)" % exc)
        return []


def score_bundle(bundle_dir, precision, data, split="test", limit=None):
    """Score one precision with ``train eval --bundle ... --update-bundle`` (the same
    code as the evaluation command); the scores land in ``meta["scores"][precision]``."""
    import argparse
    from train.evaluation import evaluate
    parser = argparse.ArgumentParser(prog="train eval")
    evaluate.add_arguments(parser)
    argv = ["--bundle", bundle_dir, "--data", data, "--split", split,
            "--precision", precision, "--update-bundle"]
    if limit:
        argv += ["--limit", str(limit)]
    return evaluate.run(parser.parse_args(argv))


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt from train fit")
    parser.add_argument("--out", required=True, help="bundle directory to write")
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated precisions: fp32,fp16,int8 (fp32 always)")
    parser.add_argument("--calib-images", help="directory of images for int8 calibration")
    parser.add_argument("--max-len", type=int, help="greedy decoding steps T (default: model's)")
    parser.add_argument("--batch", type=int, default=1, help="batch size used for tracing")
    parser.add_argument("--beam", type=int, default=0, metavar="K",
                        help="also export caption_beam.onnx: beam search (K beams) in one graph")
    parser.add_argument("--data",
                        help="dataset to score each precision on (stored in nanocap.json)")
    parser.add_argument("--split", default="test", help="split of --data to score")
    parser.add_argument("--limit", type=int, help="score at most N images")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the agreement and speed check against PyTorch and fp32")


def print_engine_weights(bundle_dir, meta, log=print):
    """Per fp32 graph, the weight bytes a TensorRT parser that copies per use would
    hold next to the ONNX's own, against the Nano's budget (``edge.trt.engine_size``)."""
    from edge.trt.engine_size import describe, engine_weights
    for graph in sorted(meta["graphs"]):
        name = meta["graphs"][graph]["fp32"]["file"]
        log(describe(name, engine_weights(os.path.join(bundle_dir, name))))


def run(args):
    import json
    meta = export_bundle(args.checkpoint, args.out, precisions=args.precision,
                         max_len=args.max_len, calib_images=args.calib_images,
                         batch=args.batch, data=args.data, split=args.split,
                         score_limit=args.limit, beam=args.beam,
                         agreement_log=None if args.no_check else print)
    for name, digest in sorted(meta["files"].items()):
        size = os.path.getsize(os.path.join(args.out, name))
        print("%-28s %8.1f KiB  sha256 %s" % (name, size / 1024.0, digest[:16]))
    print_engine_weights(args.out, meta)
    print(json.dumps({"bundle": args.out, "files": sorted(meta["files"]),
                      "max_len": meta["max_len"], "scores": meta.get("scores", {}),
                      "agreement": meta.get("agreement", {})}, sort_keys=True))
    return 0
