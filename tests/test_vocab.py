"""Caption cleaning and the vocabulary (edge.vocab), on real Flickr8k captions."""
import os

import pytest

from edge.vocab import SPECIALS, Vocabulary, clean_caption


def test_clean_caption():
    assert clean_caption("  A Dog's ball,   in the  PARK . ") == ["a", "dog", "s", "ball", "in", "the", "park"]
    assert clean_caption("tri-colored dog!") == ["tri", "colored", "dog"]
    assert clean_caption("...") == []


def test_build_min_count_order_and_specials():
    tokens = [["b", "a"], ["a", "c"], ["a", "b"], ["z"]]
    vocab = Vocabulary.build(tokens, min_count=2)
    assert vocab.itos == list(SPECIALS) + ["a", "b"]
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    assert len(Vocabulary.build(tokens, min_count=1, max_size=6)) == 6
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])


def test_encode_decode_and_max_len():
    vocab = Vocabulary(list(SPECIALS) + ["a", "red", "circle"])
    ids = vocab.encode("A red, blue circle.")
    assert ids == [1, 4, 5, 3, 6, 2]
    assert vocab.decode(ids) == "a red <unk> circle"
    assert vocab.encode("a red blue circle", max_len=3) == [1, 4, 5, 2]
    assert vocab.decode([4, 5, 2, 6]) == "a red"     # stops at <end>
    assert vocab.decode([4, 0, 6]) == "a"            # and at <pad>
    assert Vocabulary.from_dict(vocab.to_dict()).itos == vocab.itos


def test_vocabulary_from_real_captions(real_data):
    from train.data.readers import by_split, load_dataset
    records = load_dataset(os.path.join(real_data, "flickr8k", "Flickr8k.token.txt"))
    train = by_split(records)["train"]
    tokens = [clean_caption(c) for r in train for c in r.captions]
    vocab = Vocabulary.build(tokens, min_count=5)
    assert 200 < len(vocab) < 400  # the 151-image excerpt at min count 5: 270 words
    assert vocab.itos[4] == "a"
    unk_rate = sum(vocab.stoi.get(w) is None for t in tokens for w in t) / float(sum(map(len, tokens)))
    assert unk_rate < 0.2  # (the whole Flickr8k train split: under 0.03)
