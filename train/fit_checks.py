"""Checks ``train fit`` makes before it spends time: numeric flags in range
(before any image is read), and that an ``--out`` being resumed holds a run of
the same model config and dataset (else one line, exit 2; ``--restart`` starts
a new run there instead)."""
import argparse

from edge.errors import NanocapError
from edge.vocab import clean_caption
from train.data.batches import cache_key

# ``--max-len auto`` never unrolls more decoder steps than this (the Karpathy
# COCO convention truncates at 16 words; Flickr captions rarely pass 20).
AUTO_MAX_LEN = 20

# (flag, attribute, smallest allowed, whether the smallest is excluded): checked
# before anything is loaded, so a typo costs no image reading.
NUMERIC_LIMITS = (("--batch-size", "batch_size", 1, False), ("--epochs", "epochs", 1, False),
                  ("--hidden", "hidden", 1, False), ("--embed", "embed", 1, False),
                  ("--image-size", "image_size", 32, False), ("--max-len", "max_len", 1, False),
                  ("--min-count", "min_count", 1, False), ("--lr", "lr", 0.0, True),
                  ("--minutes", "minutes", 0.0, True), ("--finetune-epochs", "finetune_epochs", 0, False),
                  ("--workers", "workers", 0, False), ("--val-images", "val_images", 0, False),
                  ("--clip", "clip", 0.0, True), ("--dropout", "dropout", 0.0, False),
                  ("--label-smoothing", "label_smoothing", 0.0, False),
                  ("--bn-momentum", "bn_momentum", 0.0, False), ("--preload-mb", "preload_mb", 0.0, False))
BELOW_ONE = ("dropout", "label_smoothing", "bn_momentum")


def check_arguments(args):
    """One clear ``NanocapError`` for a numeric flag out of range (``None`` = unset)."""
    for flag, name, low, exclusive in NUMERIC_LIMITS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if value != value or (value <= low if exclusive else value < low):  # NaN too
            raise NanocapError("%s must be %s %s, not %s"
                               % (flag, "above" if exclusive else "at least", low, value))
        if name in BELOW_ONE and value >= 1:
            raise NanocapError("%s must be below 1, not %s" % (flag, value))
    check_decoder_args(args)


def check_decoder_args(args):
    """``--decoder``/``--att-reg`` combinations: one clear line for the ones that cannot run."""
    decoder, reg = getattr(args, "decoder", "fc"), getattr(args, "att_reg", 0.0)
    if reg < 0:
        raise NanocapError("--att-reg must be 0 or more, not %s" % reg)
    if reg and decoder != "att":
        raise NanocapError("--att-reg applies to --decoder att only")


def max_len_arg(text):
    """``--max-len`` value: ``auto`` (None) or an integer (range checked later)."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number or auto, not %r" % text)


def resolve_max_len(args, train_records, log=print):
    """Set ``args.max_len`` when it is auto (None): the longest training caption
    in words, plus one for ``<end>``, at most ``AUTO_MAX_LEN``. Every greedy step
    past it would decode a caption longer than any the model learnt, and the
    one-graph caption runs all ``max_len`` steps, so this is its speed too."""
    if args.max_len is not None:
        return args.max_len
    longest = max([len(clean_caption(c)) for r in train_records for c in r.captions] or [0])
    args.max_len = max(2, min(AUTO_MAX_LEN, longest + 1))
    log("--max-len auto: %d decoder steps (longest training caption: %d words%s)"
        % (args.max_len, longest, "; capped" if longest + 1 > AUTO_MAX_LEN else ""))
    return args.max_len


RUN_FILES = ("last.pt", "best.pt", "log.jsonl")
# ModelConfig fields set by flags: a resumed run must be asked for with the same ones.
CONFIG_FLAGS = (("backbone", "--backbone"), ("rnn", "--rnn"), ("hidden", "--hidden"),
                ("embed", "--embed"), ("image_size", "--image-size"), ("max_len", "--max-len"),
                ("dropout", "--dropout"), ("bn_momentum", "--bn-momentum"),
                ("decoder", "--decoder"))


def data_digest(records):
    """Hex digest of the training split (image ids and captions): names the dataset
    a run was trained on, wherever its files are."""
    return cache_key([(str(r.image_id), r.captions) for r in records], [])


def check_resume(args, resume, splits, last_path):
    """Refuse (``NanocapError``, exit 2) to resume ``resume`` with other model flags or
    another dataset than it was trained with; ``--restart`` starts a new run instead."""
    config = resume["config"]
    for name, flag in CONFIG_FLAGS:
        if name in config and config[name] != getattr(args, name):
            raise NanocapError("%s holds a run with %s %s, not %s: repeat its options to resume, "
                               "or add --restart to start a new run there"
                               % (last_path, flag, config[name], getattr(args, name)))
    trained_on = resume["train"].get("data_digest")
    if trained_on is not None and trained_on != data_digest(splits["train"]):
        raise NanocapError("%s holds a run trained on another dataset (%s), not --data %s: "
                           "use another --out, or add --restart to start a new run there"
                           % (last_path, resume["train"].get("data", "?"), args.data))
