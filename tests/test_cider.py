"""train.objectives.cider against pycocoevalcap's Cider (which is CIDEr-D) and against a
plain dict implementation of the paper's CIDEr, on real Flickr8k captions."""
import collections
import math
import os

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from edge.vocab import clean_caption
from train.objectives.cider import CiderD, DocumentFrequency, WordIds, cider_text, ngram_counts


def _flickr(real_data):
    """``({image: [5 cleaned captions]}, train image names)`` of the fixture excerpt."""
    folder = os.path.join(real_data, "flickr8k")
    captions = collections.defaultdict(list)
    for line in open(os.path.join(folder, "Flickr8k.token.txt")):
        key, text = line.rstrip("\n").split("\t")
        captions[key.split("#")[0]].append(" ".join(clean_caption(text)))
    train = set(open(os.path.join(folder, "Flickr_8k.trainImages.txt")).read().split())
    return dict(captions), train


def test_cider_d_equals_pycocoevalcap_with_df_from_the_scored_refs(real_data):
    captions, _ = _flickr(real_data)
    assert len(captions) >= 200
    cands = dict((i, c[0]) for i, c in captions.items())
    refs = dict((i, c[1:]) for i, c in captions.items())
    expected_mean, expected = Cider().compute_score(refs, dict((i, [c]) for i, c in cands.items()))
    mean, scores = cider_text(cands, refs)
    got = np.array([scores[i] for i in refs])  # pycocoevalcap keeps the dict's order
    assert np.abs(got - np.asarray(expected)).max() < 1e-6
    assert abs(mean - expected_mean) < 1e-6
    assert 0.3 < mean < 3.0 and got.std() > 0.1  # real spread, not all zeros


def test_cider_d_equals_pycocoevalcap_with_df_from_a_training_split(real_data):
    captions, train = _flickr(real_data)
    scored = sorted(i for i in captions if i not in train)
    train_refs = [captions[i] for i in sorted(train) if i in captions]
    assert len(scored) > 30 and len(train_refs) > 100
    reference = CiderScorer(n=4, sigma=6.0)
    for i in scored:
        reference += (captions[i][0], captions[i][1:])
    reference.document_frequency = collections.defaultdict(float)
    for refs in train_refs:
        for ngram in set(g for r in refs for g in _ngrams(r.split())):
            reference.document_frequency[ngram] += 1
    expected = np.array(reference.compute_cider())  # ref_len = log(number of scored images)

    words = WordIds()
    cands = [words(captions[i][0]) for i in scored]
    refs = [[words(r) for r in captions[i][1:]] for i in scored]
    train_ids = [[words(r) for r in rs] for rs in train_refs]
    df = DocumentFrequency.from_references(train_ids, len(words.ids))
    scorer = CiderD(DocumentFrequency(df.keys, df.counts, len(scored)), len(words.ids))
    got = scorer.score(cands, refs)
    assert np.abs(got - expected).max() < 1e-6
    assert np.abs(got - cider_text(dict(zip(scored, (captions[i][0] for i in scored))),
                                   dict((i, captions[i][1:]) for i in scored))[0]).max() > 1e-3


def _ngrams(words, n=4):
    return [tuple(words[i:i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)]


def _plain_cider(cand, refs, df, documents, n=4):
    """The paper's CIDEr (no clipping, no length penalty, no factor 10), with dicts."""
    def vectors(words):
        counts = collections.Counter(_ngrams(words, n))
        vec = [dict() for _ in range(n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (math.log(documents) - math.log(max(1.0, df.get(gram, 0.0))))
        return vec

    c = vectors(cand)
    total = 0.0
    for ref in refs:
        r = vectors(ref)
        per_n = []
        for k in range(n):
            dot = sum(v * r[k].get(g, 0.0) for g, v in c[k].items())
            norm = math.sqrt(sum(v * v for v in c[k].values())) * math.sqrt(sum(v * v for v in r[k].values()))
            per_n.append(dot / norm if norm else 0.0)
        total += sum(per_n) / n
    return total / len(refs)


def test_plain_cider_mode_matches_the_paper_formula(real_data):
    captions, train = _flickr(real_data)
    ids = sorted(captions)
    df = collections.Counter(g for i in ids for g in set(x for r in captions[i][1:] for x in _ngrams(r.split())))
    expected = [_plain_cider(captions[i][0].split(), [r.split() for r in captions[i][1:]], df, len(ids))
                for i in ids]
    mean, scores = cider_text(dict((i, captions[i][0]) for i in ids),
                              dict((i, captions[i][1:]) for i in ids), mode="cider")
    got = np.array([scores[i] for i in ids])
    assert np.abs(got - np.array(expected)).max() < 1e-9
    cider_d = np.array([cider_text({i: captions[i][0]}, {i: captions[i][1:]})[0] for i in ids[:3]])
    assert not np.allclose(got[:3] * 10, cider_d)  # the two modes really differ


def test_samples_sharing_references_score_as_if_alone():
    """SCST scores K samples per image against that image's references (``groups``)."""
    refs = [[[0, 1, 2, 3], [0, 1, 4, 3], [5, 1, 2]], [[6, 7, 8], [6, 7, 9, 2]]]
    scorer = CiderD.from_references(refs + [[[2, 2, 3]]], 10)
    cands = [[0, 1, 2], [0, 1, 2, 3], [6, 7], [9], [], [6, 7, 8]]
    groups = [0, 0, 1, 1, 0, 1]
    together = scorer.score(cands, refs, groups)
    alone = [scorer.score([c], [refs[g]])[0] for c, g in zip(cands, groups)]
    assert np.allclose(together, alone)
    assert together[4] == 0.0 and together[1] > together[0] > 0 and together[5] > together[2]


def test_ngram_keys_do_not_collide_across_orders_and_bad_ids_are_refused():
    sentence, key, order, count = ngram_counts([[0, 0], [0]], id_limit=3)
    assert len(set(key.tolist())) == 2 and sorted(order.tolist()) == [0, 0, 1]
    assert count[(sentence == 0) & (order == 0)].tolist() == [2]
    with pytest.raises(ValueError, match="outside"):
        ngram_counts([[5]], id_limit=3)
    with pytest.raises(ValueError, match="mode"):
        CiderD(DocumentFrequency.from_references([[[1]]], 3), 3, mode="bleu")


def test_exact_match_rate_counts_captions_equal_to_a_reference():
    from train.evaluation.metrics import exact_match_rate
    refs = {1: ["A red circle.", "one red circle"], 2: ["a blue square"], 3: ["a red square"]}
    assert exact_match_rate(refs, {1: "one red  circle", 2: "a blue square", 3: "a red"}) == 2 / 3.0
