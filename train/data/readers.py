"""Caption dataset readers: every format becomes a list of ``Record``.

Formats (``fmt``; ``"auto"`` detects from the file):
- ``token``: Flickr8k/Flickr30k token file (``image.jpg#n<TAB>caption``) with the
  split lists ``Flickr_8k.{train,dev,test}Images.txt`` found beside it;
- ``csv``: Kaggle ``captions.txt`` (``image,caption``, quoted commas) or the
  Flickr30k ``results.csv`` (``image_name| comment_number| comment``);
- ``coco``: MS-COCO ``captions_*.json`` (no split inside: a deterministic
  validation fraction is held out by hashing the image id);
- ``karpathy``: ``dataset_{flickr8k,flickr30k,coco}.json`` (``restval`` -> train).

Where no split is given, images are split deterministically by a hash of their
id (``VAL_FRACTION`` to val, for token/CSV files also ``TEST_FRACTION`` to test).
"""
import collections
import csv
import json
import os
import sys
import zlib

from edge.errors import NanocapError

Record = collections.namedtuple("Record", "image_id path captions split")
Record.__doc__ = """One image: ``image_id`` (int for COCO sources, file name otherwise),
``path`` (absolute or relative image path), ``captions`` (list of raw strings),
``split`` (``"train"``, ``"val"`` or ``"test"``)."""

FORMATS = ("auto", "token", "csv", "coco", "karpathy")
SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
FLICKR_SPLIT_LISTS = (("train", "trainImages.txt"), ("val", "devImages.txt"),
                      ("test", "testImages.txt"))
IMAGE_DIR_NAMES = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset",
                   "flickr30k_images", "flickr30k-images")


def hash_split(image_id, val_fraction=VAL_FRACTION, test_fraction=0.0):
    """Deterministic split of an image id (same answer on every machine and run)."""
    bucket = (zlib.crc32(str(image_id).encode("utf-8")) % 10000) / 10000.0
    if bucket < val_fraction:
        return "val"
    if bucket < val_fraction + test_fraction:
        return "test"
    return "train"


def detect_format(path):
    """Name the format of a caption file (see module docstring) or raise."""
    if not os.path.isfile(path):
        raise NanocapError("caption file not found: %s" % path)
    if os.path.getsize(path) == 0:
        raise NanocapError("caption file is empty: %s" % path)
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096).lstrip("\ufeff")
    stripped = head.lstrip()
    if not stripped:
        raise NanocapError("caption file is empty: %s" % path)
    if stripped.startswith("{"):
        data = _load_json(path)
        if isinstance(data.get("images"), list) and data["images"] and "sentences" in data["images"][0]:
            return "karpathy"
        if "annotations" in data:
            return "coco"
    else:
        first = stripped.splitlines()[0]
        if "\t" in first and "#" in first.split("\t")[0]:
            return "token"
        lower = first.lower()
        if ("image" in lower and ("caption" in lower or "comment" in lower)
                and ("," in first or "|" in first)):
            return "csv"
    raise NanocapError("cannot tell the caption format of %s (expected a Flickr token file, "
                       "a captions CSV, COCO captions_*.json or Karpathy dataset_*.json); "
                       "pass --format %s" % (path, "|".join(FORMATS[1:])))


def load_dataset(path, images_dir=None, fmt="auto", log=None, debug=False):
    """Read a caption file into ``list[Record]`` (order as in the file).

    ``images_dir`` is where the image files live; by default a known folder
    beside the caption file (``images``, ``val2017`` for COCO, ...). Malformed
    records (a Karpathy image without ``filename``, a COCO annotation without
    ``image_id``, ...) are skipped and counted in one ``log`` line naming the
    first (every one with ``debug``); a file whose records are all malformed
    is a ``NanocapError``. ``log`` defaults to stderr.
    """
    if fmt not in FORMATS:
        raise NanocapError("unknown --format %r (choose from %s)" % (fmt, ", ".join(FORMATS)))
    if fmt == "auto":
        fmt = detect_format(path)
    elif not os.path.isfile(path):
        raise NanocapError("caption file not found: %s" % path)
    reader = {"token": read_token_file, "csv": read_csv_file,
              "coco": read_coco_json, "karpathy": read_karpathy_json}[fmt]
    malformed = []
    records = reader(path, images_dir, malformed)
    if malformed and not records:
        raise NanocapError("%s: all %d records are malformed (read as %s; first: %s)"
                           % (path, len(malformed), fmt, malformed[0]))
    if not records:
        raise NanocapError("no captions found in %s (read as %s)" % (path, fmt))
    if malformed:
        log = log or (lambda line: sys.stderr.write(line + "\n"))
        log("%s: skipped %d malformed records (first: %s)%s"
            % (path, len(malformed), malformed[0], "" if debug else "; --debug lists them"))
        if debug:
            for problem in malformed:
                log("  malformed: %s" % problem)
    return records


def _malformed(where, exc):
    """One line naming a malformed record: ``where`` and what is wrong with it."""
    if isinstance(exc, KeyError):
        return "%s: no %s" % (where, exc)
    return "%s: %s" % (where, exc)


MALFORMED = (KeyError, TypeError, AttributeError, ValueError)


def _load_json(path):
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except ValueError as exc:
        raise NanocapError("%s is not valid JSON: %s" % (path, exc))
    if not isinstance(data, dict):
        raise NanocapError("%s: expected a JSON object at the top" % path)
    return data


def _default_dir(path, names):
    """First existing folder among ``names`` beside ``path``, else its folder."""
    base = os.path.dirname(os.path.abspath(path))
    for name in names:
        candidate = os.path.join(base, name)
        if os.path.isdir(candidate):
            return candidate
    return base


def flickr_split_lists(path):
    """``{image name: split}`` from ``*{train,dev,test}Images.txt`` beside ``path``
    (empty if there are none)."""
    base = os.path.dirname(os.path.abspath(path))
    splits = {}
    for split, suffix in FLICKR_SPLIT_LISTS:
        for name in sorted(os.listdir(base)):
            if name.endswith(suffix):
                with open(os.path.join(base, name), "r", encoding="utf-8") as handle:
                    for line in handle:
                        if line.strip():
                            splits[line.strip()] = split
    return splits


def _grouped_records(pairs, path, images_dir):
    """``(image name, caption)`` pairs -> records, split by lists beside ``path``
    or by hash. Images in no split list are dropped (the stray ``.jpg.1`` entry
    of Flickr8k among them)."""
    images_dir = images_dir or _default_dir(path, IMAGE_DIR_NAMES)
    captions = collections.OrderedDict()
    for name, caption in pairs:
        if caption.strip():
            captions.setdefault(name, []).append(caption.strip())
    lists = flickr_split_lists(path)
    records = []
    for name, caps in captions.items():
        if lists:
            split = lists.get(name)
            if split is None:
                continue
        else:
            split = hash_split(name, VAL_FRACTION, TEST_FRACTION)
        records.append(Record(name, os.path.join(images_dir, name), caps, split))
    return records


def read_token_file(path, images_dir=None, malformed=None):
    """Flickr8k/30k token file: ``name.jpg#n<TAB>caption`` per line."""
    pairs = []
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if "\t" not in line:
                if line.strip() and malformed is not None:
                    malformed.append("line %d: no tab between image and caption" % number)
                continue
            key, caption = line.rstrip("\r\n").split("\t", 1)
            pairs.append((key.rsplit("#", 1)[0].strip(), caption))
    return _grouped_records(pairs, path, images_dir)


def read_csv_file(path, images_dir=None, malformed=None):
    """Captions CSV: ``image,caption`` (Kaggle) or ``image_name| comment_number| comment``."""
    with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
        text = handle.read().lstrip("\ufeff")
    lines = text.splitlines()
    if not lines:
        return []
    delimiter = "|" if lines[0].count("|") > lines[0].count(",") else ","
    rows = csv.reader(lines, delimiter=delimiter, skipinitialspace=True)
    header = [h.strip().lower() for h in next(rows)]
    image_col = _column(header, ("image", "image_name", "filename", "file_name"), path)
    caption_col = _column(header, ("caption", "comment", "sentence"), path)
    pairs = []
    for row in rows:
        if len(row) > max(image_col, caption_col):
            pairs.append((row[image_col].strip(), row[caption_col]))
        elif row and malformed is not None:
            malformed.append("line %d: %d fields, expected %d"
                             % (rows.line_num, len(row), len(header)))
    return _grouped_records(pairs, path, images_dir)


def _column(header, names, path):
    for name in names:
        if name in header:
            return header.index(name)
    raise NanocapError("%s: no %s column in the header %s" % (path, names[0], header))


def read_coco_json(path, images_dir=None, malformed=None):
    """MS-COCO ``captions_*.json``; split by hashing the image id (val fraction held out).
    Malformed annotations/images are skipped and described in ``malformed`` (a list)."""
    malformed = [] if malformed is None else malformed
    data = _load_json(path)
    if "annotations" not in data or "images" not in data:
        raise NanocapError("%s: not a COCO captions file (no images/annotations)" % path)
    stem = os.path.basename(path).rsplit(".", 1)[0].split("_")[-1]  # val2017
    if images_dir is None:
        images_dir = _default_dir(path, (stem, os.path.join("..", stem), "images"))
    captions = collections.defaultdict(list)
    for n, ann in enumerate(data["annotations"]):
        try:
            caption = ann["caption"]
            if not isinstance(caption, str):
                raise ValueError("caption is not text")
            if caption.strip():
                captions[ann["image_id"]].append(caption.strip())
        except MALFORMED as exc:
            malformed.append(_malformed("annotations[%d] (id %s)" % (n, _get(ann, "id")), exc))
    records = []
    for n, image in enumerate(data["images"]):
        try:
            caps = captions.get(image["id"])
            if caps:
                records.append(Record(image["id"], os.path.join(images_dir, image["file_name"]),
                                      caps, hash_split(image["id"])))
        except MALFORMED as exc:
            malformed.append(_malformed("images[%d] (id %s)" % (n, _get(image, "id")), exc))
    return records


def _get(entry, key):
    return entry.get(key, "?") if isinstance(entry, dict) else "?"


def read_karpathy_json(path, images_dir=None, malformed=None):
    """Karpathy ``dataset_*.json``: ``images[].{filepath?, filename, split, sentences}``.
    Malformed entries are skipped and described in ``malformed`` (a list)."""
    malformed = [] if malformed is None else malformed
    data = _load_json(path)
    if not isinstance(data.get("images"), list):
        raise NanocapError("%s: not a Karpathy split file (no images list)" % path)
    images_dir = images_dir or _default_dir(path, IMAGE_DIR_NAMES)
    records = []
    for n, image in enumerate(data["images"]):
        try:
            record = _karpathy_record(image, images_dir)
        except MALFORMED as exc:
            malformed.append(_malformed("images[%d] (imgid %s)" % (n, _get(image, "imgid")), exc))
            continue
        if record is not None:
            records.append(record)
    return records


def _karpathy_record(image, images_dir):
    """One Karpathy ``images[]`` entry -> Record (None without captions); raises
    one of ``MALFORMED`` on a malformed entry."""
    caps = [s.get("raw") or " ".join(s.get("tokens", [])) for s in image.get("sentences", [])]
    caps = [c.strip() for c in caps if c and c.strip()]
    if not caps:
        return None
    split = image.get("split", "train")
    split = "train" if split == "restval" else split
    if split not in SPLITS:
        split = "train"
    rel = os.path.join(image.get("filepath", ""), image["filename"])
    image_id = image.get("cocoid", image["filename"])
    return Record(image_id, os.path.join(images_dir, rel), caps, split)


def filter_existing(records, log=print):
    """Keep records whose image file exists; print and return the missing count.

    Returns ``(kept records, number missing)``.
    """
    kept = [r for r in records if os.path.isfile(r.path)]
    missing = len(records) - len(kept)
    if missing and log is not None:
        log("%d images missing (of %d listed); training on the %d present"
            % (missing, len(records), len(kept)))
    return kept, missing


def by_split(records):
    """``{split: [records]}`` for the three splits (empty lists included)."""
    groups = dict((s, []) for s in SPLITS)
    for record in records:
        groups.setdefault(record.split, []).append(record)
    return groups
