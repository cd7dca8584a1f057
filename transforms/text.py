"""Text normalization and tokenization shared by every method (DSIR, MinHash, embeddings).

One module so that a pipeline tokenizes a document the same way everywhere, and can tokenize it
once. Stdlib and numpy; no Beam.

- ``wordpunct_tokens``: lower-cased runs of word characters or of punctuation, the pattern
  ``\\w+|[^\\w\\s]+`` of NLTK's ``WordPunctTokenizer`` (the DSIR reference's tokenizer), with
  Python's ``re``. NLTK 3.10 compiles it with the ``regex`` engine, whose ``\\w`` also matches
  combining marks, so on text with those (U+0301, Indic vowel signs) the two tokenizations differ.
- ``TokenHasher``: the same tokens, found and hashed for a whole batch at once with numpy (no
  Python work per token), and 64-bit hashes of their n-grams; DSIR buckets and the embeddings'
  hashed features both come from it (``hash_to_range``).
- ``normalize_text``: Unicode NFKC, case folding and whitespace collapsing, the key of exact
  deduplication; each step can be switched off.
- ``word_shingles`` / ``char_shingles``: the sets MinHash estimates Jaccard similarity on.
"""

import functools
import re
import unicodedata
from typing import NamedTuple

import numpy as np

WORDPUNCT_PATTERN = re.compile(r"\w+|[^\w\s]+")
CHUNK_CODE_POINTS = 1 << 20  # TokenHasher works on at most this many code points at once

_WHITESPACE, _WORD, _OTHER = 0, 1, 2
_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2**64
_POLY_INVERSE = np.uint64(pow(int(_POLY), -1, 1 << 64))
_CHAIN = np.uint64(0xC2B2AE3D27D4EB4F)


def wordpunct_tokens(text: str) -> list[str]:
    """Lower-cased word/punctuation runs, as ``WordPunctTokenizer().tokenize(text.lower())`` but for combining marks."""
    return WORDPUNCT_PATTERN.findall(text.lower())


def normalize_text(
    text: str, nfkc: bool = True, casefold: bool = True, collapse_whitespace: bool = True
) -> str:
    """The text exact deduplication compares: NFKC, case-folded, whitespace runs -> one space, stripped."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if casefold:
        text = text.casefold()
    if collapse_whitespace:  # str.split() splits on exactly the code points \s matches, without a regex
        text = " ".join(text.split())
    return text


def word_shingles(text: str, n: int) -> set[str]:
    """Set of word n-grams (space-joined) of the normalized text; one shingle for texts under n words."""
    words = normalize_text(text).split(" ")
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def char_shingles(text: str, n: int) -> set[str]:
    """Set of character n-grams of the normalized text; the whole text when shorter than n."""
    text = normalize_text(text)
    if len(text) <= n:
        return {text}
    return {text[i : i + n] for i in range(len(text) - n + 1)}


# --- vectorised tokenization and n-gram hashing --------------------------------------------


class NgramHashes(NamedTuple):
    """The n-gram occurrences of a batch of D documents (M occurrences in all), by order.

    Attributes:
        doc: (M,) int64, the document of each occurrence (0..D-1).
        hash: (M,) uint64, the n-gram's 64-bit hash.
        n_tokens: (D,) int64, tokens per document.
        starts: {k: (first, stop)} the occurrences of the k-grams, ``doc[first:stop]``.
    """

    doc: np.ndarray
    hash: np.ndarray
    n_tokens: np.ndarray
    starts: dict

    def orders(self, min_n: int, max_n: int) -> "NgramHashes":
        """The occurrences of the k-grams with ``min_n <= k <= max_n`` only (every order must be present)."""
        first, stop = self.starts[min_n][0], self.starts[max_n][1]
        starts = {k: (a - first, b - first) for k, (a, b) in self.starts.items() if min_n <= k <= max_n}
        return NgramHashes(self.doc[first:stop], self.hash[first:stop], self.n_tokens, starts)


@functools.lru_cache(maxsize=1)
def code_point_classes() -> np.ndarray:
    """(0x110000,) uint8 class of every code point: 0 whitespace (``\\s``), 1 word (``\\w``), 2 other.

    Read off the regex engine itself, so the runs of one class are exactly the matches of
    ``WORDPUNCT_PATTERN``. Built once per process (its cost: ``benchmarks/RESULTS.md``, section "DSIR").
    """
    every = "".join(map(chr, range(0x110000)))
    classes = np.full(0x110000, _OTHER, dtype=np.uint8)
    for pattern, value in ((r"\w+", _WORD), (r"\s+", _WHITESPACE)):
        for match in re.finditer(pattern, every):
            classes[match.start() : match.end()] = value
    return classes


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """(n,) uint64 ``base**i mod 2**64`` for i = 0..n-1."""
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, out=out)


@functools.lru_cache(maxsize=1)
def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(P**i, P**-i)`` for i < n, shared by the hashers of a process (16 MB for a chunk of 2**20)."""
    return _powers(_POLY, n), _powers(_POLY_INVERSE, n)


def hash_to_range(hashes: np.ndarray, size: int) -> np.ndarray:
    """(M,) int64 ``(h >> 32) · size >> 32`` in [0, size) of uint64 hashes: a multiply instead of a modulo.

    Exact (no overflow) for size < 2**32.
    """
    return ((hashes >> np.uint64(32)) * np.uint64(size) >> np.uint64(32)).astype(np.int64)


class TokenHasher:
    """Texts -> the ``wordpunct_tokens`` of each, hashed, and their n-grams' hashes; whole batches in numpy.

    Tokens. The batch is lower-cased, joined with spaces and viewed as a uint32 code-point
    array; ``code_point_classes`` classes every code point as whitespace, word or other, and the
    tokens are the maximal runs of one non-space class (exactly the regex's matches).

    Hashes. A token's hash is a polynomial hash of its code points, ``Σ_j c_j P^j mod 2**64``,
    read off prefix sums in O(1) per token, finalised with splitmix64 together with its length.
    A k-gram's hash chains ``g_k(i) = splitmix64(g_{k-1}(i) · K + h(i + k - 1))``, g_1 = h.
    A token hashes the same in any batch and any position.

    Holds per-process tables; build one per worker (``DoFn.setup``) and reuse it.
    """

    def __init__(self):
        self._classes = code_point_classes()
        self._pow, self._inverse_pow = _power_tables(CHUNK_CODE_POINTS + 1)

    def count_tokens(self, texts: list[str]) -> np.ndarray:
        """(D,) int64 tokens per text, ``len(wordpunct_tokens(text))``."""
        return self._token_hashes(texts, hashed=False)[2]

    def ngram_hashes(self, texts: list[str], max_n: int, min_n: int = 1) -> NgramHashes:
        """Every k-gram of every text for min_n <= k <= max_n: all unigrams first (in token order), then bigrams, ...

        A k-gram is kept only where its k tokens lie in one document. Expects 1 <= min_n <= max_n.
        """
        doc, token_hash, n_tokens = self._token_hashes(texts)
        docs, hashes = ([doc], [token_hash]) if min_n == 1 else ([], [])
        gram = token_hash
        for k in range(2, max_n + 1):
            width = max(len(doc) - k + 1, 0)
            gram = splitmix64(gram[:width] * _CHAIN + token_hash[k - 1 :])
            if k >= min_n:
                same_doc = doc[k - 1 :] == doc[:width]
                docs.append(doc[:width][same_doc])
                hashes.append(gram[same_doc])
        sizes = np.cumsum([0] + [len(d) for d in docs])
        starts = {k: (int(sizes[i]), int(sizes[i + 1])) for i, k in enumerate(range(min_n, max_n + 1))}
        if not docs:
            return NgramHashes(np.zeros(0, np.int64), np.zeros(0, np.uint64), n_tokens, starts)
        return NgramHashes(np.concatenate(docs), np.concatenate(hashes), n_tokens, starts)

    def _chunks(self, lowered: list[str]):
        """Consecutive runs of documents holding at most CHUNK_CODE_POINTS code points (or one document)."""
        start, size = 0, 0
        for i, doc_text in enumerate(lowered):
            if size and size + len(doc_text) + 1 > CHUNK_CODE_POINTS:
                yield start, i
                start, size = i, 0
            size += len(doc_text) + 1
        if start < len(lowered):
            yield start, len(lowered)

    def _token_hashes(self, texts: list[str], hashed: bool = True):
        """(doc (N,) int64, token hash (N,) uint64 or None, n_tokens (D,) int64) over all N tokens."""
        lowered = [t.lower() for t in texts]
        docs, hashes = [], []
        for first, stop in self._chunks(lowered):
            doc, token_hash = self._chunk_token_hashes(lowered[first:stop], hashed)
            docs.append(doc + first)
            hashes.append(token_hash)
        doc = np.concatenate(docs) if docs else np.zeros(0, np.int64)
        n_tokens = np.bincount(doc, minlength=len(texts)).astype(np.int64)
        if not hashed:
            return doc, None, n_tokens
        return doc, (np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)), n_tokens

    def _chunk_token_hashes(self, lowered: list[str], hashed: bool):
        """Token spans of one chunk, from the code-point classes; hashes from prefix sums."""
        joined = " ".join(lowered)  # the space keeps tokens from running across documents
        points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        n = len(points)
        classes = self._classes[points]
        change = np.ones(n + 1, dtype=bool)
        np.not_equal(classes[1:], classes[:-1], out=change[1:n])
        edges = np.flatnonzero(change)
        starts, ends = edges[:-1], edges[1:]
        is_token = classes[starts] != _WHITESPACE
        starts, ends = starts[is_token], ends[is_token]
        doc_starts = np.cumsum([0] + [len(t) + 1 for t in lowered])
        per_doc = np.diff(np.searchsorted(starts, doc_starts))
        doc = np.repeat(np.arange(len(lowered), dtype=np.int64), per_doc)
        if not hashed:
            return doc, None
        if n + 1 <= len(self._pow):
            pow_, inverse_pow = self._pow[: n + 1], self._inverse_pow[: n + 1]
        else:  # a single document longer than a chunk
            pow_, inverse_pow = _powers(_POLY, n + 1), _powers(_POLY_INVERSE, n + 1)
        # prefix[i] = Σ_{j<i} c_j P^j, so Σ_{s<=j<e} c_j P^(j-s) = (prefix[e] - prefix[s]) P^-s
        prefix = np.zeros(n + 1, dtype=np.uint64)
        np.cumsum(np.multiply(points, pow_[:n], dtype=np.uint64), out=prefix[1:])
        span = (prefix[ends] - prefix[starts]) * inverse_pow[starts]
        # the length tells apart spans whose code points differ only by leading U+0000s
        return doc, splitmix64(span + (ends - starts).astype(np.uint64) * _CHAIN)
