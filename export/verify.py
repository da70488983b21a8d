"""``python -m export verify``: PyTorch vs ONNX Runtime on the same images.

For every precision in the bundle, ``caption.onnx`` (or its variant) runs in
ONNX Runtime (CPU) and the checkpoint runs in PyTorch with the same greedy rule
(``train.model.decoding.greedy_search``). Per precision:

- ``caption_match``: fraction of images whose whole caption is identical;
- ``token_match``: fraction of the [N, T] token positions that are equal;
- ``max_abs_logit_diff``: largest |log-prob difference| of the chosen tokens,
  over the steps whose preceding tokens agree (later steps decode from
  different prefixes and are not comparable);
- ``encoder_max_abs_diff``: largest |difference| of ``encoder.onnx``'s state;
- ``beam_caption_match`` (bundles exported with ``--beam K``): the same as
  caption_match for ``caption_beam.onnx`` against ``train.model.decoding.beam_search``.

The last stdout line is one JSON object ``{precision: {...}}``. The exit status
is 1 when any precision present falls below its floor (``--min-match
PRECISION=FRACTION``, repeatable; defaults ``DEFAULT_MIN_MATCH``: fp32 0.99,
fp16 0.97, int8 none): its caption_match, or its beam_caption_match where the
bundle has a beam graph, is compared with the floor.

``agreement_report`` is what ``export onnx`` prints after exporting: per
precision, caption_match against PyTorch and the speed of ``caption.onnx`` (ONNX
Runtime, CPU, batch 1) against fp32, and a plain warning for a variant that is
both slower and less faithful than fp32 on this machine.
"""
import json
import os
import sys
import time

import numpy as np
import torch

from edge.bundle import load_bundle
from edge.errors import NanocapError
from edge.image import list_images, read_image, resize
from train.model.checkpoint import load_checkpoint
from train.model.decoding import beam_search, greedy_search

DEFAULT_MIN_MATCH = {"fp32": 0.99, "fp16": 0.97}


def add_arguments(parser):
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the bundle came from")
    parser.add_argument("--bundle", required=True, help="bundle directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="caption dataset file (images of --split are used)")
    source.add_argument("--images", help="directory of images")
    parser.add_argument("--split", default="test", help="split of --data (default test)")
    parser.add_argument("--images-dir", help="image folder of --data (default: beside it)")
    parser.add_argument("--format", default="auto", help="format of --data (default auto)")
    parser.add_argument("--limit", type=int, help="use at most N images")
    parser.add_argument("--precision", help="comma-separated precisions (default: all present)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per call")
    parser.add_argument("--min-match", action="append", default=[], metavar="PRECISION=FRACTION",
                        help="lowest caption_match (and beam_caption_match) accepted for a "
                             "precision; repeatable (default fp32=0.99, fp16=0.97)")


def parse_min_match(items):
    """``["int8=0.8", "fp32=1"]`` -> floors ``{precision: fraction}`` over the defaults."""
    from edge.bundle import PRECISIONS
    floors = dict(DEFAULT_MIN_MATCH)
    for item in items or []:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if not sep or name not in PRECISIONS or not 0.0 <= fraction <= 1.0:
            raise NanocapError("--min-match takes PRECISION=FRACTION with PRECISION one of %s "
                               "and FRACTION in 0..1, not %r" % (",".join(PRECISIONS), item))
        floors[name] = fraction
    return floors


def below_floor(report, floors):
    """``[(precision, figure, value, floor)]`` for every figure under its floor."""
    failed = []
    for precision, entry in sorted(report.items()):
        floor = floors.get(precision)
        for figure in ("caption_match", "beam_caption_match"):
            value = entry.get(figure)
            if floor is not None and value is not None and value < floor:
                failed.append((precision, figure, value, floor))
    return failed


def image_paths(args):
    """Image files from ``--images DIR`` or the ``--split`` of ``--data``."""
    if args.images:
        paths = list_images(args.images) if os.path.isdir(args.images) else []
        if not paths:
            raise NanocapError("no images found in %s" % args.images)
    else:
        from train.evaluation.evaluate import split_records
        paths = [r.path for r in split_records(args)]
    if args.limit is not None:
        if args.limit < 1:
            raise NanocapError("--limit must be at least 1")
        paths = paths[:args.limit]
    return paths


def load_frames(paths, size):
    """``uint8 [K,H,W,3]`` of the readable ``paths`` and the count skipped."""
    frames, skipped = [], 0
    for path in paths:
        try:
            frames.append(resize(read_image(path), size))
        except NanocapError as exc:
            skipped += 1
            if skipped <= 3:
                sys.stderr.write("skipped: %s\n" % exc)
    if not frames:
        raise NanocapError("none of the %d images could be read" % len(paths))
    return np.stack(frames), skipped


def _run_batches(fn, frames, batch):
    outs = [fn(frames[i:i + batch]) for i in range(0, len(frames), batch)]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def compare(ref_tokens, ref_scores, tokens, scores, vocab):
    """The parity figures of one precision (see module docstring); arrays [N,T]."""
    same_caption = [vocab.decode(a) == vocab.decode(b) for a, b in zip(ref_tokens, tokens)]
    equal = ref_tokens == tokens
    # step t is comparable when every token before it agreed
    prefix = np.cumprod(np.concatenate([np.ones_like(equal[:, :1]), equal[:, :-1]], axis=1),
                        axis=1).astype(bool)
    diff = np.abs(ref_scores.astype(np.float64) - scores.astype(np.float64))[prefix]
    return {"caption_match": float(np.mean(same_caption)),
            "token_match": float(np.mean(equal)),
            "max_abs_logit_diff": float(diff.max()) if diff.size else None}


def verify(checkpoint, bundle_dir, frames, precisions=None, batch=16):
    """Parity figures ``{precision: {...}}`` of a bundle against its checkpoint on
    ``frames`` (uint8 [K,H,W,3], already resized to the bundle's input size)."""
    model, vocab, _ = load_checkpoint(checkpoint)
    return verify_model(model, vocab, bundle_dir, frames, precisions, batch, checkpoint)


def verify_model(model, vocab, bundle_dir, frames, precisions=None, batch=16,
                 checkpoint="the checkpoint"):
    """``verify`` with the PyTorch model and vocabulary already loaded."""
    import onnxruntime as ort
    bundle = load_bundle(bundle_dir)
    if vocab.itos != bundle.vocab.itos:
        raise NanocapError("bundle %s was not exported from %s (vocabularies differ)"
                           % (bundle_dir, checkpoint))

    def torch_caption(x):
        state, memory = model.start(torch.from_numpy(x))
        t, s = greedy_search(model.step, state, vocab.start_id, vocab.end_id, bundle.max_len,
                             memory=memory)
        return t.numpy(), s.numpy()

    def torch_state(x):
        with torch.no_grad():
            return (model.start(torch.from_numpy(x))[0].numpy(),)

    def torch_beam(x):
        state, memory = model.start(torch.from_numpy(x))
        t, _ = beam_search(model.step, state, vocab.start_id, vocab.end_id, bundle.max_len,
                           bundle.meta["beam"]["size"], bundle.meta["beam"]["length_norm"],
                           memory=memory)
        return (t.numpy(),)

    with torch.no_grad():
        ref_tokens, ref_scores = _run_batches(torch_caption, frames, batch)
        ref_beam = (_run_batches(torch_beam, frames, batch)[0]
                    if bundle.precisions("caption_beam") else None)
    ref_state = _run_batches(torch_state, frames, batch)[0]
    report = {}
    for precision in precisions or bundle.precisions("caption"):
        opts = {"providers": ["CPUExecutionProvider"]}
        session = ort.InferenceSession(bundle.graph_path("caption", precision), **opts)
        tokens, scores = _run_batches(lambda x: session.run(None, {"image": x}), frames, batch)
        entry = compare(ref_tokens, ref_scores, tokens, scores, vocab)
        if precision in bundle.precisions("encoder"):
            enc = ort.InferenceSession(bundle.graph_path("encoder", precision), **opts)
            state = _run_batches(lambda x: enc.run(None, {"image": x}), frames, batch)[0]
            entry["encoder_max_abs_diff"] = float(np.abs(state - ref_state).max())
        if precision in bundle.precisions("caption_beam"):
            beam = ort.InferenceSession(bundle.graph_path("caption_beam", precision), **opts)
            tokens = _run_batches(lambda x: beam.run(None, {"image": x}), frames, batch)[0]
            entry["beam_caption_match"] = float(np.mean(
                [vocab.decode(a) == vocab.decode(b) for a, b in zip(ref_beam, tokens)]))
        report[precision] = entry
    return report


def run(args):
    floors = parse_min_match(args.min_match)
    bundle = load_bundle(args.bundle)
    precisions = None
    if args.precision:
        precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
        for p in precisions:
            bundle.graph_entry("caption", p)  # clear error if absent
    frames, skipped = load_frames(image_paths(args), bundle.input_size)
    if skipped:
        sys.stderr.write("%d unreadable image(s) skipped\n" % skipped)
    report = verify(args.checkpoint, args.bundle, frames, precisions, args.batch_size)
    for precision, entry in report.items():
        beam = entry.get("beam_caption_match")
        print("%-5s caption_match %.4f  token_match %.4f  max_abs_logit_diff %s%s  (%d images)"
              % (precision, entry["caption_match"], entry["token_match"],
                 entry["max_abs_logit_diff"],
                 "" if beam is None else "  beam_caption_match %.4f" % beam, len(frames)))
    print(json.dumps(report, sort_keys=True))
    failed = below_floor(report, floors)
    for precision, figure, value, floor in failed:
        sys.stderr.write("verify: %s %s %.4f is below its floor %.2f (--min-match %s=...)\n"
                         % (precision, figure, value, floor, precision))
    return 1 if failed else 0


# -- what export onnx prints ----------------------------------------------------------
def caption_speed(bundle_dir, precisions, frames, rounds=3):
    """Median milliseconds per image of each precision's ``caption`` graph: ONNX
    Runtime CPU, batch 1, over ``frames`` (uint8 [K,H,W,3]); the precisions take
    turns within each round so that a change in machine load hits them alike."""
    import onnxruntime as ort
    bundle = load_bundle(bundle_dir)
    sessions = dict((p, ort.InferenceSession(bundle.graph_path("caption", p),
                                             providers=["CPUExecutionProvider"]))
                    for p in precisions)
    times = dict((p, []) for p in precisions)
    for session in sessions.values():
        session.run(None, {"image": frames[:1]})  # warm-up
    for _ in range(rounds):
        for precision, session in sessions.items():
            for frame in frames:
                start = time.perf_counter()
                session.run(None, {"image": frame[None]})
                times[precision].append((time.perf_counter() - start) * 1000.0)
    return dict((p, float(np.median(t))) for p, t in times.items())


def agreement_report(model, vocab, bundle_dir, frames, source, log=print):
    """Agreement with PyTorch and speed against fp32 of every precision of the
    bundle's caption graph on ``frames``; one line per precision on ``log``, a
    warning for a variant both slower and less faithful than fp32. Returns
    ``{precision: {"caption_match", "ms_per_image", "speed_vs_fp32"}}``."""
    bundle = load_bundle(bundle_dir)
    precisions = bundle.precisions("caption")
    parity = verify_model(model, vocab, bundle_dir, frames, precisions)
    speed = caption_speed(bundle_dir, precisions, frames[:16])
    log("export: agreement with PyTorch and speed against fp32 on %d %s "
        "(ONNX Runtime CPU, batch 1, this machine):" % (len(frames), source))
    report = {}
    for precision in precisions:
        match = parity[precision]["caption_match"]
        ratio = speed["fp32"] / speed[precision]
        report[precision] = {"caption_match": match, "ms_per_image": speed[precision],
                             "speed_vs_fp32": ratio}
        beam = parity[precision].get("beam_caption_match")
        if beam is not None:
            report[precision]["beam_caption_match"] = beam
        log("  %-5s caption_match %.3f%s  %.2f ms/image  %.2fx fp32's speed"
            % (precision, match, "" if beam is None else "  beam_caption_match %.3f" % beam,
               speed[precision], ratio))
    for line in verdicts(report):
        log(line)
    return report


def verdicts(report):
    """Plain lines for the variants of ``report`` (``agreement_report``'s figures)
    that are slower than fp32, with a warning where also less faithful."""
    lines = []
    fp32 = report["fp32"]["caption_match"]
    for precision in [p for p in report if p != "fp32"]:
        entry = report[precision]
        if entry["speed_vs_fp32"] < 1.0 and entry["caption_match"] < fp32:
            lines.append("export: WARNING: %s is both slower (%.2fx) and less faithful "
                         "(caption_match %.3f vs fp32's %.3f) than fp32 on this machine: use "
                         "fp32 here (%s is meant for hardware with fast %s, e.g. TensorRT "
                         "on a GPU)" % (precision, entry["speed_vs_fp32"],
                                        entry["caption_match"], fp32, precision,
                                        precision.upper()))
        elif entry["speed_vs_fp32"] < 1.0:
            lines.append("export: note: %s is slower than fp32 on this machine (%.2fx); it "
                         "pays off where the hardware has fast %s (TensorRT on a GPU)"
                         % (precision, entry["speed_vs_fp32"], precision.upper()))
    return lines
