"""``python -m train prepare``: decode and resize a dataset's images once into
one large file that training reads instead of the full-size JPEGs
(``train fit --prepared DIR``).

Files in ``--out DIR``::

    images.npy    uint8 [N, S, S, 3] BGR, resized by edge.image.resize exactly
                  as training resizes (a plain .npy; read row by row)
    index.json    {"image_size": S, "paths": [absolute image paths],
                  "bad": [rows of unreadable images, left zero], "data": caption file}

Why a raw uint8 array rather than tar shards of re-encoded JPEGs: reading a row
costs one ``pread`` (no decode at all; measured by scripts/benchmark_train.py,
docs/training-gpu.md), at 147 KB per image at 224 px (17 GB for COCO's 113k
training images: disk is cheaper than a GPU waiting). Augmentation (``--augment``)
crops the prepared image and resizes it back, on every read.
"""
import json
import os

from edge.errors import NanocapError
from train.data import arrayfile
from train.data import loaders
from train.data.batches import ImageSource, name_unreadable, unreadable_reasons
from train.data.readers import FORMATS, filter_existing, load_dataset

SPLITS = ("train", "val", "test")


def add_arguments(parser):
    a = parser.add_argument
    a("data", help="caption file (Flickr token/CSV, COCO json, Karpathy json)")
    a("--images-dir", help="folder of the images (default: found beside the caption file)")
    a("--format", default="auto", choices=FORMATS, help="caption file format (default auto)")
    a("--image-size", type=int, default=224, help="square side in pixels (fit's --image-size)")
    a("--splits", default="train,val", help="comma-separated splits to write (default train,val)")
    a("--out", required=True, help="folder for images.npy and index.json (created)")
    a("--workers", type=int, default=loaders.default_workers(True, "cpu"),
      help="decoding processes (default: cores, at most 8)")
    a("--no-progress", action="store_true", help="no tqdm progress bar")


def run(args):
    if args.image_size < 32:
        raise NanocapError("--image-size must be >= 32, not %d" % args.image_size)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise NanocapError("--splits takes a comma-separated subset of %s, not %r"
                           % (",".join(SPLITS), args.splits))
    records = load_dataset(args.data, args.images_dir, args.format, debug=args.debug)
    records, _ = filter_existing([r for r in records if r.split in splits], print)
    if not records:
        raise NanocapError("no images of splits %s found for %s" % (",".join(splits), args.data))
    bad = write(records, args.image_size, args.out, args.workers, args.data,
                progress=not args.no_progress)
    print("prepared %d images at %d px in %s (%.1f GB)%s"
          % (len(records) - len(bad), args.image_size, os.path.join(args.out, "images.npy"),
             os.path.getsize(os.path.join(args.out, "images.npy")) / 1e9,
             "; " + name_unreadable(bad, args.debug) if bad else ""))
    return 0


def write(records, size, out, workers, data="", progress=False):
    """Decode ``records`` with ``workers`` processes into ``out``; returns the
    one-line problems of the unreadable images. index.json is written last, so a
    cut-short run leaves no usable (or misleading) folder."""
    os.makedirs(out, exist_ok=True)
    index_path = os.path.join(out, "index.json")
    if os.path.exists(index_path):
        os.remove(index_path)
    source = ImageSource(records, size)
    tmp = os.path.join(out, "images.npy.tmp")
    array = arrayfile.create(tmp, (len(records), size, size, 3), "uint8")
    batches = loaders.image_loader(source, 64, workers, "cpu")
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="preparing", unit="batch", leave=False)
    bad = []
    for indices, images, missing in batches:
        bad.extend(missing)
        for row, image in zip(indices, images.numpy() if images is not None else []):
            array.write(row, image)
    array.close()
    os.replace(tmp, os.path.join(out, "images.npy"))
    index = {"image_size": size, "paths": [os.path.abspath(r.path) for r in records],
             "bad": sorted(bad), "data": os.path.abspath(data) if data else ""}
    with open(index_path + ".tmp", "w") as handle:
        json.dump(index, handle)
    os.replace(index_path + ".tmp", index_path)
    return unreadable_reasons(records, sorted(bad), size)


def open_prepared(folder, records, size, augment=False):
    """An ``ImageSource`` of ``records`` reading ``folder``'s prepared images, and
    the one-line problems of those that were unreadable when prepared (left out).
    Refuses, naming the folder, a size other than ``size`` or missing images."""
    index_path = os.path.join(folder, "index.json")
    try:
        with open(index_path) as handle:
            index = json.load(handle)
    except (OSError, ValueError) as exc:
        raise NanocapError("--prepared %s: cannot read index.json (%s); run python -m train "
                           "prepare" % (folder, exc))
    if index.get("image_size") != size:
        raise NanocapError("--prepared %s holds %s px images, the model takes %d px; rerun "
                           "python -m train prepare --image-size %d" % (folder, index.get("image_size"),
                                                                        size, size))
    array = arrayfile.ArrayFile(os.path.join(folder, "images.npy"))
    row_of = dict((path, row) for row, path in enumerate(index["paths"]))
    missing = [r.path for r in records if os.path.abspath(r.path) not in row_of]
    if missing:
        raise NanocapError("--prepared %s lacks %d of the %d images (e.g. %s); rerun python -m "
                           "train prepare on this dataset" % (folder, len(missing), len(records),
                                                               missing[0]))
    bad = set(index.get("bad", []))
    rows = [row_of[os.path.abspath(r.path)] for r in records]
    keep = [i for i, row in enumerate(rows) if row not in bad]
    problems = ["%s was unreadable when prepared" % records[i].path
                for i, row in enumerate(rows) if row in bad]
    source = ImageSource(records, size, array, augment, rows)
    return source.subset(keep), problems
