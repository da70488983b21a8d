"""CIDEr and CIDEr-D computed in-process with vectorised n-gram counting (numpy).

The reward of self-critical training (``train.objectives.scst``) and a fast scorer for
evaluation; no Java, no subprocess, no per-n-gram Python loop.

Definitions (Vedantam et al. 2015; ``n`` = 1..4, ``m`` references per image):

- a sentence's vector ``g^n``: for each n-gram, ``term count * (log(D) - log(max(1, df)))``
  with ``df`` the number of documents (images) whose references hold the n-gram
  and ``D`` the number of documents;
- ``mode="cider-d"`` (the default; what pycocoevalcap's ``Cider`` computes, the
  COCO server's "CIDEr"): ``10/m * sum_j mean_n  sum_g min(c_g, r_g) r_g / (|c||r|)
  * exp(-delta^2 / (2 sigma^2))``: candidate weights clipped at the reference's,
  a Gaussian penalty on the length difference ``delta``, times 10.
  ``delta`` is measured as pycocoevalcap measures it: in bigram counts, i.e.
  ``max(0, words - 1)`` on each side;
- ``mode="cider"`` (the paper's plain CIDEr): ``1/m * sum_j mean_n cos(c, r_j)``,
  no clipping, no length penalty, no factor 10.

Document frequencies come from a reference corpus (``DocumentFrequency``): the
training split's references for SCST (as self-critical.pytorch's
``coco-train-idxs``), or the scored references themselves (pycocoevalcap's
behaviour, ``DocumentFrequency.from_references`` on the same lists).

Sentences are sequences of non-negative ints (token ids) or of words
(``WordIds`` maps them to ints); an n-gram is packed into one int64 key.
"""
import numpy as np

MODES = ("cider-d", "cider")


class WordIds(object):
    """Words -> small non-negative ints, growing as new words are met."""

    def __init__(self):
        self.ids = {}

    def __call__(self, words):
        """A list of words (or a whitespace-separated string) -> list of ints."""
        if isinstance(words, str):
            words = words.split()
        ids = self.ids
        return [ids.setdefault(w, len(ids)) for w in words]


def _padded(sentences):
    """Int sequences -> ``(int64 [S, L] holding id + 1, 0 = padding; lengths int64 [S])``."""
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    width = max(1, int(lengths.max())) if len(sentences) else 1
    out = np.zeros((len(sentences), width), dtype=np.int64)
    if len(sentences):
        mask = np.arange(width)[None, :] < lengths[:, None]
        out[mask] = np.concatenate([np.asarray(s, dtype=np.int64).ravel() for s in sentences]
                                   + [np.zeros(0, np.int64)]) + 1
    return out, lengths


def ngram_counts(sentences, id_limit, n=4):
    """Every n-gram (1..n) of every sentence (ids in ``0 .. id_limit - 1``) with its count.

    Returns ``(sentence int64 [E], key int64 [E], order int64 [E] in 0..n-1,
    count int64 [E])``, one entry per distinct (sentence, n-gram). Keys pack the
    n-gram's ids + 1 in base ``id_limit + 1``, so different orders never
    collide and keys agree between calls with the same ``id_limit``.
    """
    base = int(id_limit) + 1
    if float(base) ** n >= 2.0 ** 62:
        raise ValueError("%d token ids are too many to pack %d-grams into int64" % (id_limit, n))
    grid, lengths = _padded(sentences)
    if grid.size and int(grid.max()) >= base:
        raise ValueError("token id %d outside 0..%d" % (int(grid.max()) - 1, id_limit - 1))
    rows, keys, orders = [], [], []
    key = np.zeros_like(grid)
    for k in range(1, n + 1):
        width = grid.shape[1] - k + 1
        if width <= 0:
            break
        key = key[:, :width] * base + grid[:, k - 1:k - 1 + width]
        valid = np.arange(width)[None, :] + k <= lengths[:, None]
        r, c = np.nonzero(valid)
        rows.append(r)
        keys.append(key[r, c])
        orders.append(np.full(len(r), k - 1, dtype=np.int64))
    if not rows or not sum(len(r) for r in rows):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    rows, keys, orders = np.concatenate(rows), np.concatenate(keys), np.concatenate(orders)
    uniq, dense = np.unique(keys, return_inverse=True)
    pair, count = np.unique(rows * len(uniq) + dense.ravel(), return_counts=True)
    sentence, dense = pair // len(uniq), pair % len(uniq)
    # the order of an n-gram is a function of its key: take it from any occurrence
    order_of = np.zeros(len(uniq), dtype=np.int64)
    order_of[dense_of(keys, uniq)] = orders
    return sentence, uniq[dense], order_of[dense], count


def dense_of(keys, uniq):
    """Index of each of ``keys`` in the sorted unique array ``uniq`` (all present)."""
    return np.searchsorted(uniq, keys)


class DocumentFrequency(object):
    """For every n-gram of a reference corpus, in how many documents it occurs.

    ``keys int64 [K]`` (sorted, packed as ``ngram_counts`` packs them for the
    same id range), ``counts float64 [K]``, ``documents``: the number of
    documents ``D`` (``log(D)`` is CIDEr's reference length term).
    """

    def __init__(self, keys, counts, documents):
        self.keys, self.counts, self.documents = keys, counts.astype(np.float64), int(documents)

    @classmethod
    def from_references(cls, references, id_limit, n=4):
        """``references``: one list of int sequences (ids < ``id_limit``) per document (image)."""
        flat = [s for refs in references for s in refs]
        owner = np.repeat(np.arange(len(references)), [len(r) for r in references])
        sentence, key, _, _ = ngram_counts(flat, id_limit, n)
        keys, dense = np.unique(key, return_inverse=True)
        per_doc = np.unique(owner[sentence] * len(keys) + dense.ravel())  # (document, n-gram) pairs
        counts = np.bincount(per_doc % len(keys), minlength=len(keys)) if len(keys) else np.zeros(0)
        return cls(keys, counts, len(references))

    def lookup(self, keys):
        """Document frequency of each key (0 for an n-gram never seen)."""
        if not len(self.keys):
            return np.zeros(len(keys))
        uniq, back = np.unique(keys, return_inverse=True)  # sorted needles: cache-friendly
        pos = np.minimum(np.searchsorted(self.keys, uniq), len(self.keys) - 1)
        return np.where(self.keys[pos] == uniq, self.counts[pos], 0.0)[back.ravel()]


def _sum_at(values, flat_index, shape):
    """``values`` summed into a zero array of ``shape`` at ``flat_index`` (C order)."""
    size = int(np.prod(shape))
    return np.bincount(flat_index, weights=values, minlength=size)[:size].reshape(shape)


class CiderD(object):
    """Scores candidates against their references with fixed document frequencies.

    ``doc_freq``: a ``DocumentFrequency`` built with the same ``id_limit``
    (ids must lie in ``0 .. id_limit - 1``: the vocabulary size, or a
    ``WordIds`` table's final size). ``mode``: ``"cider-d"`` or ``"cider"``.
    """

    def __init__(self, doc_freq, id_limit, n=4, sigma=6.0, mode="cider-d"):
        if mode not in MODES:
            raise ValueError("mode must be one of %s, not %r" % (", ".join(MODES), mode))
        self.doc_freq, self.id_limit, self.n, self.sigma, self.mode = \
            doc_freq, int(id_limit), n, float(sigma), mode

    @classmethod
    def from_references(cls, references, id_limit, **kwargs):
        """Document frequencies from ``references`` (one list of sequences per image)."""
        df = DocumentFrequency.from_references(references, id_limit, kwargs.get("n", 4))
        return cls(df, id_limit, **kwargs)

    def _vectors(self, sentences):
        """tf-idf entries ``(sentence, key, order, value)`` and ``norms [S, n]``, ``lengths [S]``."""
        sentence, key, order, count = ngram_counts(sentences, self.id_limit, self.n)
        idf = np.log(float(self.doc_freq.documents)) - np.log(np.maximum(1.0, self.doc_freq.lookup(key)))
        value = count * idf
        norms = _sum_at(value ** 2, sentence * self.n + order, (len(sentences), self.n))
        words = np.array([len(s) for s in sentences], dtype=np.int64)
        return (sentence, key, order, value), np.sqrt(norms), np.maximum(0, words - 1)

    def score(self, candidates, references, groups=None):
        """Per-candidate scores ``float64 [C]``.

        ``candidates``: C int sequences; ``references``: G lists of int
        sequences; ``groups int [C]``: the reference list of each candidate
        (default ``range(C)``, then G == C). Several candidates may share a
        group (SCST's K samples of one image).
        """
        groups = np.arange(len(candidates)) if groups is None else np.asarray(groups, np.int64)
        if len(groups) != len(candidates):
            raise ValueError("groups has %d entries for %d candidates" % (len(groups), len(candidates)))
        per_group = np.array([len(r) for r in references], dtype=np.int64)
        if len(candidates) == 0:
            return np.zeros(0)
        if (per_group[groups] == 0).any():
            raise ValueError("a candidate has no references")
        flat = [s for refs in references for s in refs]
        first = np.concatenate([[0], np.cumsum(per_group)[:-1]])
        (cs, ck, co, cv), c_norm, c_len = self._vectors(list(candidates))
        (rs, rk, ro, rv), r_norm, r_len = self._vectors(flat)
        r_group = np.repeat(np.arange(len(references)), per_group)[rs]
        # join candidate entries to the entries of the same n-gram in their group's references
        uniq = np.unique(np.concatenate([ck, rk]))
        r_comp = r_group * len(uniq) + dense_of(rk, uniq)
        sort = np.argsort(r_comp, kind="stable")
        r_comp, rs, ro, rv = r_comp[sort], rs[sort], ro[sort], rv[sort]
        c_comp = groups[cs] * len(uniq) + dense_of(ck, uniq)
        lo = np.searchsorted(r_comp, c_comp, "left")
        hits = np.searchsorted(r_comp, c_comp, "right") - lo
        c_idx = np.repeat(np.arange(len(cs)), hits)
        r_idx = np.repeat(lo - np.cumsum(hits) + hits, hits) + np.arange(int(hits.sum()))
        hyp, ref = cv[c_idx], rv[r_idx]
        prod = np.minimum(hyp, ref) * ref if self.mode == "cider-d" else hyp * ref
        # dot products per (candidate, reference sentence, order)
        cand, ref_sent, order = cs[c_idx], rs[r_idx], co[c_idx]
        local = ref_sent - first[r_group[r_idx]]
        width = int(per_group.max())
        dots = _sum_at(prod, (cand * width + local) * self.n + order, (len(candidates), width, self.n))
        # norms and lengths of each candidate's references, laid out [C, width]
        slot = np.arange(width)[None, :]
        valid = slot < per_group[groups][:, None]
        ref_index = np.where(valid, first[groups][:, None] + slot, 0)
        denom = c_norm[:, None, :] * r_norm[ref_index]
        sims = np.where(denom != 0, dots / np.where(denom != 0, denom, 1.0), dots)
        if self.mode == "cider-d":
            delta = (c_len[:, None] - r_len[ref_index]).astype(np.float64)
            sims = sims * np.exp(-(delta ** 2) / (2 * self.sigma ** 2))[:, :, None]
        per_ref = np.where(valid, sims.mean(axis=2), 0.0)
        scale = 10.0 if self.mode == "cider-d" else 1.0
        return scale * per_ref.sum(axis=1) / per_group[groups]


def cider_text(candidates, references, df_references=None, mode="cider-d"):
    """Text convenience: ``candidates {id: str}``, ``references {id: [str]}``
    (already tokenised, whitespace-separated) -> ``(mean, {id: score})``.

    Document frequencies from ``df_references`` (a list of reference lists, e.g.
    the training split's), or from ``references`` themselves (pycocoevalcap).
    """
    words = WordIds()
    ids = sorted(candidates)
    cands = [words(candidates[i]) for i in ids]
    refs = [[words(r) for r in references[i]] for i in ids]
    df_refs = refs if df_references is None else [[words(r) for r in rs] for rs in df_references]
    limit = max(1, len(words.ids))
    scorer = CiderD.from_references(df_refs, limit, mode=mode)
    scores = scorer.score(cands, refs)
    return float(scores.mean()) if len(scores) else 0.0, dict(zip(ids, scores.tolist()))
