"""Tests for transforms/text.py: normalization and shingles, and the vectorised hashing (``TokenHasher``,
``NgramHashes`` and its per-order ``starts``, ``hash_to_range``).

DSIR's tests (tests/test_dsir.py) check the tokens against the regex and the reference's n-gram
counts through ``dsir.NgramHasher``; these check the hasher's own contract.
"""

import re
import sys

import numpy as np
import pytest

from winnow.transforms import text
from winnow.transforms.text import (
    NgramHashes,
    TokenHasher,
    char_shingles,
    hash_to_range,
    normalize_text,
    word_shingles,
    wordpunct_tokens,
)

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


def test_hash_to_range_hand_worked():
    # (h >> 32) * size >> 32: the top 32 bits of h scaled to [0, size)
    hashes = np.array([0, 1 << 63, (1 << 62) + 12345, (3 << 62)], dtype=np.uint64)
    assert hash_to_range(hashes, 4).tolist() == [0, 2, 1, 3]
    assert hash_to_range(hashes, 1).tolist() == [0, 0, 0, 0]
    assert hash_to_range(hashes, 4).dtype == np.int64


# --- NgramHashes.starts and .orders ----------------------------------------------------------


def test_starts_delimit_each_order_unigrams_first():
    grams = TokenHasher().ngram_hashes(TEXTS, max_n=3)  # 10 tokens: 10 unigrams, 5 + 2 bigrams, 4 + 1 trigrams
    assert grams.starts == {1: (0, 10), 2: (10, 17), 3: (17, 22)}
    assert len(grams.hash) == len(grams.doc) == 22
    alone = {k: TokenHasher().ngram_hashes(TEXTS, max_n=k, min_n=k) for k in (1, 2, 3)}
    for k, (first, stop) in grams.starts.items():
        np.testing.assert_array_equal(grams.hash[first:stop], alone[k].hash)
        np.testing.assert_array_equal(grams.doc[first:stop], alone[k].doc)


def test_starts_with_min_n_and_with_orders_longer_than_every_text():
    grams = TokenHasher().ngram_hashes(["a b c"], max_n=3, min_n=2)
    assert grams.starts == {2: (0, 2), 3: (2, 3)}
    short = TokenHasher().ngram_hashes(["a"], max_n=3)
    assert short.starts == {1: (0, 1), 2: (1, 1), 3: (1, 1)}  # empty orders keep their (empty) range
    empty = TokenHasher().ngram_hashes([], max_n=2)
    assert empty.starts == {1: (0, 0), 2: (0, 0)}
    assert empty.doc.dtype == np.int64 and empty.hash.dtype == np.uint64 and empty.n_tokens.shape == (0,)


@pytest.mark.parametrize("min_n, max_n", [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (1, 3)])
def test_orders_equals_hashing_only_those_orders(min_n, max_n):
    hasher = TokenHasher()
    every = hasher.ngram_hashes(TEXTS, max_n=3)
    picked = every.orders(min_n, max_n)
    direct = hasher.ngram_hashes(TEXTS, max_n=max_n, min_n=min_n)
    assert isinstance(picked, NgramHashes)
    np.testing.assert_array_equal(picked.hash, direct.hash)
    np.testing.assert_array_equal(picked.doc, direct.doc)
    np.testing.assert_array_equal(picked.n_tokens, every.n_tokens)
    assert picked.starts == direct.starts


def test_orders_needs_both_orders_present():
    grams = TokenHasher().ngram_hashes(TEXTS, max_n=2)
    with pytest.raises(KeyError):
        grams.orders(1, 3)


# --- normalization and shingles ----------------------------------------------------------


def test_normalize_text_nfkc_casefold_and_whitespace():
    messy = "  Straße ＦＵＬＬ ﬁne\tCafé\u00a0au\u2028x  "
    assert normalize_text(messy) == "strasse full fine café au x"
    assert normalize_text(messy, nfkc=False) == "strasse ｆｕｌｌ fine café au x"  # casefold expands the ligature too
    assert normalize_text(messy, casefold=False) == "Straße FULL fine Café au x"
    assert normalize_text("A \n B", collapse_whitespace=False) == "a \n b"
    assert normalize_text("") == ""


def test_whitespace_collapse_equals_the_regex_on_every_whitespace_code_point():
    """``str.split()`` stands in for ``re.sub(r"\\s+", " ")``: the two must split on the same code points."""
    every_space = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    regex_space = "".join(chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch(r"\s", chr(c)))
    assert every_space == regex_space and len(every_space) == 29
    texts = [f"x{every_space}y{every_space}", every_space, f"a{chr(0x1c)}b\u3000c"]
    for t in texts:
        assert normalize_text(t, nfkc=False, casefold=False) == re.sub(r"\s+", " ", t).strip()


def test_word_and_char_shingles():
    assert word_shingles("The cat SAT on", 2) == {"the cat", "cat sat", "sat on"}
    assert word_shingles("one two", 3) == {"one two"}  # shorter than n: one shingle, the whole text
    assert word_shingles("", 2) == {""}
    assert char_shingles("AbcD", 3) == {"abc", "bcd"}
    assert char_shingles("Ab", 5) == {"ab"}
    assert char_shingles("a  a", 2) == {"a ", " a"}  # whitespace collapsed first


def test_wordpunct_tokens_are_lowercased_word_and_punctuation_runs():
    assert wordpunct_tokens("Hello, World!!! x_y--z") == ["hello", ",", "world", "!!!", "x_y", "--", "z"]
    assert text.TokenHasher().count_tokens(["Hello, World!!! x_y--z", "", "  "]).tolist() == [7, 0, 0]
