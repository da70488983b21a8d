"""Dataset readers on excerpts of the real files (tests/fixtures/data)."""
import collections
import json
import os

import pytest

from edge.errors import NanocapError
from train.data.readers import (Record, by_split, detect_format, filter_existing, hash_split,
                            load_dataset)


def _splits(records):
    return collections.Counter(r.split for r in records)


def test_flickr8k_token_file_with_split_lists(real_data):
    path = os.path.join(real_data, "flickr8k", "Flickr8k.token.txt")
    assert detect_format(path) == "token"
    records = load_dataset(path)
    assert _splits(records) == {"train": 151, "val": 34, "test": 36}
    assert all(len(r.captions) == 5 for r in records)
    assert records[0].image_id == "1000268201_693b08cb0e.jpg"
    assert records[0].captions[0].startswith("A child in a pink dress")
    # the stray "2258277193_586949ec62.jpg.1" entry is in no split list: dropped, no crash
    assert not any(r.image_id.endswith(".1") for r in records)
    assert records[0].path == os.path.join(real_data, "flickr8k", "images", records[0].image_id)


def test_flickr8k_csv_same_as_token_file(real_data):
    base = os.path.join(real_data, "flickr8k")
    csv_records = load_dataset(os.path.join(base, "captions.txt"))
    assert detect_format(os.path.join(base, "captions.txt")) == "csv"
    token = dict((r.image_id, r) for r in load_dataset(os.path.join(base, "Flickr8k.token.txt")))
    assert len(csv_records) == 221
    with_comma = [r for r in csv_records if any("," in c for c in r.captions)]
    assert with_comma, "quoted captions with commas must keep their commas"
    for record in csv_records[:200] + with_comma[:50]:
        assert record.split == token[record.image_id].split
        assert [c.strip() for c in record.captions] == token[record.image_id].captions


def test_flickr30k_variants_without_split_lists(tmp_path, real_data):
    lines = open(os.path.join(real_data, "flickr8k", "Flickr8k.token.txt")).read().splitlines()[:50]
    token = tmp_path / "results_20130124.token"
    token.write_text("\n".join(lines) + "\n")
    pipe = tmp_path / "results.csv"
    rows = ["image_name| comment_number| comment"]
    rows += ["%s| %s| %s" % (l.split("\t")[0].split("#")[0], l.split("#")[1][0], l.split("\t")[1])
             for l in lines]
    pipe.write_text("\n".join(rows) + "\n")
    from_token = load_dataset(str(token))
    from_pipe = load_dataset(str(pipe))
    assert len(from_token) == len(from_pipe) == 10
    assert [r.captions for r in from_token] == [r.captions for r in from_pipe]
    # no split lists beside them: a deterministic hash split
    assert [r.split for r in from_token] == [hash_split(r.image_id, 0.05, 0.05) for r in from_token]


def test_coco_captions_and_missing_images(real_data):
    path = os.path.join(real_data, "coco", "captions_val2017.json")
    assert detect_format(path) == "coco"
    records = load_dataset(path)
    assert len(records) == 64
    assert sum(len(r.captions) for r in records) == 320
    assert isinstance(records[0].image_id, int)
    splits = _splits(records)
    assert splits == {"train": 58, "val": 6}  # the hash split holds out about 5%
    assert _splits(load_dataset(path)) == splits  # deterministic
    messages = []
    kept, missing = filter_existing(records, log=messages.append)
    assert (len(kept), missing) == (4, 60)
    assert "60 images missing" in messages[0]


def test_karpathy_files(real_data):
    flickr = os.path.join(real_data, "karpathy", "dataset_flickr8k_excerpt_imgid0-27.json")
    assert detect_format(flickr) == "karpathy"
    records = load_dataset(flickr, images_dir="/imgs")
    assert len(records) == 28 and records[0].path == "/imgs/2513260012_03d33305cf.jpg"
    assert records[0].captions[0] == "A black dog is running after a white dog in the snow ."
    coco = load_dataset(os.path.join(real_data, "karpathy", "dataset_coco_excerpt_imgid0.json"),
                        images_dir="/coco")
    assert coco[0].path == "/coco/val2014/COCO_val2014_000000391895.jpg"
    assert coco[0].split == "test" and coco[0].image_id == 391895


def test_karpathy_restval_is_train(tmp_path):
    data = {"images": [{"filename": "a.jpg", "split": "restval", "sentences": [{"raw": "x y"}]},
                       {"filename": "b.jpg", "split": "val", "sentences": [{"tokens": ["p", "q"]}]}]}
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps(data))
    records = load_dataset(str(path))
    assert [r.split for r in records] == ["train", "val"]
    assert records[1].captions == ["p q"]
    assert by_split(records)["test"] == []
    assert isinstance(records[0], Record)


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("   \n\n", "empty"),
    ("hello world\nthis is not captions\n", "cannot tell the caption format"),
    ('{"foo": 1}', "cannot tell the caption format"),
    ("image,caption\n", "no captions found"),
])
def test_bad_caption_files(tmp_path, content, message):
    path = tmp_path / "captions.txt"
    path.write_text(content)
    with pytest.raises(NanocapError, match=message):
        load_dataset(str(path))


def test_missing_file_and_bad_format(tmp_path):
    with pytest.raises(NanocapError, match="not found"):
        load_dataset(str(tmp_path / "nope.txt"))
    with pytest.raises(NanocapError, match="unknown --format"):
        load_dataset(str(tmp_path / "nope.txt"), fmt="xml")
