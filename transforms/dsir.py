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

- ``"sha256"``: the reference's buckets, ``int(sha256(utf8(gram)).hexdigest(), 16) mod B``, on text
  without combining marks (NLTK keeps a combining mark inside its word; the tokenizer splits it off).
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
  first documents read: the documents whose seeded id rank (``seeded.sample_rank``) falls in the
  lowest of ``budget_slices(B)`` equal slices of the rank range, as many slices as keep the
  subset's *token* count within the budget (the reference counts unigrams + bigrams, about 2 per
  token). One pass: ``BudgetCountsCombineFn`` keeps the n-gram counts of every slice (a fixed
  (slices, B) table) and keeps the lowest slices in budget at the end; the lowest slice is always
  used, so an over-small budget still fits on something.
- The raw distribution is fitted on every valid record read, duplicates included (as the
  reference, which fits before any deduplication); too-short documents are fitted too.
- Sampling is not done here: the selection key ``log w + Gumbel(seed, id)`` (``seeded.gumbel``)
  makes the top-N importance resampling without replacement (Gumbel top-k, as the reference's
  ``resample``), with noise from a hash of (seed, id) instead of a global RNG; plain top-k ranks
  by the log weight itself.

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
import pyarrow as pa

from winnow.transforms import schema, seeded
from winnow.transforms.text import WORDPUNCT_PATTERN, NgramHashes, TokenHasher, hash_to_range, wordpunct_tokens
from winnow.transforms.validation import check_bool, check_choice, check_int

NAMESPACE = "winnow.dsir"
EPS = 1e-8  # the reference's smoothing of both distributions
HASHES = ("fast", "sha256")
MAX_NGRAMS = 5
MAX_BUCKETS = 1 << 30  # fast buckets are (h >> 32) · B >> 32, exact for B < 2**32
BUDGET_CELLS = 1 << 22  # the raw token budget's per-slice counts: at most 4M int64 cells (32 MB)
MAX_BUDGET_SLICES = 256
SHA256_CACHE_SIZE = 1 << 20  # distinct tokens / n-grams whose sha256 bucket is kept


@dataclasses.dataclass(frozen=True)
class DsirConfig:
    """DSIR settings (CLI: ``--dsir-buckets --dsir-ngrams --dsir-min-tokens
    --dsir-raw-token-budget --dsir-hash --dsir-separate-targets --dsir-target-proportions``).

    Attributes:
        buckets: B, hash buckets shared by all n-gram orders (reference: 10,000).
        ngrams: n; 2 = unigrams and bigrams, 1 = unigrams only.
        min_tokens: documents with fewer tokens are dropped ``too_short`` (reference: 100).
        raw_token_budget: fit the raw distribution on a deterministic subset of at most this
            many tokens (see the module docstring); None fits on every record.
        hash: ``"fast"`` (vectorised) or ``"sha256"`` (the reference's buckets on text without combining marks).
        separate_targets: weigh each record against every target dataset separately too
            (``winnow_dsir_target_log_weights``), for selecting per target (the reference's option).
        target_proportions: with ``separate_targets``, each target's share of the selection;
            None = its share of the targets' n-grams (the reference's default).
        seed: seed of the raw token budget's subset.
    """

    buckets: int = 10_000
    ngrams: int = 2
    min_tokens: int = 100
    raw_token_budget: int | None = None
    hash: str = "fast"
    separate_targets: bool = False
    target_proportions: tuple[float, ...] | None = None
    seed: int = 0

    def __post_init__(self):
        check_int("buckets", self.buckets, 1, MAX_BUCKETS)
        check_int("ngrams", self.ngrams, 1, MAX_NGRAMS)
        check_int("min_tokens", self.min_tokens, 0)
        check_int("raw_token_budget", self.raw_token_budget, 1, allow_none=True)
        check_choice("hash", self.hash, HASHES)
        check_bool("separate_targets", self.separate_targets)
        check_int("seed", self.seed, 0)
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

    def featurize(self, texts: list[str], grams: NgramHashes | None = None) -> HashedNgrams:
        """The n-gram occurrences of ``texts`` (D strings).

        ``grams``: in ``"fast"`` mode, the texts' ``TokenHasher.ngram_hashes`` covering orders
        1..n, when the caller has hashed them already for another method (hash each text once).
        """
        if self.hash == "fast":
            grams = (grams or self._tokens.ngram_hashes(texts, self.ngrams)).orders(1, self.ngrams)
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
    if ratio.ndim == 1:  # float64 even without an n-gram (bincount of nothing is int64)
        return np.bincount(features.doc, weights=ratio[features.bucket], minlength=n_docs).astype(np.float64)
    return np.stack([np.bincount(features.doc, weights=r[features.bucket], minlength=n_docs) for r in ratio], axis=1).astype(np.float64)


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


def target_shares(target_ngrams: list[int], proportions=None) -> list[float]:
    """Each target's share of the selection, summing to 1: ``proportions`` normalised, else each
    target's share of the targets' n-grams (the reference's default); equal shares when all are 0."""
    shares = np.asarray(proportions if proportions is not None else target_ngrams, dtype=np.float64)
    if not shares.sum() > 0:
        shares = np.ones(len(shares))
    return (shares / shares.sum()).tolist()


def budget_slices(buckets: int) -> int:
    """Slices of the raw token budget for B buckets: ``MAX_BUDGET_SLICES``, fewer when B is large."""
    return max(1, min(MAX_BUDGET_SLICES, BUDGET_CELLS // buckets))


def slice_of(ranks: np.ndarray, slices: int) -> np.ndarray:
    """(n,) int64 slice of each int64 seeded rank (``seeded.sample_rank``): equal slices of the rank range."""
    unsigned = np.asarray(ranks, np.int64).view(np.uint64) ^ np.uint64(1 << 63)
    return ((unsigned >> np.uint64(32)) * np.uint64(slices) >> np.uint64(32)).astype(np.int64)


def budget_cutoff(slice_tokens: np.ndarray, budget: int) -> int:
    """The number of lowest slices to fit on: the most whose tokens total at most ``budget``, and at least
    up to the first slice holding any token (an over-small budget still fits on something)."""
    totals = np.cumsum(slice_tokens)
    within = int(np.searchsorted(totals, budget, side="right"))
    first = int(np.searchsorted(totals, 0, side="right")) + 1
    return min(max(within, first), len(totals))


class NgramTotals(NamedTuple):
    """Accumulated n-gram statistics: counts (B,) int64, and the documents and tokens they came from."""

    counts: np.ndarray
    documents: int
    tokens: int


def pooled(targets: list[NgramTotals]) -> NgramTotals:
    """The targets' totals summed: the pooled target."""
    return NgramTotals(np.sum([t.counts for t in targets], axis=0), sum(t.documents for t in targets), sum(t.tokens for t in targets))


@dataclasses.dataclass(frozen=True, eq=False)
class DsirModel:
    """The fitted state every scoring worker needs.

    Attributes:
        ratio: (B,) float64 log-ratio against the pooled target, or with separate targets (1 + T, B):
            pooled, then each target.
        raw: the raw n-gram totals fitted (on the budget subset when there is a budget).
        targets: each target dataset's n-gram totals.
        shares: each target's share of the selection (``target_shares``).
    """

    ratio: np.ndarray
    raw: NgramTotals
    targets: tuple[NgramTotals, ...]
    shares: tuple[float, ...]

    @property
    def target_counts(self) -> np.ndarray:
        """For ``kl_reduction``: the pooled (B,) counts, or with separate targets each target's (T, B)."""
        return np.stack([t.counts for t in self.targets]) if self.ratio.ndim == 2 else pooled(list(self.targets)).counts

    def stats(self) -> dict:
        target = pooled(list(self.targets))
        return {
            "raw_documents_fitted": self.raw.documents,
            "raw_tokens_fitted": self.raw.tokens,
            "target_documents": target.documents,
            "target_tokens": target.tokens,
            "targets": [{"documents": t.documents, "tokens": t.tokens, "share": share} for t, share in zip(self.targets, self.shares)],
        }


def fit_model(raw: NgramTotals, targets: list[NgramTotals], config: DsirConfig) -> DsirModel:
    """The ``DsirModel`` of the raw and target totals (the pooled ratio, and each target's with separate targets)."""
    target = pooled(targets)
    counts = np.vstack([target.counts, *[t.counts for t in targets]]) if config.separate_targets else target.counts
    shares = target_shares([int(t.counts.sum()) for t in targets], config.target_proportions)
    return DsirModel(log_ratio(counts, raw.counts), raw, tuple(targets), tuple(shares))


class DsirScorer:
    """Texts -> (log weights, lengths) against one ``DsirModel``; build once per worker."""

    def __init__(self, model: DsirModel, config: DsirConfig):
        self._model, self._config = model, config
        self._hasher = NgramHasher(config)

    def score(self, texts: list[str], grams: NgramHashes | None = None) -> tuple[np.ndarray, np.ndarray]:
        """((D,) or (D, 1 + T) float64 log weights, (D,) int64 reference lengths); ``grams`` as ``featurize``'s."""
        features = self._hasher.featurize(texts, grams)
        return log_weights(features, self._model.ratio), document_lengths(features.n_tokens, self._config.ngrams)


# --- Beam wrappers -----------------------------------------------------------------------


class _HashingCombineFn(beam.CombineFn):
    """Base of the CombineFns that hash text: the hasher is built once per process and never pickled."""

    def __init__(self, config: DsirConfig):
        super().__init__()
        self._config = config
        self._hasher = None

    def __getstate__(self):
        return {**self.__dict__, "_hasher": None}

    def hasher(self) -> NgramHasher:
        if self._hasher is None:
            self._hasher = NgramHasher(self._config)
        return self._hasher


class NgramCountsCombineFn(_HashingCombineFn):
    """Lists of texts (batches) -> ``NgramTotals`` of their hashed n-grams; no input -> zeros.

    The accumulator is fixed-size; merges are sums, so any order gives the same result.
    """

    def create_accumulator(self):
        return NgramTotals(np.zeros(self._config.buckets, dtype=np.int64), 0, 0)

    def add_input(self, accumulator, texts):
        if not texts:
            return accumulator
        features = self.hasher().featurize(texts)
        counts = accumulator.counts + ngram_counts(features, self._config.buckets)
        return NgramTotals(counts, accumulator.documents + len(texts), accumulator.tokens + int(features.n_tokens.sum()))

    def merge_accumulators(self, accumulators):
        counts, documents, tokens = self.create_accumulator()
        for acc in accumulators:
            counts, documents, tokens = counts + acc.counts, documents + acc.documents, tokens + acc.tokens
        return NgramTotals(counts, documents, tokens)

    def extract_output(self, accumulator):
        return accumulator


class BudgetCountsCombineFn(_HashingCombineFn):
    """``(ids, texts)`` batches -> ``NgramTotals`` of the lowest rank slices within the raw token budget.

    The accumulator keeps, per slice of ``seeded.sample_rank(ids, seed)``, the n-gram counts, the
    documents and the tokens: a fixed (slices, B) table, summed by merges.
    """

    def create_accumulator(self):
        slices = budget_slices(self._config.buckets)
        return np.zeros((slices, self._config.buckets), np.int64), np.zeros(slices, np.int64), np.zeros(slices, np.int64)

    def add_input(self, accumulator, ids_and_texts):
        ids, texts = ids_and_texts
        if not texts:
            return accumulator
        counts, documents, tokens = accumulator
        doc_slice = slice_of(seeded.sample_rank(ids, self._config.seed), len(documents))
        features = self.hasher().featurize(texts)
        np.add.at(counts, (doc_slice[features.doc], features.bucket), 1)
        np.add.at(documents, doc_slice, 1)
        np.add.at(tokens, doc_slice, features.n_tokens)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for total, part in zip(merged, accumulator):
                total += part
        return merged

    def extract_output(self, accumulator):
        counts, documents, tokens = accumulator
        cutoff = budget_cutoff(tokens, self._config.raw_token_budget)
        return NgramTotals(counts[:cutoff].sum(axis=0), int(documents[:cutoff].sum()), int(tokens[:cutoff].sum()))


def raw_totals_combine(config: DsirConfig) -> beam.CombineFn:
    """The raw fit's CombineFn: ``(ids, texts)`` batches -> ``NgramTotals`` (all of them, or the budget subset)."""
    if config.raw_token_budget is not None:
        return BudgetCountsCombineFn(config)
    return _TextsOnly(NgramCountsCombineFn(config))


class _TextsOnly(beam.CombineFn):
    """A CombineFn of text lists fed ``(ids, texts)`` pairs."""

    def __init__(self, inner: beam.CombineFn):
        super().__init__()
        self._inner = inner

    def create_accumulator(self):
        return self._inner.create_accumulator()

    def add_input(self, accumulator, ids_and_texts):
        return self._inner.add_input(accumulator, ids_and_texts[1])

    def merge_accumulators(self, accumulators):
        return self._inner.merge_accumulators(accumulators)

    def extract_output(self, accumulator):
        return self._inner.extract_output(accumulator)


def _ids_and_texts(table: pa.Table, text_field: str, id_field: str) -> tuple[list, list[str]]:
    return table.column(id_field).to_pylist(), table.column(text_field).to_pylist()


def _texts(table: pa.Table, text_field: str) -> list[str]:
    return table.column(text_field).to_pylist()


def _model(raw: NgramTotals, *targets: NgramTotals, config: DsirConfig) -> DsirModel:
    return fit_model(raw, list(targets), config)


class FitDsir(beam.PTransform):
    """Raw record batches (Arrow tables) -> a singleton ``DsirModel`` fitted against the target(s).

    Args:
        targets: one PCollection of target record batches, or a list of them (one per target dataset).
        config: DsirConfig.
        text_field, id_field: the columns of the text and (for the raw token budget) the id.

    Example: ``model = raw | FitDsir(target, DsirConfig(buckets=4096))``.
    """

    def __init__(self, targets, config: DsirConfig = DsirConfig(), text_field: str = "text", id_field: str = "id"):
        super().__init__()
        self._targets = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        if not self._targets:
            raise ValueError("targets=[]; expected a target PCollection, or a list of one or more")
        if config.target_proportions is not None and len(config.target_proportions) != len(self._targets):
            raise ValueError(f"target_proportions={config.target_proportions}; expected one share per target ({len(self._targets)})")
        self._config, self._text_field, self._id_field = config, text_field, id_field

    def expand(self, tables):
        config = self._config
        raw = (
            tables
            | "IdsAndTexts" >> beam.Map(_ids_and_texts, self._text_field, self._id_field)
            | "FitRaw" >> beam.CombineGlobally(raw_totals_combine(config))
        )
        fits = [
            target
            | f"TargetTexts{t}" >> beam.Map(_texts, self._text_field)
            | f"FitTarget{t}" >> beam.CombineGlobally(NgramCountsCombineFn(config))
            for t, target in enumerate(self._targets)
        ]
        return raw | "FitModel" >> beam.Map(_model, *[beam.pvalue.AsSingleton(f) for f in fits], config=config)


class _ScoreTablesFn(beam.DoFn):
    """Record batch -> the batch with ``winnow_dsir_log_weight`` (and per-target weights) appended."""

    def __init__(self, config: DsirConfig, text_field: str):
        self._config, self._text_field = config, text_field
        self._scorer = None

    def process(self, table: pa.Table, model: DsirModel):
        if self._scorer is None:  # side inputs are not available in setup(): the first batch builds it
            self._scorer = DsirScorer(model, self._config)
        weights, _ = self._scorer.score(table.column(self._text_field).to_pylist())
        if weights.ndim == 1:
            yield table.append_column(schema.field(schema.DSIR_LOG_WEIGHT), pa.array(weights))
            return
        table = table.append_column(schema.field(schema.DSIR_LOG_WEIGHT), pa.array(weights[:, 0]))
        yield table.append_column(schema.field(schema.DSIR_TARGET_LOG_WEIGHTS), pa.array(weights[:, 1:].tolist()))


class ScoreDsir(beam.PTransform):
    """Record batches (Arrow tables) -> the same batches with DSIR's log importance weight appended.

    Args:
        model: singleton PCollection of a ``DsirModel`` (``FitDsir``).
        config, text_field: as ``FitDsir``'s.

    Example: ``scored = raw | ScoreDsir(raw | FitDsir(target))``.
    """

    def __init__(self, model: beam.PCollection, config: DsirConfig = DsirConfig(), text_field: str = "text"):
        super().__init__()
        self._model, self._config, self._text_field = model, config, text_field

    def expand(self, tables):
        return tables | "Score" >> beam.ParDo(_ScoreTablesFn(self._config, self._text_field), beam.pvalue.AsSingleton(self._model))
