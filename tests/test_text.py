"""Tests for transforms/text.py's vectorised hashing (``TokenHasher``, ``hash_to_range``).

DSIR's tests (tests/test_dsir.py) check the tokens against the regex and the reference's n-gram
counts through ``dsir.NgramHasher``; these check the hasher's own contract.
"""

import numpy as np

from winnow.transforms.text import TokenHasher, hash_to_range, wordpunct_tokens

TEXTS = ["The cat, the hat.", "", "hat cat the", "one"]


def _grams_of(grams, doc: int) -> list[int]:
    return sorted(grams.hash[grams.doc == doc].tolist())


def test_ngram_hashes_counts_every_kgram_within_a_document():
    grams = TokenHasher().ngram_hashes(TEXTS, max_n=3)
    tokens = [len(wordpunct_tokens(t)) for t in TEXTS]  # 6, 0, 3, 1
    assert grams.n_tokens.tolist() == tokens
    per_doc = np.bincount(grams.doc, minlength=len(TEXTS)).tolist()
    assert per_doc == [sum(max(t - k + 1, 0) for k in (1, 2, 3)) for t in tokens]  # no k-gram spans two documents


def test_a_token_hashes_alike_in_any_batch_and_case():
    hasher = TokenHasher()
    together = hasher.ngram_hashes(TEXTS, max_n=1)
    alone = {token: int(hasher.ngram_hashes([token], max_n=1).hash[0]) for token in ("the", "cat", "hat", ",", ".")}
    assert together.hash[together.doc == 0].tolist() == [alone[t] for t in ("the", "cat", ",", "the", "hat", ".")]
    assert together.hash[together.doc == 2].tolist() == [alone[t] for t in ("hat", "cat", "the")]


def test_min_n_keeps_only_the_longer_ngrams_and_their_hashes_do_not_change():
    hasher = TokenHasher()
    both = hasher.ngram_hashes(TEXTS, max_n=2)
    bigrams = hasher.ngram_hashes(TEXTS, max_n=2, min_n=2)
    unigrams = hasher.ngram_hashes(TEXTS, max_n=1)
    for doc in range(len(TEXTS)):
        assert sorted(_grams_of(unigrams, doc) + _grams_of(bigrams, doc)) == _grams_of(both, doc)
    assert len(bigrams.hash) == 5 + 0 + 2 + 0
    assert bigrams.n_tokens.tolist() == unigrams.n_tokens.tolist()
    assert len(hasher.ngram_hashes(["a"], max_n=3, min_n=3).hash) == 0


def test_word_order_matters_to_a_bigram():
    hasher = TokenHasher()
    ab, ba = (hasher.ngram_hashes([t], max_n=2, min_n=2).hash[0] for t in ("a b", "b a"))
    assert ab != ba


def test_hash_to_range_spreads_hashes_evenly_over_the_range():
    hashes = TokenHasher().ngram_hashes([" ".join(f"w{i}" for i in range(20_000))], max_n=1).hash
    buckets = hash_to_range(hashes, 10)
    assert buckets.min() >= 0 and buckets.max() <= 9
    assert np.all(np.abs(np.bincount(buckets, minlength=10) - 2_000) < 200)  # ~4.5 sd of a binomial(20000, 0.1)
    extremes = np.array([0, 2**64 - 1], dtype=np.uint64)
    assert hash_to_range(extremes, 2**32 - 1).tolist() == [0, 2**32 - 2]
