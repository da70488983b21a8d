"""The synthetic shapes dataset: written by the CLI, read by the Karpathy reader."""
import collections
import json
import os

import cv2
import numpy as np

from edge.vocab import clean_caption
from train.__main__ import main
from train.data.readers import detect_format, load_dataset
from train.data.synth import COLOURS_BGR, SHAPES, describe_binding, make_binding_scene, make_scene

PARAPHRASE_WORDS = {"a", "one", "single", "the", "just", "is", "sits"}


def _content(caption):
    """Content words in order (paraphrase wording removed)."""
    return [w for w in clean_caption(caption) if w not in PARAPHRASE_WORDS]


def test_synth_cli_writes_a_karpathy_dataset(tmp_path, capsys):
    out = str(tmp_path / "shapes")
    assert main(["synth", out, "--images", "50", "--size", "64", "--seed", "3"]) == 0
    assert "wrote 50 images" in capsys.readouterr().out
    path = os.path.join(out, "dataset.json")
    assert detect_format(path) == "karpathy"
    records = load_dataset(path)
    assert collections.Counter(r.split for r in records) == {"train": 40, "val": 5, "test": 5}
    for record in records:
        image = cv2.imread(record.path)
        assert image.shape == (64, 64, 3)
        assert len(record.captions) == 5 and len(set(record.captions)) == 5
        contents = set(tuple(_content(c)) for c in record.captions)
        assert len(contents) == 1, record.captions  # paraphrases vary wording only
    words = set(w for r in records for c in r.captions for w in clean_caption(c))
    assert len(words) < 30
    assert any("left" in r.captions[0] for r in records) and any("above" in r.captions[0] for r in records)


def test_synth_is_deterministic(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (a, b):
        assert main(["synth", out, "--images", "6", "--size", "48", "--seed", "7"]) == 0
    assert json.load(open(os.path.join(a, "dataset.json"))) == json.load(open(os.path.join(b, "dataset.json")))
    assert np.array_equal(cv2.imread(os.path.join(a, "images", "00005.png")),
                          cv2.imread(os.path.join(b, "images", "00005.png")))


def test_scene_pixels_match_the_caption():
    """The named colours are really drawn, in the named order along the relation axis."""
    rng = np.random.RandomState(0)
    checked = 0
    for _ in range(40):
        image, objects, relation = make_scene(rng, 96)
        assert all(o["shape"] in SHAPES for o in objects)
        if relation is None or objects[0]["colour"] == objects[1]["colour"]:
            continue
        centres = []
        for obj in objects:
            colour = np.array(COLOURS_BGR[obj["colour"]])
            mask = np.abs(image.astype(int) - colour).sum(axis=2) < 30
            assert mask.sum() > 30, obj
            ys, xs = np.nonzero(mask)
            centres.append((xs.mean(), ys.mean()))
        axis = 0 if relation == "horizontal" else 1
        assert centres[0][axis] < centres[1][axis]
        checked += 1
    assert checked > 5


def test_synth_bad_arguments(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "x"), "--images", "0"]) == 2
    assert "--images must be at least 1" in capsys.readouterr().err


BINDING_FILLER = {"a", "one", "the", "and", "in", "order", "from", "left"}


def test_binding_scenes_name_two_or_three_objects_in_order(tmp_path):
    out = str(tmp_path / "binding")
    assert main(["synth", out, "--images", "40", "--size", "64", "--scenes", "binding"]) == 0
    data = json.load(open(os.path.join(out, "dataset.json")))
    assert data["dataset"] == "synth-binding"
    records = load_dataset(os.path.join(out, "dataset.json"))
    counts = collections.Counter()
    for record, image in zip(records, data["images"]):
        objects = image["objects"]
        counts[len(objects)] += 1
        assert [o["x"] for o in objects] == sorted(o["x"] for o in objects)
        named = [w for o in objects for w in (o["colour"], o["shape"])]
        assert len(set(record.captions)) == 5
        for caption in record.captions:
            words = clean_caption(caption)
            assert [w for w in words if w not in BINDING_FILLER] == named, caption
            assert len(words) <= 3 * len(objects) + 1 + 2  # "a X Y" each, "and", two more at most
    assert set(counts) == {2, 3}


def test_synth_default_is_still_shapes(tmp_path):
    out = str(tmp_path / "default")
    assert main(["synth", out, "--images", "4", "--size", "48"]) == 0
    assert json.load(open(os.path.join(out, "dataset.json")))["dataset"] == "synth-shapes"


def test_binding_pixels_match_the_caption():
    """Each named colour is drawn, left to right in the caption's order, in its shape's band."""
    rng = np.random.RandomState(1)
    checked = 0
    for _ in range(30):
        image, objects = make_binding_scene(rng, 96)
        assert 2 <= len(objects) <= 3
        colours = [o["colour"] for o in objects]
        if len(set(colours)) < len(colours):
            continue
        xs = []
        for obj in objects:
            mask = np.abs(image.astype(int) - np.array(COLOURS_BGR[obj["colour"]])).sum(axis=2) < 30
            assert mask.sum() > 40, obj
            cols = np.nonzero(mask)[1]
            assert abs(cols.mean() / 96.0 - obj["x"]) < 0.05
            xs.append(cols.mean())
        assert xs == sorted(xs)
        assert [w for w in clean_caption(describe_binding(objects)[0]) if w not in BINDING_FILLER] == \
            [w for o in objects for w in (o["colour"], o["shape"])]
        checked += 1
    assert checked > 5
