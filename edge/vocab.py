"""Caption cleaning and the vocabulary shared by training and the device.

Token ids are list indices. The four special tokens always come first:
``<pad>`` = 0, ``<start>`` = 1, ``<end>`` = 2, ``<unk>`` = 3.
"""
import re
from collections import Counter

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
_NON_WORD = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r"\s+")


def clean_caption(text):
    """Lowercase, drop punctuation, collapse whitespace; return a list of words."""
    text = text.lower().replace("'s", " s").replace("-", " ")
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip().split()


class Vocabulary(object):
    """Maps words to ids and back; ``len(vocab)`` is the model's output size."""

    def __init__(self, words):
        words = list(words)
        if tuple(words[:4]) != SPECIALS:
            raise ValueError("vocabulary must start with %s" % (SPECIALS,))
        self.itos = words
        self.stoi = dict((w, i) for i, w in enumerate(words))
        self.pad_id, self.start_id, self.end_id, self.unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, token_lists, min_count=5, max_size=None):
        """Build from tokenised captions: words seen ``min_count`` times or more,
        most frequent first (ties alphabetical), at most ``max_size`` ids in all."""
        counts = Counter(w for tokens in token_lists for w in tokens)
        kept = sorted((w for w, c in counts.items() if c >= min_count),
                      key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[:max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + kept)

    def __len__(self):
        return len(self.itos)

    def encode(self, caption, max_len=None):
        """Caption (text or word list) -> ``[<start>, w1, ..., <end>]`` ids.

        ``max_len`` bounds the words plus ``<end>`` (``<start>`` not counted).
        """
        words = clean_caption(caption) if isinstance(caption, str) else list(caption)
        if max_len is not None:
            words = words[:max_len - 1]
        ids = [self.stoi.get(w, self.unk_id) for w in words]
        return [self.start_id] + ids + [self.end_id]

    def decode_words(self, ids):
        """Ids -> words, stopping at ``<end>`` or ``<pad>``; ``<start>`` skipped."""
        words = []
        for i in ids:
            i = int(i)
            if i in (self.end_id, self.pad_id):
                break
            if i != self.start_id:
                words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return words

    def decode(self, ids):
        """Ids -> caption text (see ``decode_words``)."""
        return " ".join(self.decode_words(ids))

    def to_dict(self):
        """JSON-ready form, as stored in checkpoints and ``nanocap.json``."""
        return {"words": list(self.itos), "pad": self.pad_id, "start": self.start_id,
                "end": self.end_id, "unk": self.unk_id}

    @classmethod
    def from_dict(cls, data):
        return cls(data["words"])
