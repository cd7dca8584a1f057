"""Tests for pipelines/score.py's pure helpers."""

import numpy as np

from winnow.pipelines import score
from winnow.transforms import embed, seeded


def test_the_k_means_sample_is_the_records_of_smallest_rank_each_embedded_from_its_own_text():
    ids = [f"doc{i}" for i in range(2_000)]
    texts = [f"alpha{i % 97} beta{i % 13} gamma{i % 7} words of record {i}" for i in range(2_000)]
    sample = sorted(score._sample_candidates((ids, texts), 5))[:10]  # what Top.Smallest keeps
    ranks = seeded.sample_rank(ids, 5)
    assert [doc_id for _, doc_id, _ in sample] == [ids[i] for i in np.argsort(ranks)[:10]]
    config = embed.EmbedConfig(dim=16)
    projection = embed.fit_projection(texts[:500], embed.make_vectorizer(config), config)
    entries = score._embed_sample(sample, projection, config)
    assert [(rank, doc_id) for rank, doc_id, _ in entries] == [(rank, doc_id) for rank, doc_id, _ in sample]
    for (_, doc_id, vector) in entries:  # row by row: a record's vector is its own text's
        alone, _ = embed.embed_texts([texts[ids.index(doc_id)]], embed.make_vectorizer(config), projection)
        np.testing.assert_allclose(vector, alone[0], rtol=1e-6)


def test_the_k_means_sample_embedded_in_blocks_equals_one_block(monkeypatch):
    texts = [f"alpha{i % 31} beta{i % 11} record {i} gamma{i % 5}" for i in range(300)]
    sample = [(i, f"doc{i}", text) for i, text in enumerate(texts[:10])]
    config = embed.EmbedConfig(dim=8)
    projection = embed.fit_projection(texts, embed.make_vectorizer(config), config)
    whole, _ = embed.embed_texts(texts[:10], embed.make_vectorizer(config), projection)
    monkeypatch.setattr(score, "EMBED_SAMPLE_BATCH", 3)  # blocks of 3, 3, 3 and 1
    entries = score._embed_sample(sample, projection, config)
    assert [doc_id for _, doc_id, _ in entries] == [f"doc{i}" for i in range(10)]
    np.testing.assert_array_equal(np.stack([vector for _, _, vector in entries]), whole)
