"""Tests for transforms/embed.py: hand-worked tf-idf, scikit-learn references, the SVD, the PTransform."""

import hashlib
import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.util import assert_that, equal_to
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer

from examples.make_demo_corpus import build
from tests.helpers import local_pipeline
from winnow.transforms import schema, vendi
from winnow.transforms.embed import (
    DEFAULT_DIM,
    EMBEDDING,
    NAMESPACE,
    Embed,
    EmbedConfig,
    embed_texts,
    fallback_vectors,
    field_vector,
    fit_projection,
    make_vectorizer,
    sample_rank,
    tfidf_rows,
)


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
    with pytest.raises(TypeError, match="EmbedConfig"):
        Embed({"dim": 8})


# --- core ------------------------------------------------------------------------------------


def test_sample_rank_is_a_seeded_blake2b():
    expected = hashlib.blake2b(b"3:doc-1", digest_size=8, person=b"winnow-sample").digest()
    assert sample_rank(3, "doc-1") == int.from_bytes(expected, "big")
    assert sample_rank(3, "doc-1") != sample_rank(4, "doc-1")
    assert sample_rank(3, "doc-1") != sample_rank(3, "doc-2")


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


@pytest.mark.parametrize(
    "value, dim, why",
    [
        (None, 2, vendi.NO_EMBEDDING),
        (["a", "b"], 2, vendi.NOT_NUMERIC),
        ([[1.0, 2.0]], 2, vendi.BAD_SHAPE),
        ([1.0, float("nan")], 2, vendi.NON_FINITE),
        ([0.0, 0.0], 2, vendi.ZERO_NORM),
        ([1.0, 2.0, 3.0], 2, vendi.DIM_MISMATCH),
    ],
)
def test_field_vector_rejects_unusable_values(value, dim, why):
    assert field_vector(value, dim) == (None, why)


def test_field_vector_normalizes_and_accepts_any_length_without_dim():
    vector, why = field_vector([3, 4], 2)
    assert why is None and vector.dtype == np.float32
    np.testing.assert_allclose(vector, [0.6, 0.8])
    assert field_vector([1.0, 0.0, 0.0], None)[0].shape == (3,)


# --- PTransform ------------------------------------------------------------------------------


def test_embed_pipeline_matches_the_core_and_routes_bad_and_dropped_records(corpus):
    config = EmbedConfig(dim=32, sample_size=10_000)
    records = corpus[:120]
    dropped = schema.drop({"id": "zz-dropped", "text": "a short one"}, schema.TOO_SHORT)
    bad = {"id": "zz-bad", "text": None}
    vectorizer = make_vectorizer(config)
    projection = fit_projection([r["text"] for r in sorted(records, key=lambda r: r["id"])], vectorizer, config)
    vectors, _ = embed_texts([r["text"] for r in records], vectorizer, projection)
    expected = {r["id"]: v.astype("<f4").tobytes() for r, v in zip(records, vectors)}
    pipeline = local_pipeline()
    out = pipeline | beam.Create(records + [dropped, bad]) | Embed(config)
    got = out["records"] | beam.Map(lambda r: (r["id"], r.get(EMBEDDING)))  # float32 little-endian bytes
    assert_that(got, equal_to(list(expected.items()) + [("zz-dropped", None)]), label="records")
    reasons = out["errors"] | beam.Map(lambda e: (e["source"], e["reason"], "zz-bad" in e["raw"]))
    assert_that(reasons, equal_to([("winnow.embed", "embed_failed: invalid_text", True)]), label="errors")
    summary = out["stats"] | beam.Map(lambda s: (s["mode"], s["dim"], s["sample_size"], s["vocabulary"]))
    assert_that(summary, equal_to([("hashed", 32, 120, len(projection.features))]), label="stats")
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    exits = {c.key.metric.name: c.committed for c in counters if c.committed}
    assert exits == {"embedded": 120, "passed_through": 1, "invalid_text": 1}  # one counted exit per record


def test_embed_pipeline_reads_a_field_with_the_most_common_dimension():
    records = [{"id": f"r{i}", "text": "t", "vec": [float(i + 1), 0.0, 1.0]} for i in range(5)]
    records += [
        {"id": "short", "text": "t", "vec": [1.0, 2.0]},
        {"id": "zero", "text": "t", "vec": [0.0, 0.0, 0.0]},
        schema.drop({"id": "gone", "text": "t"}, schema.EXACT_DUPLICATE),
    ]
    with local_pipeline() as pipeline:
        out = pipeline | beam.Create(records) | Embed(EmbedConfig(embedding_field="vec"))
        norms = out["records"] | beam.Map(
            lambda r: (r["id"], round(float(np.linalg.norm(np.frombuffer(r[EMBEDDING], "<f4"))), 5) if EMBEDDING in r else None)
        )
        assert_that(norms, equal_to([(f"r{i}", 1.0) for i in range(5)] + [("gone", None)]), label="records")
        reasons = out["errors"] | beam.Map(lambda e: e["reason"])
        assert_that(reasons, equal_to(["embed_failed: dim_mismatch", "embed_failed: zero_norm"]), label="errors")
        assert_that(out["stats"], equal_to([{"mode": "field", "field": "vec", "dim": 3}]), label="stats")
