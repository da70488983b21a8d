"""The data phases of ``python -m train recipe``: what each dataset needs, where
it comes from, and where its files go under ``--root``.

Layout (what ``train.data.readers`` reads; the archives stay in ROOT)::

    ROOT/karpathy/dataset_{coco,flickr8k,flickr30k}.json   (caption_datasets.zip)
    ROOT/coco/train2014/*.jpg  ROOT/coco/val2014/*.jpg      (train2014.zip, val2014.zip)
    ROOT/coco/annotations/captions_{train,val}2014.json     (annotations_trainval2014.zip)
    ROOT/flickr8k/.../*.jpg   ROOT/flickr30k/.../*.jpg      (archives the user places in ROOT)

Training reads the Karpathy split file (what papers report on) with
``--images-dir`` the folder its ``filepath/filename`` entries are under.
"""
import collections
import os

from edge.errors import NanocapError
from train.recipe import download

Archive = collections.namedtuple("Archive", "name url size digest")
Archive.__doc__ = """A file to download: ``name`` in ROOT, ``url``, ``size`` in bytes and
``digest`` (``"md5:HEX"``) as published, or None where nothing is published."""

KARPATHY = Archive("caption_datasets.zip",
                   "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
                   None, None)
COCO = (Archive("train2014.zip", "http://images.cocodataset.org/zips/train2014.zip",
                13510573713, "md5:0da8c0bd3d6becc4dcb32757491aca88"),
        Archive("val2014.zip", "http://images.cocodataset.org/zips/val2014.zip",
                6645013297, "md5:a3d79f5ed8d289b7a7554ce06a5782b3"),
        Archive("annotations_trainval2014.zip",
                "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
                252872794, "md5:0a379cfc70b0e71301e0f377548639bd"))

Manual = collections.namedtuple("Manual", "archives where")
FLICKR8K = Manual(("Flickr8k_Dataset.zip", "flickr8k.zip"),
                  "the University of Illinois request form https://forms.illinois.edu/sec/1713398 "
                  "(Flickr8k_Dataset.zip), or Kaggle's 'Flickr 8k Dataset' (flickr8k.zip)")
FLICKR30K = Manual(("flickr30k-images.tar.gz", "flickr30k-images.tar", "flickr30k-images.zip",
                    "flickr-image-dataset.zip"),
                   "the request form on https://shannon.cs.illinois.edu/DenotationGraph/ "
                   "(flickr30k-images.tar.gz), or Kaggle's 'Flickr Image dataset' "
                   "(flickr-image-dataset.zip)")

Dataset = collections.namedtuple("Dataset", "split_file folder downloads manual train_images")
DATASETS = collections.OrderedDict([
    ("coco", Dataset("dataset_coco.json", "coco", COCO, None, 113287)),
    ("flickr8k", Dataset("dataset_flickr8k.json", "flickr8k", (), FLICKR8K, 6000)),
    ("flickr30k", Dataset("dataset_flickr30k.json", "flickr30k", (), FLICKR30K, 29000)),
])
BASE_URL_ENV = "NANOCAP_DATA_URL"


def read_checksums(path):
    """``{file name: "algo:hex"}`` from a ``sha256sum``/``md5sum``-style file (``HEX  NAME``)."""
    sums = {}
    try:
        with open(path, "r", encoding="utf-8") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2:
                    sums[os.path.basename(parts[1].lstrip("*"))] = download.parse_digest(parts[0])
    except OSError as exc:
        raise NanocapError("cannot read --checksums %s: %s" % (path, exc))
    return dict((name, "%s:%s" % pair) for name, pair in sums.items())


def downloads(name):
    """The archives ``recipe NAME`` downloads (the Karpathy splits first)."""
    return (KARPATHY,) + DATASETS[name].downloads


def download_phase(name, root, base_url=None, checksums=None, log=print, progress=True):
    """Download what ``name`` needs into ``root`` (resumable; checked); for Flickr,
    check the archive the user placed there. ``checksums`` (``{name: digest}``)
    replaces the published size and digest of the files it names."""
    os.makedirs(root, exist_ok=True)
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    for archive in downloads(name):
        url = base_url.rstrip("/") + "/" + archive.name if base_url else archive.url
        size, digest = archive.size, archive.digest
        if checksums and archive.name in checksums:
            size, digest = None, checksums[archive.name]
        log("%s <- %s%s" % (archive.name, url, "" if size is None else " (%.2f GB)" % (size / 1e9)))
        got = download.fetch(url, os.path.join(root, archive.name), size, digest,
                             progress=progress, log=log)
        log("%s ok (%s%s)" % (archive.name, got, "" if digest else "; no published checksum"))
    manual = DATASETS[name].manual
    if manual is not None and not os.path.isdir(os.path.join(root, DATASETS[name].folder)):
        path = placed_archive(name, root)
        log("%s ok (%s archive, %d files)" % (os.path.basename(path), *archive_summary(path)))


def placed_archive(name, root):
    """The image archive of a Flickr dataset the user placed in ``root``, or an error
    saying where to get it."""
    manual = DATASETS[name].manual
    for candidate in manual.archives:
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    raise NanocapError("%s images are not downloadable without a licence: get %s from %s, put "
                       "it in %s (or unpack it into %s) and re-run"
                       % (name, " or ".join(manual.archives), manual.where, root,
                          os.path.join(root, DATASETS[name].folder)))


def archive_summary(path):
    """``(kind, number of files)`` of a zip/tar archive; a clear error when unreadable."""
    handle, members = download._members(path)
    handle.close()
    if not members:
        raise NanocapError("%s holds no files" % path)
    return ("zip" if path.endswith(".zip") else "tar"), len(members)


def layout_phase(name, root, log=print, progress=True):
    """Unpack what ``name`` needs under ``root``; returns ``{"data", "images_dir"}``
    for ``train fit`` and prints how many listed images are present per split."""
    spec = DATASETS[name]
    karpathy = os.path.join(root, "karpathy")
    download.extract(os.path.join(root, KARPATHY.name), karpathy,
                     keep=lambda m: os.path.basename(m).startswith("dataset_")
                     and m.endswith(".json"), rename=os.path.basename, progress=progress)
    data = os.path.join(karpathy, spec.split_file)
    if not os.path.isfile(data):
        raise NanocapError("%s holds no %s" % (os.path.join(root, KARPATHY.name), spec.split_file))
    folder = os.path.join(root, spec.folder)
    if name == "coco":
        for archive in COCO:
            keep = None
            if archive.name.startswith("annotations"):
                keep = lambda m: os.path.basename(m).startswith("captions_")  # noqa: E731
            log("extracting %s" % archive.name)
            download.extract(os.path.join(root, archive.name), folder, keep=keep, progress=progress)
        images_dir = folder
    else:
        if not os.path.isdir(folder):
            archive = placed_archive(name, root)
            log("extracting %s" % os.path.basename(archive))
            download.extract(archive, folder + ".partial", progress=progress)
            os.replace(folder + ".partial", folder)
        images_dir = find_image_dir(folder, data)
    count_present(data, images_dir, log)
    return {"data": data, "images_dir": images_dir}


def find_image_dir(folder, data):
    """The folder under ``folder`` holding the most of the images ``data`` lists
    (archives nest them differently); an error when none is there."""
    from train.data.readers import load_dataset
    wanted = set(os.path.basename(r.path) for r in load_dataset(data, folder)[:500])
    best, found = None, 0
    for here, _, files in os.walk(folder):
        count = len(wanted.intersection(files))
        if count > found:
            best, found = here, count
    if best is None:
        raise NanocapError("none of the images %s lists is under %s: is the archive the right "
                           "one?" % (os.path.basename(data), folder))
    return best


def count_present(data, images_dir, log=print):
    """Print ``split: present/listed`` for ``data`` read with ``images_dir``; an error
    when no training image is present."""
    from train.data.readers import by_split, load_dataset
    splits = by_split(load_dataset(data, images_dir))
    counts = dict((s, (sum(os.path.isfile(r.path) for r in rs), len(rs))) for s, rs in splits.items())
    log("images present: " + ", ".join("%s %d/%d" % (s, p, n) for s, (p, n) in sorted(counts.items())))
    if not counts["train"][0]:
        raise NanocapError("no training image of %s is under %s" % (data, images_dir))
    return counts
