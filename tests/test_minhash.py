"""Tests for transforms/minhash.py: datasketch compatibility, hashing, banding, validation."""

import re

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
from winnow.transforms.text import char_shingles, normalize_text, splitmix64, word_shingles

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
def corpus():
    """The demo corpus's raw records with 60 code chunks (~330 records with planted near copies)."""
    return build(60)[0]


@pytest.fixture(scope="module")
def corpus_texts(corpus):
    return [r["text"] for r in corpus[:40]] + EDGE_TEXTS


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


@pytest.mark.parametrize("kind", ["word", "char"])
def test_precomputed_normalized_texts_give_the_same_signatures(corpus_texts, kind, monkeypatch):
    """``normalized=`` is only a shortcut: the hashes and signatures equal those of the raw texts."""
    config = MinHashConfig(num_perm=32, shingle_kind=kind)
    params = permutation_params(32, 1, "affine32")
    normalized = [normalize_text(t) for t in corpus_texts]
    expected = shingle_hashes(corpus_texts, 5, kind, "mix64")
    got = shingle_hashes(corpus_texts, 5, kind, "mix64", normalized)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    monkeypatch.setattr(minhash, "GROUP_CHARS", 3000)  # several runs: each gets its slice of `normalized`
    np.testing.assert_array_equal(
        minhash_signatures(corpus_texts, config, params, normalized), minhash_signatures(corpus_texts, config, params)
    )


def test_signatures_depend_on_the_normalized_text_only():
    config = MinHashConfig(num_perm=16)
    params = permutation_params(16, 1, "affine32")
    plain = minhash_signatures(["one two three four five six"], config, params)
    messy = minhash_signatures(["ONE  two\tthree ＦＯＵＲ five six "], config, params)  # same after normalize_text
    np.testing.assert_array_equal(plain, messy)
    other = minhash_signatures(["x"], config, params, normalized=["one two three four five six"])
    np.testing.assert_array_equal(other, plain)  # the caller's normalized text is used as given


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


@pytest.mark.parametrize("kind,shingle_hash", [("word", "mix64"), ("char", "mix64"), ("word", "sha1")])
def test_shingle_sets_are_the_sets_the_signatures_are_of(corpus_texts, kind, shingle_hash, monkeypatch):
    config = MinHashConfig(num_perm=32, shingle_kind=kind, shingle_hash=shingle_hash)
    params = permutation_params(32, 1, "affine32")
    monkeypatch.setattr(minhash, "GROUP_CHARS", 3000)  # several runs of texts
    hashes, sizes = minhash.shingle_sets(corpus_texts, config)
    shingles = word_shingles if kind == "word" else char_shingles
    assert sizes.tolist() == [len(shingles(t, 5)) for t in corpus_texts]  # one hash per distinct shingle
    starts = np.cumsum(sizes) - sizes
    assert all((np.diff(hashes[s:s + n].astype(np.int64)) > 0).all() for s, n in zip(starts, sizes))  # sorted, unique
    np.testing.assert_array_equal(signatures_from_hashes(hashes, sizes, params, "affine32"), minhash_signatures(corpus_texts, config, params))
    assert [len(part) for part in minhash.shingle_sets([], config)] == [0, 0]


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


def test_estimate_jaccard_hand_worked_and_vectorised_over_the_last_axis():
    one = estimate_jaccard(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4]))
    assert one == 0.75 and np.shape(one) == ()
    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [1, 1, 1, 1]], np.uint32)
    b = np.array([[1, 2, 3, 4], [5, 0, 0, 0], [2, 2, 2, 2]], np.uint32)
    pairs = estimate_jaccard(a, b)
    assert pairs.dtype == np.float64 and pairs.tolist() == [1.0, 0.25, 0.0]
    assert estimate_jaccard(a, a[1]).tolist() == [0.0, 1.0, 0.0]  # one signature against many (broadcast)


def _band_key(rows: list[int], band: int) -> int:
    """The docstring's band hash: start at splitmix64(band ^ salt), then chain each row value."""
    key = splitmix64(np.array([np.uint64(band) ^ minhash._BAND_SALT], np.uint64))
    for value in rows:
        key = splitmix64(key * minhash._BAND_CHAIN + np.uint64(value))
    return int(key[0])


def test_band_keys_hand_worked():
    sig = np.array([[1, 2, 3, 4, 5], [1, 2, 9, 4, 5], [3, 4, 1, 2, 7]], np.uint32)
    keys = band_keys(sig, 2, 2)  # bands (1, 2) and (3, 4); the fifth entry is unused
    assert keys.shape == (3, 2) and keys.dtype == np.uint64
    assert keys[0].tolist() == [_band_key([1, 2], 0), _band_key([3, 4], 1)]
    assert keys[1, 0] == keys[0, 0] and keys[1, 1] != keys[0, 1]  # equal band 0 -> one bucket; band 1 differs
    # the same values in another band get another key: buckets are per band
    assert keys[2, 0] == _band_key([3, 4], 0) != keys[0, 1]
    assert keys[2, 1] != keys[0, 0]
    np.testing.assert_array_equal(band_keys(sig[:, :4], 2, 2), keys)  # only the first bands * rows entries count
    assert band_keys(np.zeros((0, 8), np.uint32), 4, 2).shape == (0, 4)


def test_band_keys_make_near_copies_candidates_and_unrelated_texts_not(corpus):
    """Default (b, r) = (12, 10): a pair at Jaccard ~0.9 shares a band with probability
    1 - (1 - 0.9**10)**12 = 0.9999; unrelated texts (Jaccard ~0) never do."""
    raw = corpus
    by_id = {r["id"]: r for r in raw}
    pairs = [(r["text"], by_id[r["copy_of"]]["text"]) for r in raw if r["variant"] == "near_copy"]
    originals = [r["text"] for r in raw if r["variant"] == "original"][:40]
    config = MinHashConfig()
    bands, rows = config.band_rows
    params = permutation_params(config.num_perm, config.seed, config.permutation)
    a = band_keys(minhash_signatures([p[0] for p in pairs], config, params), bands, rows)
    b = band_keys(minhash_signatures([p[1] for p in pairs], config, params), bands, rows)
    assert len(pairs) > 30 and (a == b).any(axis=1).mean() >= 0.9
    unrelated = band_keys(minhash_signatures(originals, config, params), bands, rows)
    assert not any((unrelated[i] == unrelated[j]).any() for i in range(40) for j in range(i + 1, 40))


def test_config_defaults_band_rows_and_validation():
    config = MinHashConfig()
    assert config.false_negative_weight == minhash.RECALL_WEIGHT == 0.8
    assert config.band_rows == (12, 10)  # datasketch's default weight 0.5 gives (9, 13)
    assert MinHashConfig(false_negative_weight=0.5).band_rows == (9, 13)
    assert config.max_cluster_size == 2 and config.shingle_hash == "mix64" and config.permutation == "affine32"
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
    with pytest.raises(ValueError, match=re.escape("num_perm='128'; expected an int in [1, 4096]")):
        MinHashConfig(num_perm="128")
    with pytest.raises(ValueError, match="false_negative_weight=1"):
        MinHashConfig(false_negative_weight=1)
    with pytest.raises(ValueError, match="max_cluster_size=0"):
        MinHashConfig(max_cluster_size=0)
    with pytest.raises(ValueError, match="cc_rounds=65"):
        MinHashConfig(cc_rounds=65)
    with pytest.raises(ValueError, match="seed=-1"):
        MinHashConfig(seed=-1)
    with pytest.raises(TypeError, match="verify=1"):
        MinHashConfig(verify=1)
