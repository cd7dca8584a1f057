"""Document embeddings without a model download: hashed n-gram TF-IDF projected to a dense unit vector.

Method. For a document i and a hashed n-gram feature j, with ``c_ij`` the count:

    w_ij  = (1 + ln c_ij) * idf_j   for j in V, c_ij > 0        (sublinear tf, Salton & Buckley 1988)
    idf_j = ln((1 + n_s) / (1 + df_j)) + 1                      (scikit-learn's smoothed idf)
    e_i   = normalize(normalize(w_i) @ P)                       (L2 normalisation, P: (|V|, dim))

Features j in [0, F), F = ``n_features``: for word n-grams (the default) the n-gram's 64-bit
``text.TokenHasher`` hash mapped to F (``text.hash_to_range``; the tokens of
``text.wordpunct_tokens``, found and hashed for a whole batch in numpy); for character n-grams
of ``text.normalize_text`` scikit-learn's ``HashingVectorizer`` (murmurhash3 mod F).
``n_s`` is the size of the fit sample and ``df_j`` the number of sample documents containing j.
The vocabulary V is the ``max_features`` features with the highest ``df_j`` (ties to the lower
index) among those with ``df_j >= MIN_DF``. The projection P is fitted once, on the sample:

- ``svd`` (default): the top ``dim`` right singular vectors of the sample's tf-idf matrix, i.e.
  latent semantic analysis (Deerwester et al. 1990), by randomized SVD (Halko et al. 2011) with
  the config's seed. The stats report the captured energy ``sum(s_k^2) / ||W||_F^2``.
- ``random``: a Gaussian random projection ``P_jk ~ N(0, 1/dim)`` drawn from the seed
  (Johnson-Lindenstrauss); nothing but the idf is learnt.

The defaults (word 1-2 grams, SVD) keep each document's nearest neighbours under the exact tf-idf
cosine about as well as character n-grams at a fraction of the cost, and much better than a
random projection; the measurements are in ``benchmarks/RESULTS.md`` ("k-means").

The fit sample is the ``sample_size`` records with the smallest ``seeded.sample_rank(id, seed)``,
chosen by a fixed-size ``Top`` combine (never by collecting the corpus), sorted by id before the
fit, so every runner fits the same projection. Sample texts are cut to ``SAMPLE_TEXT_CHARS``
characters to bound the sample's memory.

Deviations and edge cases:
- n-grams outside V (unseen in the sample, rarer than ``MIN_DF`` or past ``max_features``) are
  ignored. A document with no n-gram in V gets a pseudo-random unit vector seeded by the hash of
  its text instead of the zero vector: it is nearly orthogonal to everything (as it shares no
  feature with anything), identical texts still embed identically, and every embedding keeps
  unit norm (cosine similarity and the Vendi score stay defined). Counted as ``no_vocabulary``.
- The SVD keeps at most ``min(dim, n_s, |V|)`` components; the remaining columns are zero.

Precomputed embeddings. With ``embedding_field`` the vectors are read from that record field
(``vectors.unit_vectors``), L2-normalised, and checked to have length ``dim`` (by default the
most common length in the data); an unusable one makes its record a dead letter.

Output: a (dim,) float32 unit vector per document.
"""

import dataclasses
import hashlib
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from scipy import sparse

from winnow.transforms import seeded, text
from winnow.transforms.validation import check_choice, check_int, is_int

if typing.TYPE_CHECKING:  # scikit-learn takes a second to import: the functions that use it import it
    from sklearn.feature_extraction.text import HashingVectorizer

NAMESPACE = "winnow.embed"
EMBEDDING = "winnow_embedding"  # the column ``Embed`` appends (fixed_size_list<float32>); the job keeps embeddings in its features table
DEFAULT_DIM = 256
MIN_DF = 2
SAMPLE_TEXT_CHARS = 20_000
ANALYZERS = ("word", "char_wb", "char")
PROJECTIONS = ("svd", "random")
MAX_HASH_FEATURES = 2**31 - 1  # murmurhash3_32 indices (char analyzers); word features need < 2**32


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """Settings of ``Embed``.

    Attributes:
        dim: embedding width. Hashed mode: the projection width, None for ``DEFAULT_DIM`` (256).
            ``embedding_field`` mode: the required vector length, None for the most common
            length in the data.
        analyzer: n-gram kind: ``"word"`` (``text.wordpunct_tokens``), ``"char_wb"``
            (characters inside word boundaries) or ``"char"``, both on ``text.normalize_text``.
        ngram_range: (min_n, max_n) n-gram sizes, inclusive.
        n_features: hash space size F of the n-gram counts.
        max_features: vocabulary cap |V| (the sample's most frequent features).
        projection: ``"svd"`` or ``"random"`` (see the module docstring).
        sample_size: number of records the idf and projection are fitted on.
        seed: seed of the sample choice, the SVD and the random projection; every worker uses it.
        embedding_field: read precomputed embeddings from this field instead of hashing text.
    """

    dim: int | None = None
    analyzer: str = "word"
    ngram_range: tuple[int, int] = (1, 2)
    n_features: int = 2**20
    max_features: int = 2**14
    projection: str = "svd"
    sample_size: int = 10_000
    seed: int = 0
    embedding_field: str | None = None

    def __post_init__(self):
        check_int("dim", self.dim, 1, allow_none=True)
        check_choice("analyzer", self.analyzer, ANALYZERS)
        bounds = tuple(self.ngram_range) if isinstance(self.ngram_range, (tuple, list)) else ()
        if len(bounds) != 2 or not all(is_int(v) for v in bounds) or not 1 <= bounds[0] <= bounds[1]:
            raise ValueError(f"ngram_range={self.ngram_range!r}; expected (min_n, max_n) ints, 1 <= min_n <= max_n")
        object.__setattr__(self, "ngram_range", bounds)
        check_int("n_features", self.n_features, 2, MAX_HASH_FEATURES)
        check_int("max_features", self.max_features, 1, self.n_features)
        check_choice("projection", self.projection, PROJECTIONS)
        check_int("sample_size", self.sample_size, 1)
        check_int("seed", self.seed, 0)
        field = self.embedding_field
        if field is not None and (not isinstance(field, str) or not field):
            raise ValueError(f"embedding_field={self.embedding_field!r}; expected None or a non-empty string")

    @property
    def hashed_dim(self) -> int:
        """Width of hashed-mode embeddings."""
        return DEFAULT_DIM if self.dim is None else self.dim


# --- core ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Projection:
    """Fitted state of hashed-mode embeddings (pickled once into a side input).

    Attributes:
        features: (m,) int64 sorted hashed feature indices, the vocabulary V.
        idf: (m,) float32 idf of each feature.
        components: (m, dim) float32 projection P.
        sample_size: n_s, records the fit saw.
        energy: fraction of the sample tf-idf matrix's squared Frobenius norm the SVD captures
            (None for a random projection).
    """

    features: np.ndarray
    idf: np.ndarray
    components: np.ndarray
    sample_size: int
    energy: float | None


class WordNgramVectorizer:
    """Texts -> (n, F) float32 csr counts of their hashed ``wordpunct`` n-grams, ``min_n <= k <= max_n``.

    Feature of an n-gram: ``hash_to_range(TokenHasher hash, F)``. Stateless but for the
    hasher's per-process tables; the interface of ``HashingVectorizer.transform``.
    """

    def __init__(self, ngram_range: tuple[int, int], n_features: int):
        self.ngram_range, self.n_features = ngram_range, n_features
        self._hasher = text.TokenHasher()

    def transform(self, texts: list[str], grams: text.NgramHashes | None = None) -> sparse.csr_matrix:
        """``grams``: the texts' ``TokenHasher.ngram_hashes`` covering ``ngram_range``, when already computed."""
        min_n, max_n = self.ngram_range
        grams = (grams or self._hasher.ngram_hashes(texts, max_n, min_n)).orders(min_n, max_n)
        features = text.hash_to_range(grams.hash, self.n_features)
        ones = np.ones(len(features), dtype=np.float32)
        counts = sparse.csr_matrix((ones, (grams.doc, features)), shape=(len(texts), self.n_features))
        counts.sum_duplicates()  # canonical: each feature once per row, indices sorted
        return counts


Vectorizer = typing.Union[WordNgramVectorizer, "HashingVectorizer"]


def make_vectorizer(config: EmbedConfig) -> Vectorizer:
    """The stateless n-gram hasher of ``config``: texts -> (n, n_features) float32 raw counts."""
    if config.analyzer == "word":
        return WordNgramVectorizer(config.ngram_range, config.n_features)
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        analyzer=config.analyzer,
        ngram_range=config.ngram_range,
        n_features=config.n_features,
        preprocessor=text.normalize_text,
        lowercase=False,  # normalize_text already case-folds
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    )


def tfidf_rows(counts, features: np.ndarray, idf: np.ndarray):
    """Raw hashed counts (n, F) csr -> unit-norm sublinear tf-idf rows over V, (n, m) csr float32."""
    weights = counts[:, features].tocsr()
    weights.data = (1.0 + np.log(weights.data)) * idf[weights.indices]
    norms = np.sqrt(np.asarray(weights.multiply(weights).sum(axis=1)).ravel())
    weights.data /= np.repeat(np.where(norms > 0, norms, 1.0), np.diff(weights.indptr))
    return weights


def fit_projection(texts: list[str], vectorizer: Vectorizer, config: EmbedConfig) -> Projection:
    """Fit the vocabulary, idf and projection on the sample ``texts`` (in a fixed order).

    Expects a validated config; any number of texts, including none.
    """
    dim = config.hashed_dim
    if texts:
        counts = vectorizer.transform(texts)
    else:  # HashingVectorizer cannot transform an empty list
        counts = sparse.csr_matrix((0, config.n_features), dtype=np.float32)
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])  # csr rows hold each feature once
    candidates = np.flatnonzero(df >= MIN_DF)
    by_df = candidates[np.lexsort((candidates, -df[candidates]))]
    features = np.sort(by_df[: config.max_features]).astype(np.int64)
    idf = (np.log((1.0 + n) / (1.0 + df[features])) + 1.0).astype(np.float32)
    components = np.zeros((len(features), dim), dtype=np.float32)
    energy = None
    if config.projection == "random":
        rng = np.random.default_rng(config.seed)
        components[:] = rng.standard_normal((len(features), dim)) / np.sqrt(dim)
    else:
        weights = tfidf_rows(counts, features, idf)
        energy = 0.0
        n_components = min(dim, n, len(features))
        if n_components > 0 and weights.nnz:
            from sklearn.utils.extmath import randomized_svd

            _, singular, vt = randomized_svd(weights, n_components, random_state=config.seed)
            components[:, : vt.shape[0]] = vt.T
            energy = float(np.sum(singular**2) / np.sum(weights.data.astype(np.float64) ** 2))
    return Projection(features, idf, components, n, energy)


def fallback_vectors(texts: list[str], dim: int) -> np.ndarray:
    """(len(texts), dim) float32 unit vectors drawn from a generator seeded by each text's blake2b."""
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, doc in enumerate(texts):
        seed = int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "big")
        vector = np.random.default_rng(seed).standard_normal(dim)
        out[i] = vector / np.linalg.norm(vector)
    return out


def embed_texts(
    texts: list[str], vectorizer: Vectorizer, projection: Projection, grams: text.NgramHashes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> ((n, dim) float32 unit rows, (n,) bool: the row is a no-vocabulary fallback).

    Every step is row by row (sparse products, per-row norms), so a document's embedding does
    not depend on the batch it is computed in. ``grams``: the texts' n-gram hashes, when the
    word vectorizer's were computed already (``WordNgramVectorizer.transform``).
    """
    if not texts:  # HashingVectorizer cannot transform an empty list
        return np.zeros((0, projection.components.shape[1]), np.float32), np.zeros(0, dtype=bool)
    counts = vectorizer.transform(texts, grams) if grams is not None else vectorizer.transform(texts)
    weights = tfidf_rows(counts, projection.features, projection.idf)
    dense = np.asarray(weights @ projection.components, dtype=np.float32)
    norms = np.linalg.norm(dense, axis=1)
    empty = norms == 0.0
    dense[~empty] /= norms[~empty, np.newaxis]
    if empty.any():
        dense[empty] = fallback_vectors([t for t, e in zip(texts, empty) if e], dense.shape[1])
    return dense, empty


# --- Beam wrappers ---------------------------------------------------------------------------


def sample_entries(ids: list, texts: list[str], seed: int) -> list[tuple[int, str, str]]:
    """``(rank, str(id), text cut to SAMPLE_TEXT_CHARS)``: the entries the fit sample is the smallest of."""
    ranks = seeded.sample_rank(ids, seed).tolist()
    return [(rank, str(doc_id), doc[:SAMPLE_TEXT_CHARS]) for rank, doc_id, doc in zip(ranks, ids, texts)]


def fit_on_sample(entries: list[tuple[int, str, str]], config: EmbedConfig) -> Projection:
    """The ``Projection`` of a sample of ``sample_entries``, fitted in id order (runner-independent)."""
    texts = [doc for _, _, doc in sorted(entries, key=lambda entry: entry[1])]
    return fit_projection(texts, make_vectorizer(config), config)


def projection_stats(projection: Projection, config: EmbedConfig) -> dict:
    return {
        "mode": "hashed",
        "dim": config.hashed_dim,
        "analyzer": config.analyzer,
        "ngram_range": list(config.ngram_range),
        "projection": config.projection,
        "sample_size": projection.sample_size,
        "vocabulary": int(len(projection.features)),
        "svd_energy": projection.energy,
    }


def _table_entries(table: pa.Table, text_field: str, id_field: str, seed: int):
    return sample_entries(table.column(id_field).to_pylist(), table.column(text_field).to_pylist(), seed)


class FitProjection(beam.PTransform):
    """Record batches (Arrow tables) -> a singleton ``Projection`` fitted on a seeded sample.

    The sample (``config.sample_size`` records with the smallest seeded rank) is chosen by a
    fixed-size Top combine, never by collecting the corpus.
    """

    def __init__(self, config: EmbedConfig = EmbedConfig(), text_field: str = "text", id_field: str = "id"):
        super().__init__()
        self._config, self._text_field, self._id_field = config, text_field, id_field

    def expand(self, tables):
        return (
            tables
            | "SampleEntries" >> beam.FlatMap(_table_entries, self._text_field, self._id_field, self._config.seed)
            | "SampleTexts" >> beam.combiners.Top.Smallest(self._config.sample_size)
            | "FitProjection" >> beam.Map(fit_on_sample, self._config)
        )


class _EmbedTablesFn(beam.DoFn):
    """Record batch -> the batch with ``winnow_embedding`` (fixed_size_list<float32>[dim], unit norm) appended."""

    def __init__(self, config: EmbedConfig, text_field: str):
        self._config, self._text_field = config, text_field

    def setup(self):
        self._vectorizer = make_vectorizer(self._config)

    def process(self, table: pa.Table, projection: Projection):
        vectors, _ = embed_texts(table.column(self._text_field).to_pylist(), self._vectorizer, projection)
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
        yield table.append_column(pa.field(EMBEDDING, column.type), column)


class Embed(beam.PTransform):
    """Record batches (Arrow tables) -> the same batches with ``winnow_embedding`` appended.

    Example: ``embedded = raw | Embed(raw | FitProjection(EmbedConfig(dim=128)), EmbedConfig(dim=128))``.
    """

    def __init__(self, projection: beam.PCollection, config: EmbedConfig = EmbedConfig(), text_field: str = "text"):
        super().__init__()
        self._projection, self._config, self._text_field = projection, config, text_field

    def expand(self, tables):
        return tables | "Embed" >> beam.ParDo(_EmbedTablesFn(self._config, self._text_field), beam.pvalue.AsSingleton(self._projection))
