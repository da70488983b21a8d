"""Small archives in the original layouts, made at run time from the real excerpts in
tests/fixtures/data (14 real photos with their real captions):

- ``train2014.zip`` (``train2014/COCO_train2014_<id>.jpg``), ``val2014.zip``;
- ``annotations_trainval2014.zip`` (``annotations/captions_{train,val}2014.json`` in
  COCO's schema, plus an ``instances_val2014.json`` the layout must leave out);
- ``caption_datasets.zip`` (``dataset_coco.json``, ``dataset_flickr8k.json`` at the top,
  Karpathy's format: train / restval / val / test);
- ``Flickr8k_Dataset.zip`` (``Flicker8k_Dataset/*.jpg`` plus ``__MACOSX/`` debris).
"""
import collections
import hashlib
import json
import os
import zipfile

from conftest import REAL_DATA

COCO_SPLITS = ["train"] * 8 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2
FLICKR_SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def fixture_photos():
    """``[(jpeg path, [captions])]``: the 4 COCO and 10 Flickr8k photos of the fixtures."""
    coco = json.load(open(os.path.join(REAL_DATA, "coco", "captions_val2017.json")))
    caps = collections.defaultdict(list)
    for ann in coco["annotations"]:
        caps[ann["image_id"]].append(ann["caption"].strip())
    photos = []
    for image in coco["images"]:
        path = os.path.join(REAL_DATA, "coco", "val2017", image["file_name"])
        if os.path.isfile(path):
            photos.append((path, caps[image["id"]]))
    return photos + flickr_photos()


def flickr_photos():
    flickr = collections.defaultdict(list)
    with open(os.path.join(REAL_DATA, "flickr8k", "Flickr8k.token.txt")) as handle:
        for line in handle:
            key, caption = line.rstrip("\n").split("\t", 1)
            flickr[key.rsplit("#", 1)[0]].append(caption.strip())
    folder = os.path.join(REAL_DATA, "flickr8k", "images")
    return [(os.path.join(folder, name), flickr[name]) for name in sorted(os.listdir(folder))]


def karpathy_entry(index, filepath, filename, split, captions, cocoid=None):
    entry = {"filename": filename, "imgid": index, "split": split,
             "sentences": [{"raw": c, "tokens": c.lower().strip(" .").split(), "imgid": index}
                           for c in captions]}
    if filepath:
        entry["filepath"] = filepath
    if cocoid is not None:
        entry["cocoid"] = cocoid
    return entry


def make_coco_archives(folder):
    """Write the four COCO-recipe archives into ``folder``; returns ``{name: sha256}``."""
    os.makedirs(folder, exist_ok=True)
    photos = fixture_photos()
    assert len(photos) == len(COCO_SPLITS), len(photos)
    karpathy, coco = [], {"train2014": ([], []), "val2014": ([], [])}
    zips = dict((s, zipfile.ZipFile(os.path.join(folder, s + ".zip"), "w")) for s in coco)
    for index, ((path, captions), split) in enumerate(zip(photos, COCO_SPLITS)):
        subset = "train2014" if split == "train" else "val2014"
        cocoid = 1000 + index
        name = "COCO_%s_%012d.jpg" % (subset, cocoid)
        zips[subset].write(path, "%s/%s" % (subset, name))
        karpathy.append(karpathy_entry(index, subset, name, split, captions, cocoid))
        images, annotations = coco[subset]
        images.append({"id": cocoid, "file_name": name, "height": 0, "width": 0})
        annotations.extend({"id": cocoid * 10 + n, "image_id": cocoid, "caption": c}
                           for n, c in enumerate(captions))
    for handle in zips.values():
        handle.close()
    with zipfile.ZipFile(os.path.join(folder, "annotations_trainval2014.zip"), "w") as handle:
        for subset, (images, annotations) in coco.items():
            handle.writestr("annotations/captions_%s.json" % subset, json.dumps(
                {"info": {}, "licenses": [], "images": images, "annotations": annotations}))
        handle.writestr("annotations/instances_val2014.json", json.dumps({"annotations": []}))
    write_karpathy_zip(folder, {"dataset_coco.json": {"images": karpathy, "dataset": "coco"},
                                "dataset_flickr8k.json": flickr_split_file()})
    return sha256s(folder)


def flickr_split_file():
    entries = [karpathy_entry(i, None, os.path.basename(path), split, captions)
               for i, ((path, captions), split) in enumerate(zip(flickr_photos(), FLICKR_SPLITS))]
    return {"images": entries, "dataset": "flickr8k"}


def write_karpathy_zip(folder, files):
    with zipfile.ZipFile(os.path.join(folder, "caption_datasets.zip"), "w") as handle:
        for name, content in files.items():
            handle.writestr(name, json.dumps(content))


def make_flickr8k_archive(folder):
    """``Flickr8k_Dataset.zip`` as the Illinois form serves it (10 photos)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "Flickr8k_Dataset.zip")
    with zipfile.ZipFile(path, "w") as handle:
        for photo, _ in flickr_photos():
            name = os.path.basename(photo)
            handle.write(photo, "Flicker8k_Dataset/" + name)
            handle.writestr("__MACOSX/Flicker8k_Dataset/._" + name, b"\x00\x05\x16\x07")
    return path


def sha256s(folder):
    sums = {}
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as handle:
            sums[name] = hashlib.sha256(handle.read()).hexdigest()
    return sums


def write_checksums(path, sums):
    """A ``sha256sum``-style file of ``{name: hex}``."""
    with open(path, "w") as handle:
        for name, digest in sorted(sums.items()):
            handle.write("%s  %s\n" % (digest, name))
    return path
