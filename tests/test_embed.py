"""Tests for transforms/embed.py: hand-worked tf-idf, scikit-learn references, the SVD, the seeded fit
sample, and FitProjection / Embed (Arrow tables in and out)."""

import math
import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer

from examples.make_demo_corpus import build
from tests.helpers import local_pipeline
from winnow.transforms import seeded
from winnow.transforms.embed import (
    DEFAULT_DIM,
    EMBEDDING,
    SAMPLE_TEXT_CHARS,
    Embed,
    EmbedConfig,
    FitProjection,
    embed_texts,
    fallback_vectors,
    fit_on_sample,
    fit_projection,
    make_vectorizer,
    projection_stats,
    sample_entries,
    tfidf_rows,
)
from winnow.transforms.text import TokenHasher


@pytest.fixture(scope="module")
def corpus():
    """The demo corpus with 60 code chunks: ~360 records with known exact and near copies."""
    raw, _ = build(60)
    return raw


def _feature(vectorizer, token: str) -> int:
    return int(vectorizer.transform([token]).indices[0])


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, quoted",
    [
        ({"dim": 0}, "dim=0"),
        ({"dim": True}, "dim=True"),
        ({"analyzer": "bytes"}, "analyzer='bytes'"),
        ({"ngram_range": (3, 2)}, "ngram_range=(3, 2)"),
        ({"ngram_range": (0, 2)}, "ngram_range=(0, 2)"),
        ({"n_features": 1}, "n_features=1"),
        ({"max_features": 2**21}, "max_features=2097152"),
        ({"projection": "pca"}, "projection='pca'"),
        ({"sample_size": 0}, "sample_size=0"),
        ({"seed": -1}, "seed=-1"),
        ({"embedding_field": ""}, "embedding_field=''"),
    ],
)
def test_config_rejects_bad_values_quoting_them(kwargs, quoted):
    with pytest.raises(ValueError, match=f"^{quoted.replace('(', '[(]').replace(')', '[)]')}"):
        EmbedConfig(**kwargs)


def test_config_defaults_and_list_ngram_range():
    config = EmbedConfig(ngram_range=[2, 3])
    assert config.ngram_range == (2, 3)
    assert config.hashed_dim == DEFAULT_DIM == 256
    assert EmbedConfig(dim=32).hashed_dim == 32
    defaults = EmbedConfig()
    assert (defaults.analyzer, defaults.ngram_range, defaults.projection, defaults.seed) == ("word", (1, 2), "svd", 0)
    with pytest.raises(ValueError, match="ngram_range"):
        EmbedConfig(ngram_range=(1,))


# --- core ------------------------------------------------------------------------------------


def test_vectorizer_counts_wordpunct_unigrams_and_bigrams():
    vectorizer = make_vectorizer(EmbedConfig(ngram_range=(1, 2)))
    row = vectorizer.transform(["A a, b"])  # tokens a a , b
    counts = dict(zip(row.indices.tolist(), row.data.tolist()))
    assert counts[_feature(vectorizer, "a")] == 2.0
    assert counts[_feature(vectorizer, ",")] == 1.0
    assert sum(counts.values()) == 4 + 3  # 4 unigrams + 3 bigrams
    char = make_vectorizer(EmbedConfig(analyzer="char", ngram_range=(3, 3))).transform(["ABCD"])
    assert char.nnz == 2 and char.data.sum() == 2  # "abc", "bcd" after case folding


def test_tfidf_rows_hand_worked():
    counts = sparse.csr_matrix(np.array([[1.0, 3.0, 0.0, 5.0], [0.0, 0.0, 2.0, 0.0]], dtype=np.float32))
    features = np.array([0, 1, 2])  # feature 3 is outside the vocabulary
    idf = np.array([1.0, 2.0, 1.5], dtype=np.float32)
    got = tfidf_rows(counts, features, idf).toarray()
    row0 = np.array([1.0, (1 + math.log(3)) * 2.0, 0.0])
    expected = np.vstack([row0 / np.linalg.norm(row0), [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_fit_projection_vocabulary_and_idf_by_hand():
    config = EmbedConfig(ngram_range=(1, 1), dim=4)
    vectorizer = make_vectorizer(config)
    projection = fit_projection(["a b", "a c", "a b"], vectorizer, config)
    a, b = _feature(vectorizer, "a"), _feature(vectorizer, "b")
    assert projection.features.tolist() == sorted([a, b])  # c has df 1 < MIN_DF
    idf = dict(zip(projection.features.tolist(), projection.idf.tolist()))
    assert idf[a] == pytest.approx(math.log(4 / 4) + 1)
    assert idf[b] == pytest.approx(math.log(4 / 3) + 1)
    capped = fit_projection(["a b", "a c", "a b"], vectorizer, EmbedConfig(ngram_range=(1, 1), dim=4, max_features=1))
    assert capped.features.tolist() == [a]  # the highest document frequency wins
    assert projection.components.shape == (2, 4)
    assert not projection.components[:, 2:].any()  # min(dim, n, |V|) = 2 components, rest zero


def test_tfidf_matches_scikit_learn_sublinear_smooth_idf(corpus):
    config = EmbedConfig(max_features=2**20)
    vectorizer = make_vectorizer(config)
    texts = [r["text"] for r in corpus[:150]]
    projection = fit_projection(texts, vectorizer, config)
    counts = vectorizer.transform(texts)
    reference = TfidfTransformer(sublinear_tf=True).fit_transform(counts[:, projection.features])
    ours = tfidf_rows(counts, projection.features, projection.idf)
    np.testing.assert_allclose(ours.toarray(), reference.toarray(), atol=1e-6)


def test_svd_projection_captures_the_exact_top_singular_energy(corpus):
    config = EmbedConfig(dim=16, max_features=2**20)
    vectorizer = make_vectorizer(config)
    texts = [r["text"] for r in corpus[:150]]
    projection = fit_projection(texts, vectorizer, config)
    weights = tfidf_rows(vectorizer.transform(texts), projection.features, projection.idf).toarray()
    exact = np.linalg.svd(weights.astype(np.float64), compute_uv=False)
    assert projection.energy == pytest.approx(np.sum(exact[:16] ** 2) / np.sum(exact**2), rel=0.02)
    gram = projection.components.T.astype(np.float64) @ projection.components
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-4)  # orthonormal singular vectors


def test_random_projection_is_seeded_gaussian():
    config = EmbedConfig(dim=8, projection="random", seed=5, ngram_range=(1, 1))
    vectorizer = make_vectorizer(config)
    projection = fit_projection(["a b", "a b c", "c d", "d a"], vectorizer, config)
    expected = np.random.default_rng(5).standard_normal((len(projection.features), 8)) / math.sqrt(8)
    np.testing.assert_allclose(projection.components, expected.astype(np.float32))
    assert projection.energy is None


def test_embeddings_are_unit_rows_batch_independent_and_find_copies(corpus):
    config = EmbedConfig(dim=64)
    vectorizer = make_vectorizer(config)
    by_id = {r["id"]: r for r in corpus}
    projection = fit_projection([r["text"] for r in sorted(corpus, key=lambda r: r["id"])], vectorizer, config)
    texts = [r["text"] for r in corpus]
    together, empty = embed_texts(texts, vectorizer, projection)
    assert together.shape == (len(texts), 64) and together.dtype == np.float32 and not empty.any()
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    alone = np.vstack([embed_texts([t], vectorizer, projection)[0] for t in texts[:40]])
    assert np.array_equal(together[:40], alone)  # the same bits whatever the batch
    index = {r["id"]: i for i, r in enumerate(corpus)}
    copies = [(index[r["id"]], index[r["copy_of"]]) for r in corpus if r["copy_of"] in by_id]
    cosines = np.array([together[i] @ together[j] for i, j in copies])
    assert cosines.min() > 0.9  # exact copies are identical after case folding, near copies close
    originals = [i for i, r in enumerate(corpus) if r["variant"] == "original"]
    spread = together[originals] @ together[originals].T
    assert np.median(spread) < 0.3


def test_no_vocabulary_documents_get_text_seeded_unit_vectors():
    config = EmbedConfig(dim=256, ngram_range=(1, 1))
    vectorizer = make_vectorizer(config)
    projection = fit_projection(["alpha beta", "alpha gamma", "beta gamma"], vectorizer, config)
    vectors, empty = embed_texts(["zeta eta", "theta iota", "zeta eta", "alpha"], vectorizer, projection)
    assert empty.tolist() == [True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(vectors[0], vectors[2])
    assert abs(float(vectors[0] @ vectors[1])) < 0.3
    np.testing.assert_array_equal(vectors[:1], fallback_vectors(["zeta eta"], 256))


def test_empty_fit_sample_still_embeds_every_text():
    config = EmbedConfig(dim=8)
    vectorizer = make_vectorizer(config)
    projection = fit_projection([], vectorizer, config)
    assert projection.sample_size == 0 and projection.components.shape == (0, 8)
    vectors, empty = embed_texts(["some text"], vectorizer, projection)
    assert empty.tolist() == [True] and np.linalg.norm(vectors[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("ngram_range, max_n", [((1, 2), 2), ((1, 2), 3), ((2, 2), 2), ((2, 3), 3), ((1, 1), 2)])
def test_transform_with_shared_ngram_hashes_equals_hashing_itself(corpus, ngram_range, max_n):
    """``grams`` covering ``ngram_range`` (hashed once for DSIR and the embedding) give the same counts."""
    vectorizer = make_vectorizer(EmbedConfig(ngram_range=ngram_range))
    texts = [r["text"] for r in corpus[:30]] + ["", "x"]
    shared = TokenHasher().ngram_hashes(texts, max_n)
    own = vectorizer.transform(texts)
    assert (vectorizer.transform(texts, shared) != own).nnz == 0
    assert own.shape == (len(texts), 2**20) and own.dtype == np.float32


def test_embed_texts_with_shared_ngram_hashes(corpus):
    config = EmbedConfig(dim=16)
    vectorizer = make_vectorizer(config)
    texts = [r["text"] for r in corpus[:40]]
    projection = fit_projection(texts, vectorizer, config)
    vectors, empty = embed_texts(texts, vectorizer, projection)
    shared, shared_empty = embed_texts(texts, vectorizer, projection, TokenHasher().ngram_hashes(texts, 3))
    np.testing.assert_array_equal(shared, vectors)
    np.testing.assert_array_equal(shared_empty, empty)


def test_embed_texts_of_no_texts_with_a_char_analyzer():
    config = EmbedConfig(dim=4, analyzer="char_wb", ngram_range=(3, 3))
    vectorizer = make_vectorizer(config)
    projection = fit_projection(["abc abd", "abc abe"], vectorizer, config)
    vectors, empty = embed_texts([], vectorizer, projection)
    assert vectors.shape == (0, 4) and empty.shape == (0,)


def test_embed_texts_of_no_texts_with_the_word_analyzer():
    config = EmbedConfig(dim=4)
    vectorizer = make_vectorizer(config)
    projection = fit_projection(["a b", "a c"], vectorizer, config)
    vectors, empty = embed_texts([], vectorizer, projection)
    assert vectors.shape == (0, 4) and vectors.dtype == np.float32 and empty.shape == (0,)


# --- the fit sample --------------------------------------------------------------------------


def test_sample_entries_are_seeded_ranks_ids_and_cut_texts():
    long_text = "w" * (SAMPLE_TEXT_CHARS + 50)
    entries = sample_entries(["a", 7], ["short", long_text], seed=3)
    ranks = seeded.sample_rank(["a", 7], 3).tolist()
    assert entries == [(ranks[0], "a", "short"), (ranks[1], "7", "w" * SAMPLE_TEXT_CHARS)]
    assert sample_entries([], [], seed=3) == []


def test_fit_on_sample_fits_in_id_order_whatever_the_entry_order(corpus):
    config = EmbedConfig(dim=8)
    records = corpus[:50]
    entries = sample_entries([r["id"] for r in records], [r["text"] for r in records], seed=0)
    shuffled = list(entries)
    random.Random(1).shuffle(shuffled)
    projection = fit_on_sample(shuffled, config)
    expected = fit_projection([r["text"] for r in sorted(records, key=lambda r: r["id"])], make_vectorizer(config), config)
    np.testing.assert_array_equal(projection.features, expected.features)
    np.testing.assert_array_equal(projection.idf, expected.idf)
    np.testing.assert_array_equal(projection.components, expected.components)
    assert projection.sample_size == 50 and projection.energy == expected.energy


def test_projection_stats():
    config = EmbedConfig(ngram_range=(1, 1), dim=4)
    projection = fit_projection(["a b", "a c", "a b"], make_vectorizer(config), config)
    stats = projection_stats(projection, config)
    assert stats == {"mode": "hashed", "dim": 4, "analyzer": "word", "ngram_range": [1, 1], "projection": "svd",
                     "sample_size": 3, "vocabulary": 2, "svd_energy": pytest.approx(1.0, rel=1e-6)}
    random_projection = EmbedConfig(ngram_range=(1, 1), dim=4, projection="random")
    stats = projection_stats(fit_projection(["a b", "a c"], make_vectorizer(random_projection), random_projection), random_projection)
    assert stats["svd_energy"] is None and stats["vocabulary"] == 1


# --- PTransforms -----------------------------------------------------------------------------


def test_fit_projection_and_embed_pipeline_tables_in_and_out(corpus):
    config = EmbedConfig(dim=32, sample_size=100, seed=4)
    records = [{"id": r["id"], "text": r["text"], "source": r["source"]} for r in corpus[:120]]
    # the expected sample: the 100 smallest seeded ranks, fitted in id order
    ranks = seeded.sample_rank([r["id"] for r in records], 4)
    sample = sorted((records[i] for i in np.argsort(ranks)[:100]), key=lambda r: r["id"])
    vectorizer = make_vectorizer(config)
    projection = fit_projection([r["text"] for r in sample], vectorizer, config)
    vectors, _ = embed_texts([r["text"] for r in records], vectorizer, projection)
    expected = {r["id"]: v.tolist() for r, v in zip(records, vectors)}

    def check_tables(tables):
        assert sorted(t.num_rows for t in tables) == [50, 70]
        got = {}
        for table in tables:
            assert table.column_names == ["id", "text", "source", EMBEDDING]
            assert table.schema.field(EMBEDDING).type == pa.list_(pa.float32(), 32)
            got.update(zip(table.column("id").to_pylist(), table.column(EMBEDDING).to_pylist()))
        assert got == expected  # the same float32 bits as the core

    with local_pipeline() as p:
        tables = p | beam.Create([pa.Table.from_pylist(records[:50]), pa.Table.from_pylist(records[50:])])
        fitted = tables | FitProjection(config)
        stats = fitted | beam.Map(projection_stats, config)
        assert_that(stats, equal_to([projection_stats(projection, config)]), label="CheckProjection")
        assert_that(tables | Embed(fitted, config), check_tables, label="CheckTables")
