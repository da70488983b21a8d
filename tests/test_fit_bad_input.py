"""Bad input on the training side: each is one clear line naming the file or
value and a non-zero exit, or (one bad record, one damaged image among many)
skipped, counted and named while the run goes on."""
import json
import os
import shutil

import cv2
import pytest

from edge.errors import NanocapError
from edge.image import read_image
from train.data.readers import load_dataset

pytest.importorskip("torch")

from train.__main__ import main  # noqa: E402
from train.data.batches import load_images  # noqa: E402


def one_line(capsys, text):
    """The single stderr line of a failed command; asserts ``text`` is in it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "--batch-size must be at least 1, not 0"),
    ("--epochs", "0", "--epochs must be at least 1, not 0"),
    ("--lr", "0", "--lr must be above 0.0, not 0.0"),
    ("--lr", "nan", "--lr must be above 0.0, not nan"),
    ("--image-size", "8", "--image-size must be at least 32, not 8"),
    ("--dropout", "1.5", "--dropout must be below 1, not 1.5"),
    ("--minutes", "-1", "--minutes must be above 0.0, not -1.0"),
    ("--max-len", "0", "--max-len must be at least 1, not 0"),
])
def test_bad_numeric_flags_fail_before_any_loading(flag, value, message, tmp_path, capsys):
    # --data does not exist: a check made before loading answers about the flag
    assert main(["fit", "--data", str(tmp_path / "absent.json"), "--out", str(tmp_path / "run"),
                 flag, value]) == 2
    one_line(capsys, message)
    assert not os.path.exists(str(tmp_path / "run"))


def _karpathy(tmp_path, images):
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps({"images": images}))
    return str(path)


GOOD = [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a red circle"}]},
        {"filename": "b.jpg", "split": "val", "sentences": [{"raw": "a blue square"}]}]


def test_karpathy_entry_without_filename_is_skipped_and_named(tmp_path):
    broken = {"imgid": 7, "split": "train", "sentences": [{"raw": "a lost image"}]}
    path = _karpathy(tmp_path, GOOD[:1] + [broken] + GOOD[1:])
    lines = []
    records = load_dataset(path, log=lines.append)
    assert [os.path.basename(r.path) for r in records] == ["a.jpg", "b.jpg"]
    assert len(lines) == 1 and path in lines[0]
    assert "skipped 1 malformed records (first: images[1] (imgid 7): no 'filename')" in lines[0]
    debug = []
    load_dataset(path, log=debug.append, debug=True)
    assert debug[1:] == ["  malformed: images[1] (imgid 7): no 'filename'"]


def test_karpathy_file_with_only_malformed_entries_is_one_line(tmp_path, capsys):
    path = _karpathy(tmp_path, [{"split": "train", "sentences": [{"raw": "x"}]}, "not an entry"])
    assert main(["fit", "--data", path, "--out", str(tmp_path / "run")]) == 2
    line = one_line(capsys, "all 2 records are malformed")
    assert path in line and "no 'filename'" in line


@pytest.fixture
def coco_copy(real_data, tmp_path):
    """The COCO excerpt and its 4 photos copied; returns (captions path, data dict)."""
    src = os.path.join(real_data, "coco")
    shutil.copytree(os.path.join(src, "val2017"), str(tmp_path / "val2017"))
    with open(os.path.join(src, "captions_val2017.json")) as handle:
        return str(tmp_path / "captions_val2017.json"), json.load(handle)


def test_coco_annotation_without_image_id_is_skipped_and_named(coco_copy):
    path, data = coco_copy
    dropped = data["annotations"][5]
    del dropped["image_id"]
    with open(path, "w") as handle:
        json.dump(data, handle)
    lines = []
    records = load_dataset(path, log=lines.append)
    assert sum(len(r.captions) for r in records) == 319 and len(records) == 64
    assert ("skipped 1 malformed records (first: annotations[5] (id %d): no 'image_id')"
            % dropped["id"]) in lines[0]


def test_coco_file_with_only_malformed_annotations_is_one_line(coco_copy, tmp_path, capsys):
    path, data = coco_copy
    for ann in data["annotations"]:
        del ann["image_id"]
    with open(path, "w") as handle:
        json.dump(data, handle)
    assert main(["fit", "--data", path, "--out", str(tmp_path / "run")]) == 2
    assert path in one_line(capsys, "all 320 records are malformed")
    assert main(["eval", "--data", path, "--checkpoint", "none.pt"]) == 2
    one_line(capsys, "all 320 records are malformed")


@pytest.fixture
def cut_short(real_data, tmp_path):
    """A real Flickr8k JPEG cut at 60% (an interrupted copy): libjpeg decodes it
    partially and only says "Premature end of JPEG file" on stderr."""
    folder = os.path.join(real_data, "flickr8k", "images")
    with open(os.path.join(folder, sorted(os.listdir(folder))[0]), "rb") as handle:
        data = handle.read()
    path = str(tmp_path / "cut.jpg")
    with open(path, "wb") as handle:
        handle.write(data[:len(data) * 6 // 10])
    padded = str(tmp_path / "padded.jpg")  # complete, zero bytes after the end marker
    with open(padded, "wb") as handle:
        handle.write(data + b"\0" * 100)
    return path, padded


def test_truncated_jpeg_is_damaged(cut_short):
    path, padded = cut_short
    assert cv2.imread(path) is not None  # what OpenCV alone lets through
    with pytest.raises(NanocapError, match="cut short.*%s" % path):
        read_image(path)
    assert read_image(padded).shape == (500, 333, 3)


def test_training_skips_and_names_truncated_images(cut_short, real_data):
    from train.data.readers import Record
    path, padded = cut_short
    records = [Record(i, p, ["a dog"], "train") for i, p in enumerate([padded, path, padded])]
    source, problems = load_images(records, 32)
    assert len(source) == 2 and len(problems) == 1
    assert "cut short" in problems[0] and path in problems[0]


def test_token_and_csv_lines_without_fields_are_skipped_and_named(real_data, tmp_path):
    lines = open(os.path.join(real_data, "flickr8k", "Flickr8k.token.txt")).read().splitlines()[:10]
    token = tmp_path / "results_20130124.token"
    token.write_text("\n".join(lines[:5] + ["a caption with no image name"] + lines[5:]) + "\n")
    log = []
    assert len(load_dataset(str(token), log=log.append)) == 2
    assert "skipped 1 malformed records (first: line 6: no tab between image and caption)" in log[0]
    pipe = tmp_path / "results.csv"
    pipe.write_text("image_name| comment_number| comment\na.jpg| 0| a dog\nb.jpg\nc.jpg| 0| a cat\n")
    log = []
    assert [r.image_id for r in load_dataset(str(pipe), log=log.append)] == ["a.jpg", "c.jpg"]
    assert "(first: line 3: 1 fields, expected 3)" in log[0]
