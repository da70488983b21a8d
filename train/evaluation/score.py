"""``python -m train score --results RES.json --annotations ANN.json``

Scores a COCO-format results file (``[{"image_id", "caption"}, ...]``) against
a COCO-format annotation file (``{"annotations": [{"image_id", "caption"}]}``)
with the coco-caption toolkit (``train.evaluation.metrics.coco_scores``). Prints a table,
then as the last stdout line one JSON object
``{"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}``.
Only the images that have results are scored (as coco-caption's own demo does).
"""
import json
import sys
from collections import OrderedDict

from edge.errors import NanocapError


def _load_json(path, what):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError) as exc:
        raise NanocapError("cannot read %s file %s: %s" % (what, path, exc.strerror or exc))
    except ValueError as exc:
        raise NanocapError("%s file %s is not valid JSON: %s" % (what, path, exc))


def load_annotations(path):
    """COCO captions file -> ``{image_id: [caption, ...]}``."""
    data = _load_json(path, "annotations")
    anns = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(anns, list):
        raise NanocapError("annotations file %s has no \"annotations\" list (COCO format)" % path)
    refs = OrderedDict()
    for ann in anns:
        try:
            refs.setdefault(ann["image_id"], []).append(str(ann["caption"]))
        except (KeyError, TypeError):
            raise NanocapError("annotations file %s: every annotation needs image_id and "
                               "caption (got %r)" % (path, ann))
    return refs


def load_results(path):
    """COCO results file -> ``{image_id: caption}`` (the first result per image)."""
    data = _load_json(path, "results")
    if not isinstance(data, list):
        raise NanocapError("results file %s must be a JSON list of {image_id, caption}" % path)
    hyps, dropped = OrderedDict(), 0
    for item in data:
        try:
            image_id, caption = item["image_id"], str(item["caption"])
        except (KeyError, TypeError):
            raise NanocapError("results file %s: every result needs image_id and caption "
                               "(got %r)" % (path, item))
        if image_id in hyps:
            dropped += 1
        else:
            hyps[image_id] = caption
    if dropped:
        sys.stderr.write("results: %d duplicate image_id entries ignored (first kept)\n"
                         % dropped)
    return hyps


def write_results(path, hyps):
    """``{image_id: caption}`` -> COCO results file ``[{"image_id", "caption"}]``."""
    with open(path, "w") as handle:
        json.dump([{"image_id": i, "caption": c} for i, c in hyps.items()], handle, indent=1)
        handle.write("\n")


def report_scores(refs, hyps, spice=False, out=None):
    """Score with the full toolkit, print the table and the final JSON line."""
    from train.evaluation.metrics import coco_scores, format_table
    out = out or sys.stdout
    scores = coco_scores(refs, hyps, spice=spice)
    out.write("scored %d images (%d references)\n"
              % (len(hyps), sum(len(refs[i]) for i in hyps)))
    if scores.get("tokenizer") == "python":
        out.write("(no Java: pure-Python tokenizer, no METEOR; not comparable to "
                  "published scores)\n")
    out.write(format_table(scores) + "\n")
    out.write(json.dumps(scores) + "\n")
    out.flush()
    return scores


def add_arguments(parser):
    parser.add_argument("--results", required=True, help="COCO-format results JSON")
    parser.add_argument("--annotations", required=True, help="COCO-format captions JSON")
    parser.add_argument("--spice", action="store_true",
                        help="also SPICE (only if its Stanford models are installed)")


def run(args):
    refs = load_annotations(args.annotations)
    hyps = load_results(args.results)
    unknown = [i for i in hyps if i not in refs]
    if unknown:
        raise NanocapError("%d result image_ids are not in %s (e.g. %r)"
                           % (len(unknown), args.annotations, unknown[0]))
    report_scores(refs, hyps, spice=args.spice)
    return 0
