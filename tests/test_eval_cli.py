"""``python -m train eval`` and ``python -m train caption`` end to end: a tiny
checkpoint and its exported bundle, a small synthetic dataset, real Flickr8k
images, real pycocoevalcap."""
import json
import os
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("pycocoevalcap")

from train.__main__ import main as train_main  # noqa: E402
from train.evaluation import metrics  # noqa: E402

KEYS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    """30 synthetic 64 px images in the Karpathy format; returns dataset.json."""
    from train.data.synth import write_dataset
    out = str(tmp_path_factory.mktemp("synth"))
    write_dataset(out, 30, size=64)
    return os.path.join(out, "dataset.json")


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def read_results(path):
    with open(path) as handle:
        return dict((r["image_id"], r["caption"]) for r in json.load(handle))


@pytest.mark.skipif(shutil.which("java") is None, reason="no java")
def test_eval_checkpoint_scores_like_score(tiny_checkpoint, synth_data, tmp_path, capsys):
    results = str(tmp_path / "res.json")
    assert train_main(["eval", "--checkpoint", tiny_checkpoint, "--data", synth_data,
                       "--split", "test", "--results", results]) == 0
    scores = last_json(capsys.readouterr().out)
    assert list(scores) == KEYS and all(isinstance(scores[k], float) for k in KEYS)
    hyps = read_results(results)
    with open(synth_data) as handle:
        images = json.load(handle)["images"]
    test = [im for im in images if im["split"] == "test"]
    assert sorted(hyps) == sorted(im["filename"] for im in test)
    # the same numbers from `score` on the written results file
    ann = {"annotations": [{"image_id": im["filename"], "caption": s["raw"]}
                           for im in test for s in im["sentences"]]}
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps(ann))
    assert train_main(["score", "--results", results, "--annotations", str(ann_path)]) == 0
    assert last_json(capsys.readouterr().out) == scores


@pytest.mark.parametrize("beam", ["1", "3"])
def test_bundle_captions_equal_checkpoint_captions(tiny_checkpoint, tiny_bundle, synth_data,
                                                   tmp_path, monkeypatch, capsys, beam):
    monkeypatch.setattr(metrics, "find_java", lambda: None)   # fast: captions compared here
    paths = {}
    for flag, model in (("--checkpoint", tiny_checkpoint), ("--bundle", tiny_bundle)):
        paths[flag] = str(tmp_path / ("%s.json" % flag.strip("-")))
        assert train_main(["eval", flag, model, "--data", synth_data, "--split", "val",
                           "--beam", beam, "--limit", "2", "--results", paths[flag]]) == 0
        scores = last_json(capsys.readouterr().out)
        assert scores["METEOR"] is None and scores["tokenizer"] == "python"
    checkpoint, bundle = read_results(paths["--checkpoint"]), read_results(paths["--bundle"])
    assert len(checkpoint) == 2 and checkpoint == bundle


def test_eval_update_bundle_and_skipped_image(tiny_bundle, synth_data, tmp_path,
                                              monkeypatch, capsys):
    monkeypatch.setattr(metrics, "find_java", lambda: None)
    bundle = str(tmp_path / "bundle")
    shutil.copytree(tiny_bundle, bundle)
    data_dir = str(tmp_path / "data")
    shutil.copytree(os.path.dirname(synth_data), data_dir)
    with open(os.path.join(data_dir, "dataset.json")) as handle:
        first_test = [im for im in json.load(handle)["images"] if im["split"] == "test"][0]
    with open(os.path.join(data_dir, "images", first_test["filename"]), "wb") as handle:
        handle.write(b"not an image")
    assert train_main(["eval", "--bundle", bundle, "--data",
                       os.path.join(data_dir, "dataset.json"), "--update-bundle"]) == 0
    captured = capsys.readouterr()
    scores = last_json(captured.out)
    assert "1 of " in captured.err and "skipped" in captured.err
    from edge.bundle import load_bundle
    stored = load_bundle(bundle).meta["scores"]["fp32"]         # checksums still valid
    assert stored["CIDEr"] == scores["CIDEr"] and stored["split"] == "test"


def test_eval_errors_are_one_line(tiny_checkpoint, synth_data, capsys):
    assert train_main(["eval", "--checkpoint", tiny_checkpoint, "--data", synth_data,
                       "--update-bundle"]) != 0
    assert train_main(["eval", "--checkpoint", "/nonexistent.pt", "--data", synth_data]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--update-bundle needs --bundle" in err[0]
    assert "not found" in err[1]


def test_caption_two_real_images_and_a_bad_one(tiny_checkpoint, tiny_bundle, real_data,
                                               tmp_path, capsys):
    image_dir = os.path.join(real_data, "flickr8k", "images")
    real = sorted(os.listdir(image_dir))[:2]
    folder = tmp_path / "two"
    folder.mkdir()
    for name in real:
        shutil.copy(os.path.join(image_dir, name), str(folder / name))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    whole = (folder / real[0]).read_bytes()
    cut = tmp_path / "cut.jpg"  # an interrupted copy: OpenCV alone decodes it partially
    cut.write_bytes(whole[:len(whole) * 6 // 10])
    images = [str(folder / real[0]), str(bad), str(cut), str(folder / real[1])]

    assert train_main(["caption", "--checkpoint", tiny_checkpoint] + images) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [images[0], images[3]]
    assert all(len(line.split("\t")) == 2 and line.split("\t")[1] for line in lines)
    assert str(bad) in captured.err and "Traceback" not in captured.err
    assert "cut short" in captured.err and str(cut) in captured.err
    assert "2 of 4 inputs could not be captioned" in captured.err

    # a directory argument: both images, through the bundle, beam 2, same order
    assert train_main(["caption", "--bundle", tiny_bundle, "--beam", "2", str(folder)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in out] == [str(folder / n) for n in real]
