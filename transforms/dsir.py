"""DSIR: data selection with importance resampling on hashed n-gram features.

Method (Xie, Santurkar, Ma & Liang 2023, "Data Selection for Language Models via Importance
Resampling"; reference package ``data-selection`` 1.0.3, ``HashedNgramDSIR``).

Features. A document is lower-cased and cut into word/punctuation tokens (``\\w+|[^\\w\\s]+``
with Python's ``re``, ``text.wordpunct_tokens``; the reference's ``wordpunct`` tokenizer). Each
k-gram for k = 1..n (tokens joined by one space) is hashed into one of B buckets; x_b(d) counts
the n-grams of document d in bucket b.

Fit. The bag-of-n-grams distributions of the target and of the raw pool:

    p_target_b = Σ_{d ∈ target} x_b(d) / Σ_{d ∈ target, b'} x_b'(d),   p_raw_b likewise.

Weight. ``log w(d) = Σ_b x_b(d) · r_b`` with the log-ratio vector
``r_b = log(p_target_b + ε) - log(p_raw_b + ε)``, ε = 1e-8 (the reference's smoothing). A
counts vector that sums to 0 (empty target or pool) gives p = 0 everywhere.

Length. As the reference, a document is too short when
``(Σ_b x_b(d) + n(n-1)/2) // n < min_tokens``; this equals the token count T whenever T ≥ n - 1.

Hashing (``DsirConfig.hash``):

- ``"sha256"``: the reference's buckets exactly, ``int(sha256(utf8(gram)).hexdigest(), 16) mod B``.
  Python work per distinct token and n-gram of a batch (cached, bounded), none per occurrence.
- ``"fast"`` (default): fully vectorised over a batch: ``text.TokenHasher`` finds the same
  tokens as the regex with numpy and gives each n-gram a 64-bit hash (a polynomial hash of a
  token's code points, chained with splitmix64 into k-grams); bucket = ``(h >> 32) · B >> 32``
  (``text.hash_to_range``; a multiply instead of a modulo, B < 2**30). Same tokens and n-grams
  as the reference, different (equally uniform) buckets, so weights differ from ``"sha256"``
  only through which n-grams collide.

Deviations from the reference:

- Tokens follow Python's ``re``. NLTK 3.10 (installed here) compiles the tokenizer's pattern
  with the third-party ``regex`` engine, whose ``\\w`` also matches combining marks (U+0301,
  the U+0307 of ``"İ".lower()``, Indic vowel signs): on text with those the reference's tokens,
  and so its buckets, differ from winnow's. No document of the demo corpus has one.
- ``raw_token_budget`` fits the raw distribution on a deterministic uniform subset instead of the
  first documents read: the documents whose id hash (blake2b) falls in the lowest of
  ``BUDGET_BINS`` equal slices of the hash range, as many slices as keep the subset's *token*
  count within the budget (the reference counts unigrams + bigrams, about 2 per token). The
  lowest slice is always used, so an over-small budget still fits on something.
- Records that an earlier stage dropped are neither fitted nor scored; records this method drops
  as too short are fitted (as the reference) and still get their weight.
- Sampling is not done here: ``gumbel_keys`` gives the key whose top-k is importance resampling
  without replacement (Gumbel top-k, as the reference's ``resample``), with noise from a hash of
  (seed, id) instead of a global RNG; plain top-k ranks by the log weight itself.

Several targets (the reference's ``separate_targets``). ``dsir_log_weight`` is always the weight
against all target datasets pooled (their counts summed). With ``separate_targets`` each record
also gets ``dsir_target_log_weights``, its weight against each target t alone
(``r_t = log(p_t + ε) - log(p_raw + ε)``), and the selection is made target by target
(``select.SelectInRounds``): target t takes its share ``π_t`` of N, by importance resampling on
its own weights, from the records earlier targets did not take. π is given
(``target_proportions``) or each target's share of the targets' n-grams (the reference's default).
Unlike the reference, each target is fitted on all of its records even with a raw token budget.

Quality metric. ``kl_reduction`` is the paper's KL reduction on the hashed n-gram distributions
(``KL(target ‖ baseline) − KL(target ‖ selected)``, baseline = random selection), smoothed with
the same ε as the weights.
"""

import dataclasses
import hashlib
import itertools
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from winnow.transforms import schema
from winnow.transforms.select import gumbel_noise
from winnow.transforms.text import WORDPUNCT_PATTERN, TokenHasher, hash_to_range, wordpunct_tokens
from winnow.transforms.validation import check_int, is_int

NAMESPACE = "winnow.dsir"
EPS = 1e-8  # the reference's smoothing of both distributions
HASHES = ("fast", "sha256")
MAX_NGRAMS = 5
MAX_BUCKETS = 1 << 30  # fast buckets are (h >> 32) · B >> 32, exact for B < 2**32
BUDGET_BITS = 16
BUDGET_BINS = 1 << BUDGET_BITS  # id-hash slices of the raw token budget: 512 KB of int64 counts
BATCH_SIZE = 512  # documents per featurization call (~1 MB of typical web text)
SHA256_CACHE_SIZE = 1 << 20  # distinct tokens / n-grams whose sha256 bucket is kept

_KEPT, _TOO_SHORT, _ALREADY_DROPPED, _INVALID, _TOKENS = range(5)
_TALLY = "tally"


@dataclasses.dataclass(frozen=True)
class DsirConfig:
    """DSIR settings (CLI: ``--dsir-buckets --dsir-ngrams --dsir-min-tokens
    --dsir-raw-token-budget --dsir-hash``).

    Attributes:
        buckets: B, hash buckets shared by all n-gram orders (reference: 10,000).
        ngrams: n; 2 = unigrams and bigrams, 1 = unigrams only.
        min_tokens: documents with fewer tokens are dropped ``too_short`` (reference: 100).
        raw_token_budget: fit the raw distribution on a deterministic subset of at most this
            many tokens (see the module docstring); None fits on every eligible record.
        hash: ``"fast"`` (vectorised) or ``"sha256"`` (the reference's buckets exactly).
        separate_targets: weigh each record against every target dataset separately too
            (``dsir_target_log_weights``), for selecting per target (the reference's option).
        target_proportions: with ``separate_targets``, each target's share of the selection;
            None = its share of the targets' n-grams (the reference's default).
    """

    buckets: int = 10_000
    ngrams: int = 2
    min_tokens: int = 100
    raw_token_budget: int | None = None
    hash: str = "fast"
    separate_targets: bool = False
    target_proportions: tuple[float, ...] | None = None

    def __post_init__(self):
        for name, low, high in (("buckets", 1, MAX_BUCKETS), ("ngrams", 1, MAX_NGRAMS), ("min_tokens", 0, None)):
            value = getattr(self, name)
            if not is_int(value):
                raise TypeError(f"{name}={value!r}; expected an int")
            if value < low or (high is not None and value > high):
                bound = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
                raise ValueError(f"{name}={value}; expected {bound}")
        check_int("raw_token_budget", self.raw_token_budget, 1, allow_none=True)
        if self.hash not in HASHES:
            raise ValueError(f"hash={self.hash!r}; expected one of {HASHES}")
        if self.target_proportions is not None:
            if not self.separate_targets:
                raise ValueError(f"target_proportions={self.target_proportions}; only used with separate_targets")
            shares = np.asarray(self.target_proportions, dtype=np.float64)
            if shares.ndim != 1 or not np.all(np.isfinite(shares)) or np.any(shares < 0) or not shares.sum() > 0:
                raise ValueError(f"target_proportions={self.target_proportions}; expected finite shares >= 0, not all 0")


# --- featurization -----------------------------------------------------------------------


class HashedNgrams(NamedTuple):
    """The n-gram occurrences of a batch of D documents (M occurrences in all).

    Attributes:
        doc: (M,) int64, the document of each occurrence (0..D-1).
        bucket: (M,) int64, its bucket (0..B-1).
        n_tokens: (D,) int64, tokens per document.
    """

    doc: np.ndarray
    bucket: np.ndarray
    n_tokens: np.ndarray


def document_lengths(n_tokens: np.ndarray, ngrams: int) -> np.ndarray:
    """(D,) int64 reference length ``(F + n(n-1)/2) // n``, F = Σ_{k=1..n} max(T - k + 1, 0) n-grams.

    Equals T (the token count) for T ≥ n - 1.
    """
    n_tokens = np.asarray(n_tokens, dtype=np.int64)
    features = sum(np.maximum(n_tokens - k + 1, 0) for k in range(1, ngrams + 1))
    return (features + ngrams * (ngrams - 1) // 2) // ngrams


class NgramHasher:
    """Texts -> ``HashedNgrams``, by the ``"fast"`` or ``"sha256"`` hashing of the module docstring.

    Holds per-process state (power tables, or the bounded sha256 bucket cache); build one per
    worker (``DoFn.setup``) and reuse it. Expects a validated config.
    """

    def __init__(self, config: DsirConfig):
        self.buckets, self.ngrams, self.hash = config.buckets, config.ngrams, config.hash
        self._cache: dict[str, int] = {}
        self._tokens = TokenHasher() if self.hash == "fast" else None

    def featurize(self, texts: list[str]) -> HashedNgrams:
        """The n-gram occurrences of ``texts`` (D strings)."""
        if self.hash == "fast":
            grams = self._tokens.ngram_hashes(texts, self.ngrams)
            return HashedNgrams(grams.doc, hash_to_range(grams.hash, self.buckets), grams.n_tokens)
        return self._sha256_ngrams(texts)

    def count_tokens(self, texts: list[str]) -> np.ndarray:
        """(D,) int64 tokens per text, ``len(wordpunct_tokens(text))``."""
        if self.hash == "fast":
            return self._tokens.count_tokens(texts)
        return np.fromiter((len(WORDPUNCT_PATTERN.findall(t.lower())) for t in texts), np.int64, len(texts))

    # sha256 hashing -------------------------------------------------------------------------

    def _sha256_buckets(self, grams: list[str]) -> np.ndarray:
        """(len(grams),) int64 reference buckets of distinct strings, through the bounded cache."""
        cache, buckets = self._cache, self.buckets
        if len(cache) + len(grams) > SHA256_CACHE_SIZE:
            cache.clear()
        for gram in grams:
            if gram not in cache:
                digest = hashlib.sha256(gram.encode("utf-8", "surrogatepass")).digest()
                cache[gram] = int.from_bytes(digest, "big") % buckets
        return np.fromiter(map(cache.__getitem__, grams), np.int64, len(grams))

    def _sha256_ngrams(self, texts: list[str]) -> HashedNgrams:
        """Each distinct token and k-gram of the batch is named by a batch-local id and hashed once.

        The ids of the k-grams come from ``np.unique`` of ``id(k-1-gram) · V + id(token)``, so the
        strings are only built for distinct n-grams.
        """
        token_lists = [wordpunct_tokens(t) for t in texts]
        n_tokens = np.fromiter(map(len, token_lists), np.int64, len(texts))
        flat = list(itertools.chain.from_iterable(token_lists))
        index = dict(zip(dict.fromkeys(flat), itertools.count()))
        words = list(index)
        ids = np.fromiter(map(index.__getitem__, flat), np.int64, len(flat))
        doc = np.repeat(np.arange(len(texts), dtype=np.int64), n_tokens)
        docs, bucket_parts = [doc], [self._sha256_buckets(words)[ids]]
        gram_ids = ids  # id of the (k-1)-gram starting at each position, where it is within one document
        for k in range(2, self.ngrams + 1):
            width = len(ids) - k + 1
            if width <= 0:
                break
            valid = np.flatnonzero(doc[k - 1 :] == doc[:width])
            keys = gram_ids[valid] * len(words) + ids[valid + k - 1]
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            columns = [map(words.__getitem__, ids[valid[first] + j].tolist()) for j in range(k)]
            grams = list(map(" ".join, zip(*columns)))
            docs.append(doc[valid])
            bucket_parts.append(self._sha256_buckets(grams)[inverse])
            gram_ids = np.full(width, -1, dtype=np.int64)
            gram_ids[valid] = inverse
        return HashedNgrams(np.concatenate(docs), np.concatenate(bucket_parts), n_tokens)


# --- distributions, weights, metrics -----------------------------------------------------


def ngram_counts(features: HashedNgrams, buckets: int) -> np.ndarray:
    """(B,) int64 n-gram counts per bucket, summed over the batch."""
    return np.bincount(features.bucket, minlength=buckets).astype(np.int64)


def probabilities(counts: np.ndarray) -> np.ndarray:
    """Counts (..., B) normalised along the last axis; an all-zero row stays all zero."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray, eps: float = EPS) -> np.ndarray:
    """``r = log(p_target + ε) - log(p_raw + ε)``: (B,), or (T, B) for T targets' counts (T, B)."""
    return np.log(probabilities(target_counts) + eps) - np.log(probabilities(raw_counts) + eps)


def log_weights(features: HashedNgrams, ratio: np.ndarray) -> np.ndarray:
    """``log w(d) = Σ_b x_b(d) r_b``: (D,) float64 for r (B,), or (D, T) for T targets' r (T, B)."""
    n_docs = len(features.n_tokens)
    if ratio.ndim == 1:
        return np.bincount(features.doc, weights=ratio[features.bucket], minlength=n_docs)
    return np.stack([np.bincount(features.doc, weights=r[features.bucket], minlength=n_docs) for r in ratio], axis=1)


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, eps: float = EPS) -> float:
    """``KL(p ‖ q) = Σ_b p_b (log(p_b + ε) - log(q_b + ε))`` of the normalised (B,) counts."""
    p = probabilities(p_counts)
    return float(np.dot(p, np.log(p + eps) - np.log(probabilities(q_counts) + eps)))


def kl_reduction(target_counts, raw_counts, selected_counts, eps: float = EPS) -> float:
    """KL reduction of a selection: ``KL(target ‖ raw) - KL(target ‖ selected)``, in nats.

    The DSIR paper's data metric (Xie et al. 2023, sec. "KL reduction"): how much closer, on the
    hashed n-gram distribution, the selected data is to the target than a random selection is;
    the paper averages it over target datasets. Pass as ``raw_counts`` the counts of a random
    selection of the same size (the paper's baseline) or of the whole pool (its expectation).
    Both KLs use the weights' smoothing, ``p + ε`` inside the logarithms only, so the target's own
    entropy term cancels:

        KL reduction = Σ_b t_b · (log(s_b + ε) - log(r_b + ε)),

    t, r, s the normalised target, baseline and selected counts.

    Args:
        target_counts: (B,) counts of the target, or (T, B) for T targets (the mean is returned).
        raw_counts: (B,) counts of the baseline.
        selected_counts: (B,) counts of the selection.
        eps: smoothing ε.

    Returns:
        The reduction; positive when the selection is closer to the target than the baseline.
    """
    target = np.atleast_2d(probabilities(target_counts))
    gain = np.log(probabilities(selected_counts) + eps) - np.log(probabilities(raw_counts) + eps)
    return float(np.mean(target @ gain))


def gumbel_keys(log_weights: np.ndarray, ids: list[str], seed: int) -> np.ndarray:
    """(D,) float64 sampling keys ``log w + G``, G = -log(-log u), u from blake2b of ``f"{seed}:{id}"``.

    The top-N records by key are a sample without replacement with probability ∝ w (Gumbel
    top-k, as the reference's ``resample``); the noise is ``select.gumbel_noise``, identical on
    every worker. Plain top-k (``--dsir-top-k``) ranks by ``log w`` itself.
    """
    return np.asarray(log_weights, dtype=np.float64) + gumbel_noise(ids, seed)


def target_shares(target_ngrams: list[int], proportions=None) -> list[float]:
    """Each target's share of the selection, summing to 1: ``proportions`` normalised, else each
    target's share of the targets' n-grams (the reference's default); equal shares when all are 0."""
    shares = np.asarray(proportions if proportions is not None else target_ngrams, dtype=np.float64)
    if not shares.sum() > 0:
        shares = np.ones(len(shares))
    return (shares / shares.sum()).tolist()


def id_bins(ids: list[str]) -> np.ndarray:
    """(D,) int64 budget slice of each id: the top BUDGET_BITS bits of ``blake2b_64(id)``."""
    shift = 64 - BUDGET_BITS
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "big") >> shift for i in ids),
        np.int64,
        len(ids),
    )


def budget_cutoff(bin_tokens: np.ndarray, budget: int) -> int:
    """The number of lowest id slices to fit on: the most whose tokens total at most ``budget``, at least 1.

    ``bin_tokens`` (BUDGET_BINS,) int64 tokens of the raw records per slice.
    """
    within = int(np.searchsorted(np.cumsum(bin_tokens), budget, side="right"))
    return max(within, 1)


# --- Beam wrappers -----------------------------------------------------------------------


class NgramTotals(NamedTuple):
    """Accumulated n-gram statistics: counts (B,) int64, and the documents and tokens they came from."""

    counts: np.ndarray
    documents: int
    tokens: int


class _HashingCombineFn(beam.CombineFn):
    """Base of the CombineFns that hash text: ``_get_hasher()`` builds the hasher once per process; never pickled."""

    def __init__(self, config: DsirConfig):
        super().__init__()
        self._config = config
        self._hasher = None

    def __getstate__(self):
        return {**self.__dict__, "_hasher": None}

    def _get_hasher(self) -> NgramHasher:
        if self._hasher is None:
            self._hasher = NgramHasher(self._config)
        return self._hasher


class NgramCountsCombineFn(_HashingCombineFn):
    """Texts, or lists of texts (batches), -> (B,) int64 hashed n-gram counts; no input -> zeros.

    The accumulator is a fixed-size ``NgramTotals``; merges are sums, so any order gives the same
    result.
    """

    def create_accumulator(self):
        return NgramTotals(np.zeros(self._config.buckets, dtype=np.int64), 0, 0)

    def add_input(self, accumulator, texts):
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            return accumulator
        features = self._get_hasher().featurize(texts)
        counts = accumulator.counts + ngram_counts(features, self._config.buckets)
        tokens = accumulator.tokens + int(features.n_tokens.sum())
        return NgramTotals(counts, accumulator.documents + len(texts), tokens)

    def merge_accumulators(self, accumulators):
        counts, documents, tokens = self.create_accumulator()
        for acc in accumulators:
            counts, documents, tokens = counts + acc.counts, documents + acc.documents, tokens + acc.tokens
        return NgramTotals(counts, documents, tokens)

    def extract_output(self, accumulator):
        return accumulator.counts


class _NgramTotalsCombineFn(NgramCountsCombineFn):
    """As ``NgramCountsCombineFn``, keeping the document and token totals for the stats."""

    def extract_output(self, accumulator):
        return accumulator


class _TokenHistogramCombineFn(_HashingCombineFn):
    """Batches of (id, text) -> (BUDGET_BINS,) int64 tokens per id slice."""

    def create_accumulator(self):
        return np.zeros(BUDGET_BINS, dtype=np.int64)

    def add_input(self, accumulator, pairs):
        if not pairs:
            return accumulator
        ids, texts = zip(*pairs)
        np.add.at(accumulator, id_bins(ids), self._get_hasher().count_tokens(list(texts)))
        return accumulator

    def merge_accumulators(self, accumulators):
        return np.sum([self.create_accumulator(), *accumulators], axis=0)

    def extract_output(self, accumulator):
        return accumulator


def _fit_pairs(batch: list[dict]) -> list[tuple[str, str]]:
    """(id, text) of the records of a batch that enter the raw fit: eligible, with str text."""
    return [
        (r[schema.ID], r[schema.TEXT])
        for r in batch
        if schema.is_eligible(r) and isinstance(r.get(schema.TEXT), str)
    ]


def _fit_texts(batch: list[dict]) -> list[str]:
    return [text for _, text in _fit_pairs(batch)]


def _texts_in_budget(batch: list[dict], cutoff: int) -> list[str]:
    pairs = _fit_pairs(batch)
    if not pairs:
        return []
    keep = id_bins([doc_id for doc_id, _ in pairs]) < cutoff
    return [text for (_, text), k in zip(pairs, keep) if k]


def _str_text(record: dict) -> list[str]:
    text = record.get(schema.TEXT)
    return [text] if isinstance(text, str) else []


def _gathered(first, *rest) -> list:
    return [first, *rest]


def _pooled(targets: list[NgramTotals]) -> NgramTotals:
    """The targets' totals summed: the pooled target."""
    return NgramTotals(np.sum([t.counts for t in targets], axis=0), sum(t.documents for t in targets), sum(t.tokens for t in targets))


def _log_ratios(targets: list[NgramTotals], raw: NgramTotals, separate: bool) -> np.ndarray:
    """``log_ratio`` against the pooled targets, (B,); with ``separate`` (1 + T, B): pooled, then each target."""
    if not separate:
        return log_ratio(_pooled(targets).counts, raw.counts)
    return log_ratio(np.vstack([_pooled(targets).counts, *[t.counts for t in targets]]), raw.counts)


def _shares_of_totals(targets: list[NgramTotals], config: DsirConfig) -> list[float]:
    return target_shares([int(t.counts.sum()) for t in targets], config.target_proportions)


def _target_counts(targets: list[NgramTotals], separate: bool) -> np.ndarray:
    """For ``kl_reduction``: the pooled (B,) counts, or with ``separate`` each target's, (T, B)."""
    return np.stack([t.counts for t in targets]) if separate else _pooled(targets).counts


def _counts_of_totals(totals: NgramTotals) -> np.ndarray:
    return totals.counts


def _sum_tallies(tallies) -> np.ndarray:
    return np.sum([np.zeros(5, dtype=np.int64), *tallies], axis=0)


def _stats(tally: np.ndarray, raw: NgramTotals, targets: list[NgramTotals], config: DsirConfig) -> dict:
    pooled, shares = _pooled(targets), _shares_of_totals(targets, config)
    return {
        "kept": int(tally[_KEPT]),
        "too_short": int(tally[_TOO_SHORT]),
        "already_dropped": int(tally[_ALREADY_DROPPED]),
        "invalid": int(tally[_INVALID]),
        "raw_tokens": int(tally[_TOKENS]),
        "raw_documents_fitted": raw.documents,
        "raw_tokens_fitted": raw.tokens,
        "target_documents": pooled.documents,
        "target_tokens": pooled.tokens,
        "targets": [{"documents": t.documents, "tokens": t.tokens, "share": share} for t, share in zip(targets, shares)],
        "config": dataclasses.asdict(config),
    }


class _ScoreDsirFn(beam.DoFn):
    """Batch of records -> each record with ``dsir_log_weight``, short ones dropped ``too_short``.

    Records an earlier stage dropped pass through unscored; records without a str text go to
    ``errors``. One tally vector per batch goes to the ``tally`` output.
    """

    def __init__(self, config: DsirConfig):
        self._config = config

    def setup(self):
        self._hasher = NgramHasher(self._config)
        self._counters = {
            _KEPT: Metrics.counter(NAMESPACE, "kept"),
            _TOO_SHORT: Metrics.counter(NAMESPACE, schema.TOO_SHORT),
            _ALREADY_DROPPED: Metrics.counter(NAMESPACE, "already_dropped"),
            _INVALID: Metrics.counter(NAMESPACE, "invalid_text"),
        }

    def process(self, batch, ratio):
        tally = np.zeros(5, dtype=np.int64)
        scorable = []
        for record in batch:
            if not schema.is_eligible(record):
                tally[_ALREADY_DROPPED] += 1
                yield record
            elif not isinstance(record.get(schema.TEXT), str):
                tally[_INVALID] += 1
                error = {"source": NAMESPACE, "position": None, "reason": "dsir_failed: TypeError"}
                yield beam.pvalue.TaggedOutput(schema.ERRORS_TAG, {**error, "raw": repr(record)[:1000]})
            else:
                scorable.append(record)
        if scorable:
            features = self._hasher.featurize([r[schema.TEXT] for r in scorable])
            weights = log_weights(features, ratio).tolist()  # (D,), or (D, 1 + T): pooled, then each target
            if ratio.ndim == 1:
                columns = [{schema.DSIR_LOG_WEIGHT: w} for w in weights]
            else:
                columns = [{schema.DSIR_LOG_WEIGHT: w[0], schema.DSIR_TARGET_LOG_WEIGHTS: w[1:]} for w in weights]
            long_enough = document_lengths(features.n_tokens, self._config.ngrams) >= self._config.min_tokens
            tally[_TOKENS] = features.n_tokens.sum()
            for record, scores, keep in zip(scorable, columns, long_enough.tolist()):
                if keep:
                    tally[_KEPT] += 1
                    yield {**record, **scores}
                else:
                    tally[_TOO_SHORT] += 1
                    yield schema.drop(record, schema.TOO_SHORT, **scores)
        for exit_, counter in self._counters.items():
            counter.inc(int(tally[exit_]))
        yield beam.pvalue.TaggedOutput(_TALLY, tally)


class CountNgrams(beam.PTransform):
    """Records -> a singleton PCollection of their (B,) int64 hashed n-gram counts.

    Counts every record's text (the caller picks the records: the selection, a random selection
    of the same size, the target); the building block of ``kl_reduction``. No records -> zeros.
    """

    def __init__(self, config: DsirConfig):
        super().__init__()
        self._config = config

    def expand(self, records):
        return (
            records
            | "RecordTexts" >> beam.FlatMap(_str_text)
            | "BatchTexts" >> beam.BatchElements(max_batch_size=BATCH_SIZE)
            | "CountNgrams" >> beam.CombineGlobally(NgramCountsCombineFn(self._config))
        )


class ScoreDsir(beam.PTransform):
    """Records -> records with ``dsir_log_weight``, the DSIR importance log weight against the target.

    ``expand(records)`` returns a dict of PCollections:

    - ``"records"``: every input record once. Eligible records get ``dsir_log_weight`` (float),
      the weight against all targets pooled, and with ``separate_targets`` also
      ``dsir_target_log_weights`` (T floats, one per target); those shorter than ``min_tokens``
      are also dropped ``too_short`` (their weights are set too). Records an earlier stage
      dropped pass through unchanged and are not fitted.
    - ``"errors"``: eligible records whose ``text`` is not a str.
    - ``"stats"``: one dict: kept / too_short / already_dropped / invalid counts, raw tokens,
      raw documents and tokens fitted, target documents and tokens (pooled and per target, with
      each target's share), the config.
    - ``"target_counts"``, ``"raw_counts"``: singletons, the n-gram counts fitted, for
      ``kl_reduction``: the pooled target's (B,), or with ``separate_targets`` each target's
      (T, B); the raw ones (B,) on the budget subset when ``raw_token_budget`` is set.
    - ``"target_shares"``: singleton, each target's share of the selection (``target_shares``).

    Args:
        target: PCollection of target records (dicts with a str ``text``; others are skipped), or
            a list of them, one per target dataset.
        config: DsirConfig; ``target_proportions``, if given, has one share per target.
    """

    def __init__(self, target, config: DsirConfig = DsirConfig()):
        super().__init__()
        if not isinstance(config, DsirConfig):
            raise TypeError(f"config={config!r}; expected a DsirConfig")
        self._targets = list(target) if isinstance(target, (list, tuple)) else [target]
        if not self._targets:
            raise ValueError("target=[]; expected a target PCollection, or a list of one or more")
        if config.target_proportions is not None and len(config.target_proportions) != len(self._targets):
            raise ValueError(f"target_proportions={config.target_proportions}; expected one share per target ({len(self._targets)})")
        self._config = config

    def expand(self, records):
        config = self._config
        # Featurizing has a per-call cost (joins, table lookups): every step works on batches.
        batches = records | "BatchRecords" >> beam.BatchElements(max_batch_size=BATCH_SIZE)  # [record]
        if config.raw_token_budget is None:
            raw_texts = batches | "RawTexts" >> beam.Map(_fit_texts)  # [text]
        else:
            # tokens per id slice (BUDGET_BINS,) -> number of lowest slices within the budget -> their [text]
            bin_tokens = (
                batches
                | "IdsAndTexts" >> beam.Map(_fit_pairs)
                | "CountTokensPerSlice" >> beam.CombineGlobally(_TokenHistogramCombineFn(config))
            )
            cutoff = bin_tokens | "BudgetCutoff" >> beam.Map(budget_cutoff, config.raw_token_budget)
            raw_texts = batches | "RawTextsInBudget" >> beam.Map(
                _texts_in_budget, cutoff=beam.pvalue.AsSingleton(cutoff)
            )
        raw = raw_texts | "FitRaw" >> beam.CombineGlobally(_NgramTotalsCombineFn(config))  # NgramTotals
        fits = [
            target
            | f"TargetTexts{t}" >> beam.FlatMap(_str_text)
            | f"BatchTarget{t}" >> beam.BatchElements(max_batch_size=BATCH_SIZE)
            | f"FitTarget{t}" >> beam.CombineGlobally(_NgramTotalsCombineFn(config))
            for t, target in enumerate(self._targets)
        ]
        targets = fits[0] | "Targets" >> beam.Map(_gathered, *[beam.pvalue.AsSingleton(f) for f in fits[1:]])  # [NgramTotals]
        # (B,) or (1 + T, B) float64, broadcast to every scoring worker
        ratio = targets | "LogRatio" >> beam.Map(_log_ratios, raw=beam.pvalue.AsSingleton(raw), separate=config.separate_targets)
        scored = batches | "Score" >> beam.ParDo(_ScoreDsirFn(config), beam.pvalue.AsSingleton(ratio)).with_outputs(
            schema.ERRORS_TAG, _TALLY, main="records"
        )
        # one (5,) int64 tally per batch -> their sum -> the stats dict
        stats = (
            scored[_TALLY]
            | "SumTallies" >> beam.CombineGlobally(_sum_tallies)
            | "Stats" >> beam.Map(
                _stats, raw=beam.pvalue.AsSingleton(raw), targets=beam.pvalue.AsSingleton(targets), config=config
            )
        )
        return {
            "records": scored["records"],
            "stats": stats,
            "errors": scored[schema.ERRORS_TAG],
            "target_counts": targets | "TargetCounts" >> beam.Map(_target_counts, config.separate_targets),
            "raw_counts": raw | "RawCounts" >> beam.Map(_counts_of_totals),
            "target_shares": targets | "TargetShares" >> beam.Map(_shares_of_totals, config),
        }
