"""Tests for transforms/minhash.py: datasketch compatibility, hashing, banding, validation."""

import struct
import sys

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from datasketch.minhash import _fmix

from examples.make_demo_corpus import build
from winnow.transforms import minhash
from winnow.transforms.minhash import (
    MinHashConfig,
    band_keys,
    estimate_jaccard,
    fmix32,
    fmix64,
    minhash_signatures,
    optimal_bands_rows,
    permutation_params,
    shingle_hashes,
    signatures_from_hashes,
)
from winnow.transforms.text import char_shingles, normalize_text, word_shingles

EDGE_TEXTS = [
    "",
    "   ",
    "one",
    "Two  words",
    "exactly five words right here",
    "six words are in this text",
    "Straße ＦＵＬＬ-width ﬁne\tCafé\u00a0au lait \u2028 next line",
]


@pytest.fixture(scope="module")
def corpus_texts():
    raw, _ = build(60)
    return [r["text"] for r in raw[:40]] + EDGE_TEXTS


def _datasketch_signature(text, kind, num_perm, seed, scheme):
    shingles = word_shingles(text, 5) if kind == "word" else char_shingles(text, 5)
    sketch = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
    sketch.update_batch([s.encode("utf-8") for s in shingles])
    return sketch.hashvalues


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("kind", ["word", "char"])
def test_sha1_signatures_equal_datasketch(corpus_texts, scheme, kind):
    config = MinHashConfig(num_perm=64, seed=7, shingle_kind=kind, shingle_hash="sha1", permutation=scheme)
    params = permutation_params(64, 7, scheme)
    ours = minhash_signatures(corpus_texts, config, params)
    assert ours.shape == (len(corpus_texts), 64) and ours.dtype == np.uint32
    for text, signature in zip(corpus_texts, ours):
        expected = _datasketch_signature(text, kind, 64, 7, scheme)
        np.testing.assert_array_equal(signature.astype(np.uint64), expected.astype(np.uint64))


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_permutation_params_equal_datasketch(scheme):
    for seed in (0, 1, 12345):
        expected = np.asarray(MinHash(num_perm=32, seed=seed, scheme=scheme).permutations)
        np.testing.assert_array_equal(permutation_params(32, seed, scheme), expected)


def test_optimal_bands_rows_equal_datasketch():
    for num_perm in (16, 64, 128, 256):
        for threshold in (0.3, 0.5, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
            assert optimal_bands_rows(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)
    for weight in (0.2, 0.8):
        for threshold in (0.5, 0.8, 0.9):
            expected = _optimal_param(threshold, 128, 1 - weight, weight)
            assert optimal_bands_rows(threshold, 128, weight) == expected
    assert optimal_bands_rows(0.8, 128) == (9, 13)
    assert MinHashConfig(false_negative_weight=0.8).band_rows == (12, 10)


def test_fmix_hand_values():
    def fmix64_int(x):  # MurmurHash3 fmix64 on Python ints
        mask = (1 << 64) - 1
        x ^= x >> 33
        x = (x * 0xFF51AFD7ED558CCD) & mask
        x ^= x >> 33
        x = (x * 0xC4CEB9FE1A85EC53) & mask
        return x ^ (x >> 33)

    values = np.array([0, 1, 2**63 + 5, 2**64 - 1], np.uint64)
    assert fmix64(values).tolist() == [fmix64_int(int(v)) for v in values]
    assert fmix64(values)[0] == 0  # 0 is fmix's fixed point
    small = np.array([0, 1, 2**31, 2**32 - 1], np.uint32)
    np.testing.assert_array_equal(fmix32(small), _fmix(small.copy(), 32))


def test_mix64_word_hash_is_the_hash_of_the_shingle_string(corpus_texts):
    """Each document's mix64 hashes are exactly {hash(s) for s in word_shingles(doc)}."""
    hashes, counts = shingle_hashes(corpus_texts, 5, "word", "mix64")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for i, text in enumerate(corpus_texts):
        shingles = sorted(word_shingles(text, 5))
        per_shingle, ones = shingle_hashes(shingles, 5, "word", "mix64")
        assert ones.tolist() == [1] * len(shingles)
        assert set(hashes[bounds[i] : bounds[i + 1]].tolist()) == set(per_shingle.tolist())
        assert len(set(per_shingle.tolist())) == len(shingles)  # no collision inside a document


def test_mix64_char_shingle_counts(corpus_texts):
    hashes, counts = shingle_hashes(corpus_texts, 5, "char", "mix64")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    distinct = [len(set(hashes[bounds[i] : bounds[i + 1]].tolist())) for i in range(len(corpus_texts))]
    assert distinct == [len(char_shingles(t, 5)) for t in corpus_texts]


def test_mix64_depends_on_order_and_boundaries():
    hashes, counts = shingle_hashes(["a b", "b a", "ab", "a b c"], 2, "word", "mix64")
    assert counts.tolist() == [1, 1, 1, 2]
    # "a b", "b a", "ab", then "a b" and "b c": only the repeated "a b" shares a hash
    assert len(set(hashes.tolist())) == 4
    assert hashes[0] == hashes[3]


def test_normalized_equals_normalize_text(corpus_texts):
    every_space = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    texts = corpus_texts + [f"x{every_space}y{every_space}", every_space]
    assert minhash._normalized(texts) == [normalize_text(t) for t in texts]


def test_signatures_independent_of_batching_and_chunking(corpus_texts, monkeypatch):
    config = MinHashConfig(num_perm=32)
    params = permutation_params(32, 1, "affine32")
    together = minhash_signatures(corpus_texts, config, params)
    alone = np.vstack([minhash_signatures([t], config, params) for t in corpus_texts])
    monkeypatch.setattr(minhash, "CHUNK_ELEMENTS", 32 * 7)  # 7 shingles per chunk: documents cut
    chunked = minhash_signatures(corpus_texts, config, params)
    monkeypatch.setattr(minhash, "GROUP_CHARS", 3000)  # runs of one or two documents
    grouped = minhash_signatures(corpus_texts, config, params)
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, chunked)
    np.testing.assert_array_equal(together, grouped)
    assert list(minhash._text_groups(["ab", "c", "defg", "h"], 3)) == [(0, 2), (2, 3), (3, 4)]
    assert minhash_signatures([], config, params).shape == (0, 32)


def test_signatures_from_hashes_hand_worked():
    # affine32 with a = 1, b = 0 is pi(h) = fmix32(h): the signature is min fmix32 per document.
    params = np.array([[1, 3], [0, 5]], np.uint32)
    hashes = np.array([10, 20, 30], np.uint32)
    sig = signatures_from_hashes(hashes, np.array([2, 1]), params, "affine32")
    mixed = fmix32(hashes).astype(np.uint64)
    assert sig[:, 0].tolist() == [min(mixed[0], mixed[1]), mixed[2]]
    assert sig[:, 1].tolist() == [min((3 * m + 5) % 2**32 for m in mixed[:2]), (3 * mixed[2] + 5) % 2**32]


def test_signature_estimates_jaccard():
    words = [f"w{i}" for i in range(400)]
    base = " ".join(words)
    config = MinHashConfig(num_perm=256)
    params = permutation_params(256, 1, "affine32")
    for edits in (5, 20, 60):
        edited = list(words)
        for k in range(edits):
            edited[k * (400 // edits)] = f"x{k}"
        a, b = word_shingles(base, 5), word_shingles(" ".join(edited), 5)
        truth = len(a & b) / len(a | b)
        sig = minhash_signatures([base, " ".join(edited)], config, params)
        sigma = np.sqrt(truth * (1 - truth) / 256)
        assert abs(estimate_jaccard(sig[0], sig[1]) - truth) < 4 * sigma


def test_estimate_jaccard_hand_worked():
    assert estimate_jaccard(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75


def test_band_keys_hand_worked():
    sig = np.array([[1, 2, 3, 4, 5]], np.uint32)
    assert band_keys(sig, 2, 2) == [
        [b"\x00\x00" + struct.pack("<2I", 1, 2), b"\x00\x01" + struct.pack("<2I", 3, 4)]
    ]


def test_config_band_rows_and_validation():
    assert MinHashConfig().band_rows == (9, 13)
    assert MinHashConfig(bands=16, rows=8).band_rows == (16, 8)
    with pytest.raises(ValueError, match="threshold=1.5"):
        MinHashConfig(threshold=1.5)
    with pytest.raises(ValueError, match="set both or neither"):
        MinHashConfig(bands=4)
    with pytest.raises(ValueError, match="bands \\* rows = 20 \\* 8 = 160"):
        MinHashConfig(bands=20, rows=8)
    with pytest.raises(ValueError, match="shingle_kind='line'"):
        MinHashConfig(shingle_kind="line")
    with pytest.raises(ValueError, match="num_perm=0"):
        MinHashConfig(num_perm=0)
    with pytest.raises(TypeError, match="num_perm='128'"):
        MinHashConfig(num_perm="128")
    with pytest.raises(ValueError, match="false_negative_weight=1"):
        MinHashConfig(false_negative_weight=1)
    with pytest.raises(TypeError, match="verify=1"):
        MinHashConfig(verify=1)
