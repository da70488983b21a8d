"""``python -m train eval (--checkpoint CKPT | --bundle DIR) --data PATH [--split test]
[--beam K] [--results OUT.json] [--limit N]``

Decodes one split of a caption dataset (any format ``train.data.readers`` reads),
writes the COCO-format results, and scores them exactly as ``score`` does:
a table, then as the last stdout line one JSON object with
``Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr``. With ``--bundle`` the captions come
from the edge runtime; ``--update-bundle`` stores the scores in the bundle's
``nanocap.json`` under the precision used.
"""
import sys
import time
from collections import OrderedDict

from edge.errors import NanocapError
from edge.image import read_image
from train.evaluation.caption import add_model_arguments, open_captioner
from train.evaluation.score import report_scores, write_results


def add_arguments(parser):
    add_model_arguments(parser)
    parser.add_argument("--data", required=True, help="caption file (Flickr token/CSV, "
                                                       "COCO captions_*.json, Karpathy json)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="split to decode (default test)")
    parser.add_argument("--images-dir", default=None, help="where the images are (default: "
                                                           "beside the caption file)")
    parser.add_argument("--format", default="auto",
                        help="caption file format: auto, token, csv, coco, karpathy")
    parser.add_argument("--results", default=None, metavar="OUT.json",
                        help="write the COCO-format results here")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="decode only the first N images of the split")
    parser.add_argument("--update-bundle", action="store_true",
                        help="write the scores into the bundle's nanocap.json (--bundle only)")
    parser.add_argument("--spice", action="store_true",
                        help="also SPICE (only if its Stanford models are installed)")


def split_records(args):
    """The records of ``args.split`` (first ``args.limit``), or a clear error."""
    from train.data.readers import load_dataset
    records = load_dataset(args.data, images_dir=args.images_dir, fmt=args.format,
                           debug=getattr(args, "debug", False))
    chosen = [r for r in records if r.split == args.split]
    if not chosen:
        have = sorted(set(r.split for r in records))
        raise NanocapError("no %s images in %s (splits present: %s)"
                           % (args.split, args.data, ", ".join(have)))
    if args.limit is not None:
        if args.limit < 1:
            raise NanocapError("--limit must be at least 1")
        chosen = chosen[:args.limit]
    return chosen


def decode_records(captioner, records, batch_size, err=None):
    """Caption every record's image; unreadable images are skipped and counted.

    Returns ``(hyps {image_id: caption}, skipped count, seconds)``."""
    hyps, skipped, batch = OrderedDict(), 0, []
    err = err or sys.stderr
    start = time.perf_counter()
    for index, record in enumerate(records):
        try:
            batch.append((record.image_id, read_image(record.path)))
        except NanocapError as exc:
            skipped += 1
            if skipped <= 3:
                err.write("skipped: %s\n" % exc)
        if batch and (len(batch) == batch_size or index == len(records) - 1):
            results = captioner.caption([frame for _, frame in batch])
            hyps.update((image_id, r.text) for (image_id, _), r in zip(batch, results))
            batch = []
    return hyps, skipped, time.perf_counter() - start


def run(args):
    if args.update_bundle and not args.bundle:
        raise NanocapError("--update-bundle needs --bundle")
    records = split_records(args)
    captioner = open_captioner(args)
    try:
        hyps, skipped, seconds = decode_records(captioner, records, args.batch_size)
    finally:
        captioner.close()
    if skipped:
        sys.stderr.write("%d of %d images could not be read and were skipped\n"
                         % (skipped, len(records)))
    if not hyps:
        raise NanocapError("no image of the %s split could be read" % args.split)
    decode = "greedy" if args.beam == 1 else "beam %d" % args.beam
    print("decoded %d %s images (%s) in %.1f s" % (len(hyps), args.split, decode, seconds))
    if args.results:
        write_results(args.results, hyps)
        print("results written to %s" % args.results)
    refs = dict((r.image_id, list(r.captions)) for r in records)
    scores = report_scores(refs, hyps, spice=args.spice)
    if args.update_bundle:
        update_bundle_scores(args, scores, len(hyps))
    return 0


def update_bundle_scores(args, scores, images):
    """Store ``scores`` plus how they were measured under ``--precision``."""
    from edge.bundle import update_scores
    entry = dict(scores)
    entry.update({"split": args.split, "images": images, "beam": args.beam,
                  "data": args.data})
    update_scores(args.bundle, args.precision, entry)
    sys.stderr.write("scores stored in %s (%s)\n" % (args.bundle, args.precision))
