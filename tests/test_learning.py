"""Training teaches the model something: after a short run on a small synthetic
set, its greedy captions of the training images score a clearly higher CIDEr-D
than the best constant caption (the best single training caption said of every
image), computed here from the training captions."""
import collections
import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pycocoevalcap")

from edge.vocab import clean_caption  # noqa: E402
from train.data import batches as tdata  # noqa: E402
from train.data.readers import by_split, load_dataset  # noqa: E402
from train.data.synth import write_dataset  # noqa: E402
from train.evaluation.metrics import quick_scores  # noqa: E402
from train.epochs import evaluate  # noqa: E402
from train.model.checkpoint import load_checkpoint  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARGIN = 1.4  # the trained model's CIDEr must reach 1.4x the best constant caption's
FIT = ["--weights", "none", "--image-size", "64", "--hidden", "64", "--embed", "32",
       "--batch-size", "8", "--max-len", "12", "--min-count", "1", "--lr", "5e-3",
       "--dropout", "0", "--epochs", "60", "--val-images", "0", "--no-progress"]


def _ngrams(words):
    counts = collections.Counter()
    for n in range(1, 5):
        for i in range(len(words) - n + 1):
            counts[tuple(words[i:i + n])] += 1
    return counts


def best_constant_cider(candidates, refs):
    """``(CIDEr-D, caption)`` of the best constant among ``candidates`` on ``refs
    {image: [captions]}``: pycocoevalcap's CiderScorer formula (idf from ``refs``,
    clipped tf-idf cosine per n-gram order, length penalty, x10), with the
    references indexed once so hundreds of candidates take seconds, not minutes.
    ``test_constant_cider_equals_pycocoevalcap`` checks it against the toolkit."""
    tokens = [[clean_caption(r) for r in rs] for rs in refs.values()]
    df = collections.Counter()
    for rs in tokens:
        df.update(set(g for words in rs for g in _ngrams(words)))
    log_n = math.log(float(len(tokens)))

    def vector(words):
        vec = dict((g, tf * (log_n - math.log(max(1.0, df[g])))) for g, tf in _ngrams(words).items())
        norms = [0.0] * 4
        for g, w in vec.items():
            norms[len(g) - 1] += w * w
        return vec, [math.sqrt(x) for x in norms], len(words)

    flat, index = [], collections.defaultdict(list)  # n-gram -> [(reference, weight)]
    for rs in tokens:
        for words in rs:
            vec, norms, length = vector(words)
            for g, w in vec.items():
                index[g].append((len(flat), w))
            flat.append((norms, length, 10.0 / len(rs) / len(tokens)))
    best = (-1.0, None)
    for caption in sorted(set(candidates)):
        vec, norms, length = vector(clean_caption(caption))
        dots = collections.defaultdict(lambda: [0.0] * 4)
        for g, w in vec.items():
            for ref, w_ref in index[g]:
                dots[ref][len(g) - 1] += min(w, w_ref) * w_ref
        total = 0.0
        for ref, dot in dots.items():
            norms_r, length_r, weight = flat[ref]
            cosine = sum(d / (norms[n] * norms_r[n]) if norms[n] and norms_r[n] else d
                         for n, d in enumerate(dot))
            total += cosine / 4.0 * math.exp(-(length - length_r) ** 2 / 72.0) * weight
        best = max(best, (total, caption))
    return best


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """50 synthetic 64 px images (40 train)."""
    return write_dataset(str(tmp_path_factory.mktemp("shapes")), 50, size=64, seed=0)


def test_constant_cider_equals_pycocoevalcap(shapes):
    train = by_split(load_dataset(shapes))["train"]
    refs = dict((i, r.captions) for i, r in enumerate(train))
    for caption in (train[0].captions[0], train[7].captions[3], "a small red circle", "zebra"):
        ours = best_constant_cider([caption], refs)[0]
        theirs = quick_scores(refs, dict((i, caption) for i in refs))["CIDEr"]
        assert abs(ours - theirs) < 1e-9, (caption, ours, theirs)


def test_training_beats_the_best_constant_caption(shapes, tmp_path):
    run = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")  # 1 thread: fastest when loaded
    result = subprocess.run([sys.executable, "-m", "train", "fit", "--data", shapes, "--out", run]
                            + FIT, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    train = by_split(load_dataset(shapes))["train"]
    refs = dict((i, r.captions) for i, r in enumerate(train))
    baseline, constant = best_constant_cider([c for r in train for c in r.captions], refs)
    model, vocab, _ = load_checkpoint(os.path.join(run, "last.pt"))
    source, problems = tdata.load_images(train, model.config.image_size)
    assert not problems and len(source) == len(train)
    scores, _ = evaluate(model, source, train, vocab)
    assert scores["CIDEr"] > MARGIN * baseline, (scores, baseline, constant)
