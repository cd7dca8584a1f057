"""MinHash signatures and LSH banding (Broder 1997; Leskovec, Rajaraman & Ullman, MMDS ch. 3).

A document is the set ``S`` of its shingles (word or character n-grams of the normalized text,
exactly the sets of ``text.word_shingles`` / ``text.char_shingles``). With ``P`` random
permutations ``pi_k`` of the 32-bit hash space, the signature is

    sig[k] = min_{s in S} pi_k(h(s)),   k = 0 .. P-1,

and ``P(sig_A[k] == sig_B[k]) = J(A, B) = |A & B| / |A | B|``, so the fraction of equal entries
estimates the Jaccard similarity. LSH cuts the first ``b * r`` entries into ``b`` bands of ``r``
rows; two documents become candidates when any band is equal, with probability
``1 - (1 - J**r)**b``. ``optimal_bands_rows`` chooses ``(b, r)`` for a threshold ``t`` as
datasketch's ``MinHashLSH`` does, minimizing

    (1 - w) * int_0^t (1 - (1 - s**r)**b) ds  +  w * int_t^1 (1 - s**r)**b ds

(false-positive area + false-negative area, weight ``w = false_negative_weight``: 0.8 here,
``RECALL_WEIGHT``, because every candidate is verified; datasketch's default is 0.5) over all ``b * r <= P``. Both integrands are polynomials of degree ``<= P``, so a
``P // 2 + 1``-point Gauss-Legendre rule integrates them exactly (datasketch calls
``scipy.integrate.quad`` per pair); all pairs are evaluated at once.
For t = 0.8, P = 128, w = 0.5 this gives b = 9, r = 13: pairs at J = 0.85 become candidates
with probability 0.69, at J = 0.9 with 0.93, at J = 0.7 with 0.08. When candidates are
verified (``dedup``), false positives cost little and w = 0.8 (b = 12, r = 10: 0.93 at J = 0.85,
0.29 at J = 0.7) trades them for recall.

Hash family (``shingle_hash``):

- ``"sha1"``: datasketch's ``sha1_hash32`` (first 4 bytes of SHA-1, little-endian) of each UTF-8
  shingle string. With the same seed and permutation scheme the signatures are bit-identical to
  ``datasketch.MinHash``; one hashlib call per shingle, so it is the slow path.
- ``"mix64"`` (default): no shingle strings are built. The normalized texts of a batch are
  joined and encoded once; a word of UTF-8 bytes ``c_0 .. c_{m-1}`` hashes to
  ``fmix64(sum_j (c_j + 1) * K_j)`` (multilinear hashing with fixed odd keys ``K_j``; all
  word sums come from one cumulative sum), a character to ``fmix64(code point ^ K)``, and an
  n-gram of token hashes ``t_0 .. t_{m-1}`` to ``fmix64(sum_k t_k * K_k)``, truncated to 32 bits.
  ``fmix64`` is MurmurHash3's 64-bit finalizer (a bijection); sums wrap mod 2**64. The shingle
  *sets* are exactly those of ``text.word_shingles`` / ``char_shingles`` (tested); only the
  hash of a shingle differs from ``"sha1"``, so the Jaccard estimates have the same law.
  Its throughput against datasketch's ``MinHash.bulk`` is in ``benchmarks/RESULTS.md``.

Permutation scheme (``permutation``), both as in datasketch, drawn from
``np.random.RandomState(seed)`` so that every worker derives the same functions:

- ``"affine32"`` (datasketch >= 2.0 default): ``pi(h) = a * fmix32(h) + b mod 2**32``, ``a`` odd.
- ``"legacy"`` (datasketch < 2.0): ``pi(h) = ((a * h + b) mod 2**64 mod (2**61 - 1)) & (2**32 - 1)``;
  numpy's wrapping uint64 product is part of that definition, reproduced as is.

Signatures are computed per batch: one ``(P, n_shingles)`` uint32 product and one
``np.minimum.reduceat`` per cache-sized chunk of shingles; the only per-string Python work is
the Unicode normalization of each document (and, for ``"sha1"``, the hash of each shingle).

Pure numpy/stdlib; the Beam stages that use them live in ``transforms/dedup.py``.
"""

import dataclasses
import hashlib

import numpy as np

from winnow.transforms.text import char_shingles, normalize_text, splitmix64, word_shingles
from winnow.transforms.validation import check_bool, check_choice, check_int, check_number

SHINGLE_KINDS = ("word", "char")
SHINGLE_HASHES = ("mix64", "sha1")
PERMUTATIONS = ("affine32", "legacy")

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
MAX_HASH32 = np.uint64((1 << 32) - 1)
# Entries of the (num_perm, n_shingles) permutation product computed at once: keeps the
# temporary cache-sized (4 MB of uint32) whatever the batch and document lengths.
CHUNK_ELEMENTS = 1 << 20
# Characters of text hashed at once (the per-byte int64 temporaries are ~8x this in bytes).
GROUP_CHARS = 1 << 16

MAX_SHINGLE = 64
# Weight of missed pairs when choosing bands x rows (datasketch's default is 0.5): winnow verifies
# every candidate link, so a false candidate costs one signature comparison, and recall matters more.
RECALL_WEIGHT = 0.8
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
_SPACE, _NEWLINE = 32, 10
# Fixed salts of the "mix64" hash; changing one changes every "mix64" signature.
_POSITION_SALT = np.uint64(0x9E3779B97F4A7C15)
_CHAR_SALT = np.uint64(0x6E789E6AA1B965F4)
_BAND_SALT = np.uint64(0x3C6EF372FE94F82B)
_BAND_CHAIN = np.uint64(0xA54FF53A5F1D36F1)


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
    """Near-duplicate detection with MinHash LSH.

    Attributes:
        num_perm: signature length P (number of permutations), 1 .. 4096.
        threshold: Jaccard similarity at or above which two documents are near-duplicates, (0, 1).
        shingle: n of the word (or character) n-grams, 1 .. MAX_SHINGLE.
        shingle_kind: ``"word"`` or ``"char"``.
        bands, rows: LSH banding; both None (default) = ``optimal_bands_rows(threshold,
            num_perm, false_negative_weight)``, else both set with ``bands * rows <= num_perm``.
        false_negative_weight: weight w of the false-negative area in that optimum, (0, 1);
            ``RECALL_WEIGHT`` (datasketch: 0.5).
        seed: seed of the permutations; every worker must use the same one.
        verify: keep an LSH link (member -> its bucket's smallest id) only if the two
            signatures' estimated Jaccard is ``>= threshold``; else every collision links.
        max_cluster_size: a near-duplicate component with more members (1: every component) is split by the guard
            (``dedup.split_component``): every member is checked against a representative, on
            the exact Jaccard of their shingle sets (the signatures' estimate for indexed ones).
        shingle_hash: ``"mix64"`` (vectorized, default) or ``"sha1"`` (datasketch-identical).
        permutation: ``"affine32"`` (datasketch >= 2.0) or ``"legacy"`` (datasketch < 2.0).
        cc_rounds: large-star/small-star rounds unrolled for the connected components, 1 .. 64.
    """

    num_perm: int = 128
    threshold: float = 0.8
    shingle: int = 5
    shingle_kind: str = "word"
    bands: int | None = None
    rows: int | None = None
    false_negative_weight: float = RECALL_WEIGHT
    seed: int = 1
    verify: bool = True
    max_cluster_size: int = 2
    shingle_hash: str = "mix64"
    permutation: str = "affine32"
    cc_rounds: int = 12

    def __post_init__(self):
        check_int("num_perm", self.num_perm, 1, 4096)
        check_number("threshold", self.threshold, 0.0, 1.0, open_low=True, open_high=True)
        check_int("shingle", self.shingle, 1, MAX_SHINGLE)
        check_choice("shingle_kind", self.shingle_kind, SHINGLE_KINDS)
        check_choice("shingle_hash", self.shingle_hash, SHINGLE_HASHES)
        check_choice("permutation", self.permutation, PERMUTATIONS)
        check_int("seed", self.seed, 0, 2**32 - 1)
        check_int("max_cluster_size", self.max_cluster_size, 1)
        check_int("cc_rounds", self.cc_rounds, 1, 64)
        check_number("false_negative_weight", self.false_negative_weight, 0.0, 1.0, open_low=True, open_high=True)
        check_bool("verify", self.verify)
        if (self.bands is None) != (self.rows is None):
            raise ValueError(f"bands={self.bands!r}, rows={self.rows!r}; set both or neither")
        if self.bands is not None:
            check_int("bands", self.bands, 1, self.num_perm)
            check_int("rows", self.rows, 1, self.num_perm)
            if self.bands * self.rows > self.num_perm:
                raise ValueError(
                    f"bands * rows = {self.bands} * {self.rows} = {self.bands * self.rows}; "
                    f"expected <= num_perm={self.num_perm}"
                )

    @property
    def band_rows(self) -> tuple[int, int]:
        """(bands, rows): the override, or the optimum for (threshold, num_perm, weight)."""
        if self.bands is not None:
            return self.bands, self.rows
        return optimal_bands_rows(self.threshold, self.num_perm, self.false_negative_weight)


def optimal_bands_rows(threshold: float, num_perm: int, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(b, r) minimizing (1 - w) * false-positive area + w * false-negative area (module doc).

    Equal to ``datasketch.lsh._optimal_param(threshold, num_perm, 1 - w, w)``: same grid
    (b = 1 .. P, r = 1 .. P // b), same order, first minimum wins. Expects validated input.
    """
    pairs = np.array(
        [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], np.float64
    )
    bands, rows = pairs[:, :1], pairs[:, 1:]
    # Gauss-Legendre with n nodes is exact for polynomials of degree <= 2n - 1 >= b * r.
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    s_low = threshold * (x + 1.0) / 2.0  # nodes on [0, t]
    s_high = threshold + (1.0 - threshold) * (x + 1.0) / 2.0  # nodes on [t, 1]
    false_pos = threshold / 2.0 * ((1.0 - (1.0 - s_low**rows) ** bands) @ w)
    false_neg = (1.0 - threshold) / 2.0 * (((1.0 - s_high**rows) ** bands) @ w)
    best = int(np.argmin((1.0 - false_negative_weight) * false_pos + false_negative_weight * false_neg))
    return int(pairs[best, 0]), int(pairs[best, 1])


def permutation_params(num_perm: int, seed: int, permutation: str) -> np.ndarray:
    """(2, num_perm) parameters (a, b) drawn exactly as ``datasketch.MinHash`` draws them.

    uint32 for ``"affine32"`` (a odd), uint64 for ``"legacy"`` (1 <= a < p, 0 <= b < p).
    """
    gen = np.random.RandomState(seed)
    if permutation == "legacy":
        return np.array(
            [
                (gen.randint(1, MERSENNE_PRIME, dtype=np.uint64), gen.randint(0, MERSENNE_PRIME, dtype=np.uint64))
                for _ in range(num_perm)
            ],
            dtype=np.uint64,
        ).T
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, a bijection on uint64 (new array; wraps mod 2**64)."""
    shift, m1, m2 = _FMIX64
    x = x ^ (x >> shift)
    x *= m1
    x ^= x >> shift
    x *= m2
    x ^= x >> shift
    return x


def fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer on uint32, as datasketch's ``_fmix(h, 32)``."""
    s1, m1, s2, m2 = _FMIX32
    x = x ^ (x >> s1)
    x *= m1
    x ^= x >> s2
    x *= m2
    x ^= x >> s1
    return x


def _position_keys(length: int) -> np.ndarray:
    """(length,) odd uint64 keys, one per position: fmix64(j ^ _POSITION_SALT) | 1."""
    return fmix64(np.arange(length, dtype=np.uint64) ^ _POSITION_SALT) | np.uint64(1)


def _word_tokens(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes (W,) uint64 and words per document (D,) int64 of normalized texts.

    Words are the ``" "``-separated fields, as ``text.split(" ")`` (one empty word for an empty
    text). The texts are joined with ``"\\n"``, which a normalized text cannot contain, and
    encoded as UTF-8 once; a word of bytes ``c_0 .. c_{m-1}`` hashes to
    ``fmix64(sum_j (c_j + 1) * key_j mod 2**64)`` (multilinear hashing), with the sums taken
    from one cumulative sum.
    """
    data = np.frombuffer("\n".join(texts).encode("utf-8", "surrogatepass"), np.uint8)
    cuts = np.flatnonzero((data == _SPACE) | (data == _NEWLINE))
    word_start = np.concatenate([[0], cuts + 1])
    word_end = np.concatenate([cuts, [len(data)]])
    doc_of_word = np.concatenate([[0], np.cumsum(data[cuts] == _NEWLINE)])
    # Offset of each byte inside its word: index minus the start of the word it is in.
    last_start = np.zeros(len(data), np.int64)
    inside = word_start[word_start < len(data)]
    last_start[inside] = inside
    np.maximum.accumulate(last_start, out=last_start)
    offset = np.arange(len(data), dtype=np.int64) - last_start
    keys = _position_keys(int(offset.max(initial=0)) + 1)
    prefix = np.zeros(len(data) + 1, np.uint64)
    np.cumsum((data + np.uint64(1)) * keys[offset], out=prefix[1:])
    words = fmix64(prefix[word_end] - prefix[word_start])
    return words, np.bincount(doc_of_word, minlength=len(texts)).astype(np.int64)


def _ngram_hashes(tokens: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every token n-gram, and n-grams per document.

    An n-gram ``t_0 .. t_{m-1}`` hashes to ``fmix64(sum_k t_k * key_k mod 2**64)``, truncated.

    Args:
        tokens: (T,) uint64 token hashes, documents concatenated.
        counts: (D,) int64 tokens per document.
        n: n-gram length; a document with fewer than n tokens has one n-gram, all its tokens.

    Returns:
        ((S,) uint32 hashes, (D,) int64 n-grams per document, each >= 1).
    """
    per_doc = np.maximum(counts - n + 1, 1)
    token_start = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=token_start[1:])
    doc = np.repeat(np.arange(len(counts)), per_doc)
    first = np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
    position = np.arange(len(doc), dtype=np.int64) - first + token_start[doc]
    width = np.minimum(counts, n)[doc]
    padded = np.concatenate([tokens, np.zeros(n, np.uint64)])
    keys = _position_keys(n)
    total = np.zeros(len(doc), np.uint64)
    for k in range(n):  # n vector passes, not a loop over shingles
        term = padded[position + k] * keys[k]
        term[width <= k] = 0
        total += term
    return fmix64(total).astype(np.uint32), per_doc


def shingle_hashes(texts: list[str], shingle: int, shingle_kind: str, shingle_hash: str, normalized: list[str] | None = None):
    """32-bit hashes of each document's shingles, concatenated.

    Args:
        texts: D raw texts (normalized here with ``text.normalize_text`` defaults).
        shingle, shingle_kind, shingle_hash: see ``MinHashConfig``; expects validated values.
        normalized: the texts' ``normalize_text`` (defaults), when the caller has them already.

    Returns:
        ((S,) uint32 hashes, (D,) int64 hashes per document, each >= 1). ``"sha1"`` hashes each
        distinct shingle once; ``"mix64"`` may repeat a hash when a shingle repeats, which
        leaves the minimum, hence the signature, unchanged.
    """
    if not texts:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    if shingle_hash == "sha1":
        shingles = word_shingles if shingle_kind == "word" else char_shingles
        sets = [shingles(t, shingle) for t in texts]
        digests = b"".join(
            hashlib.sha1(s.encode("utf-8", "surrogatepass")).digest()[:4] for one in sets for s in one
        )
        return np.frombuffer(digests, "<u4"), np.fromiter(map(len, sets), np.int64, len(sets))
    normalized = normalized if normalized is not None else [normalize_text(t) for t in texts]
    if shingle_kind == "word":
        tokens, counts = _word_tokens(normalized)
    else:
        # utf-32 is exactly one 4-byte unit per code point, as len() counts them.
        points = np.frombuffer("".join(normalized).encode("utf-32-le", "surrogatepass"), "<u4")
        tokens = fmix64(points.astype(np.uint64) ^ _CHAR_SALT)
        counts = np.fromiter(map(len, normalized), np.int64, len(normalized))
    return _ngram_hashes(tokens, counts, shingle)


def _permute(hashes: np.ndarray, params: np.ndarray, permutation: str) -> np.ndarray:
    """(P, len(hashes)) uint32 permuted hashes (permutations on rows: reduceat runs along rows)."""
    a, b = params[:, :, None]
    if permutation == "legacy":
        out = hashes.astype(np.uint64) * a  # wraps mod 2**64, exactly as datasketch's product
        out += b
        out %= MERSENNE_PRIME
        out &= MAX_HASH32
        return out.astype(np.uint32)
    out = fmix32(hashes) * a
    out += b
    return out


def signatures_from_hashes(
    hashes: np.ndarray, counts: np.ndarray, params: np.ndarray, permutation: str
) -> np.ndarray:
    """(D, P) uint32 MinHash signatures: per document, the minimum of its permuted hashes.

    Args:
        hashes: (S,) uint32 shingle hashes, documents concatenated.
        counts: (D,) int64 hashes per document, each >= 1.
        params: (2, P) from ``permutation_params``.
        permutation: the scheme ``params`` were drawn for.
    """
    num_perm = params.shape[1]
    sig = np.full((len(counts), num_perm), np.iinfo(np.uint32).max, np.uint32)
    doc_of = np.repeat(np.arange(len(counts)), counts)
    step = max(1, CHUNK_ELEMENTS // num_perm)
    for lo in range(0, len(hashes), step):  # a chunk may cut a document: merge by minimum
        docs = doc_of[lo : lo + step]
        segment_start = np.concatenate([[0], np.flatnonzero(np.diff(docs)) + 1])
        partial = np.minimum.reduceat(_permute(hashes[lo : lo + step], params, permutation), segment_start, axis=1)
        rows = docs[segment_start]  # distinct within a chunk
        sig[rows] = np.minimum(sig[rows], partial.T)
    return sig


def _text_groups(texts: list[str], limit: int):
    """(start, stop) of consecutive runs of texts with at most ``limit`` characters in total
    (a longer text is a run of its own)."""
    start, size = 0, 0
    for i, text in enumerate(texts):
        if size and size + len(text) > limit:
            yield start, i
            start, size = i, 0
        size += len(text)
    if start < len(texts):
        yield start, len(texts)


def minhash_signatures(texts: list[str], config: MinHashConfig, params: np.ndarray, normalized: list[str] | None = None) -> np.ndarray:
    """(len(texts), num_perm) uint32 signatures of raw texts; ``params`` from ``permutation_params``.

    ``normalized``: the texts' ``text.normalize_text`` (defaults), when the caller has them already.

    Texts are hashed in runs of about ``GROUP_CHARS`` characters, which keeps the per-byte
    temporaries cache-sized and bounded whatever the batch size.
    """
    sig = np.empty((len(texts), config.num_perm), np.uint32)
    for start, stop in _text_groups(texts, GROUP_CHARS):
        part = None if normalized is None else normalized[start:stop]
        hashes, counts = shingle_hashes(texts[start:stop], config.shingle, config.shingle_kind, config.shingle_hash, part)
        sig[start:stop] = signatures_from_hashes(hashes, counts, params, config.permutation)
    return sig


def shingle_sets(texts: list[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """The shingle sets whose MinHash ``minhash_signatures`` computes, for exact Jaccard (``dedup.GuardSimilarity``).

    Returns:
        ((S,) uint32 hashes: each document's shingle hashes sorted and unique, documents
        concatenated in order; (D,) int64 set sizes, each >= 1). The sets of "mix64" hashes are
        the documents' shingle sets up to 32-bit hash collisions (about S**2 / 2**33 per document).
    """
    parts, sizes = [], []
    for start, stop in _text_groups(texts, GROUP_CHARS):  # cache-sized runs, as minhash_signatures
        hashes, counts = shingle_hashes(texts[start:stop], config.shingle, config.shingle_kind, config.shingle_hash)
        keyed = np.unique(np.repeat(np.arange(len(counts), dtype=np.uint64), counts) << np.uint64(32) | hashes.astype(np.uint64))
        parts.append((keyed & MAX_HASH32).astype(np.uint32))
        sizes.append(np.bincount((keyed >> np.uint64(32)).astype(np.int64), minlength=len(counts)))
    if not parts:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    return np.concatenate(parts), np.concatenate(sizes).astype(np.int64)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(D, bands) uint64 LSH bucket keys: a 64-bit hash of the band's index and its ``rows`` values.

    Band j of a document is entries ``j * rows .. (j + 1) * rows - 1`` of its signature (the first
    ``bands * rows`` entries, as datasketch uses them). Two documents share a bucket when a band's
    key is equal; a key collision between unequal bands (probability ~2**-64 per pair) only adds a
    candidate link, which verification removes.
    """
    signatures = np.asarray(signatures, dtype=np.uint32)
    keys = np.empty((signatures.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        key = splitmix64(np.full(signatures.shape[0], np.uint64(band) ^ _BAND_SALT, dtype=np.uint64))
        for column in range(band * rows, (band + 1) * rows):
            key = splitmix64(key * _BAND_CHAIN + signatures[:, column].astype(np.uint64))
        keys[:, band] = key
    return keys


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature entries along the last axis: an unbiased estimate of J(A, B),
    std sqrt(J(1-J)/P). ``a``, ``b``: (P,) or (n, P) uint32 signatures; returns float64 of shape (n,) or ()."""
    return np.count_nonzero(np.asarray(a) == np.asarray(b), axis=-1) / np.asarray(a).shape[-1]
