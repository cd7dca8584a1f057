"""Tests for transforms/zipfit.py: NCD core, the zip-fit reference, the fast mode, the seeded target
sample, and FitZipfit / ScoreZipfit (Arrow tables in and out)."""

import gzip
import random

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from scipy.stats import spearmanr
from zip_fit.zipfit import ZIPFIT

from examples.make_demo_corpus import build
from tests.helpers import local_pipeline
from winnow.transforms import seeded
from winnow.transforms import zipfit as zf
from winnow.transforms.schema import ZIPFIT_ALIGNMENT


@pytest.fixture(scope="module")
def corpus():
    """(raw records, target records) of the real demo corpus with 300 code chunks."""
    raw, target = build(300)
    originals = [r for r in raw if r["variant"] == "original"]
    return originals, target


def _texts(records):
    return [r["text"].encode("utf-8") for r in records]


def _score(texts, targets, mode, level=None):
    level = zf.ZipfitConfig(mode=mode, level=level).compress_level
    return zf.AlignmentScorer(zf.fit_target_model(targets, mode, level)).score(texts)


# --- core: NCD --------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_gzip_size_is_length_of_gzip_compress(level):
    for data in (b"", b"a", b"the quick brown fox " * 50, bytes(range(256)) * 20):
        assert zf.gzip_size(data, level) == len(gzip.compress(data, compresslevel=level))


def test_ncd_hand_worked_and_symmetric_in_sizes():
    assert zf.normalized_compression_distance(10, 20, 25) == pytest.approx(0.75)  # (25 - 10) / 20
    assert zf.normalized_compression_distance(20, 10, 25) == pytest.approx(0.75)
    assert zf.normalized_compression_distance(30, 30, 30) == 0.0  # y adds nothing to x
    np.testing.assert_allclose(
        zf.normalized_compression_distance(np.array([[10.0], [40.0]]), np.array([[20.0, 40.0]]), np.array([[25.0, 45.0], [50.0, 60.0]])),
        [[15 / 20, 35 / 40], [30 / 40, 20 / 40]],
    )


def test_level_zero_ncd_is_a_length_ratio():
    # Level 0 stores: C(s) = len(s) + 5 (stored-block header) + 18 (gzip frame) = len(s) + 23.
    # x = "abcd", y = "ab": C(x) = 27, C(y) = 25, C(x+y) = 29 -> NCD = (29 - 25) / 27 = 4/27.
    target = [b"ab"]
    sizes = np.array([zf.gzip_size(b"ab", 0)], np.float64)
    assert zf.gzip_size(b"abcd", 0) == 27 and sizes[0] == 25
    assert zf.faithful_alignment([b"abcd"], target, sizes, 0)[0] == pytest.approx(1 - 4 / 27, abs=1e-15)
    # Content does not matter at level 0, only lengths; and the score is symmetric in x and y.
    same_length = zf.faithful_alignment([b"abcd", b"wxyz"], target, sizes, 0)
    assert same_length[0] == same_length[1]
    forward = zf.faithful_alignment([b"hello world"], [b"tiny"], np.array([zf.gzip_size(b"tiny", 0)]), 0)
    backward = zf.faithful_alignment([b"tiny"], [b"hello world"], np.array([zf.gzip_size(b"hello world", 0)]), 0)
    assert forward[0] == backward[0] == pytest.approx(23 / (11 + 23))


def test_mean_inverse_max_matches_the_direct_formula():
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 60, 200).astype(np.float64)
    targets = np.sort(rng.integers(5, 60, 37)).astype(np.float64)  # with ties against sizes
    direct = (1.0 / np.maximum(sizes[:, None], targets[None, :])).mean(axis=1)
    np.testing.assert_allclose(zf.mean_inverse_max(sizes, targets), direct, rtol=1e-12)
    assert zf.dictionary_alignment([100.0], [60.0], [50.0, 200.0])[0] == pytest.approx(40 * (1 / 100 + 1 / 200) / 2)


# --- faithful mode against the zip-fit package -------------------------------------------------


@pytest.mark.parametrize("level", [9, 0])
def test_faithful_equals_zip_fit_package(corpus, level):
    raw, target = corpus
    manual = [r["text"] for r in raw if r["source"] == "reference_manual"][:12]
    code = [r["text"] for r in raw if r["source"] == "stdlib_code"][:12]
    source, targets = manual + code, [r["text"] for r in target[:6]]
    # The package's own scoring path: gzip sizes, 1 - NCD per pair, mean per source document.
    package = ZIPFIT("unused.jsonl", "unused.jsonl", k=len(source), compress_level=level)
    expected = dict(package.rank_sequences_by_alignment(source, targets))
    ours = _score(_texts([{"text": t} for t in source]), _texts([{"text": t} for t in targets]), "faithful", level)
    assert len(expected) == len(source)
    worst = max(abs(expected[t] - s) for t, s in zip(source, ours))
    assert worst < 1e-15, worst  # measured 2.1e-16 (gzip 9) and 1.1e-16 (gzip 0), benchmarks/RESULTS.md


# --- the fast mode ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(corpus):
    """Faithful (gzip 9) and zstd_dict scores of 240 pool documents against all 74 targets."""
    raw, target = corpus
    pool = raw[:240]
    texts, targets = _texts(pool), _texts(target)
    return pool, _score(texts, targets, "faithful"), _score(texts, targets, "zstd_dict")


def test_zstd_dict_ranks_like_faithful(scored):
    pool, faithful, fast = scored
    assert spearmanr(faithful, fast).statistic >= 0.85
    # Both put more reference-manual prose than stdlib code at the top.
    is_manual = np.array([r["source"] == "reference_manual" for r in pool])
    n = int(is_manual.sum())
    for scores in (faithful, fast):
        assert is_manual[np.argsort(-scores, kind="stable")[:n]].mean() > 0.6 > is_manual.mean()


def test_bounds_that_hold_on_real_text(scored, corpus):
    _, faithful, fast = scored
    # Loose bounds around the ranges measured on the full demo corpus (benchmarks/RESULTS.md, "ZIP-FIT").
    assert np.all((faithful > -0.1) & (faithful < 0.5))
    assert np.all((fast > -0.5) & (fast < 1))
    # Against one target document, its own copy is the closest of all (alignment near 1).
    pool_texts = _texts(corpus[0][:60])
    target = _texts(corpus[1][1:2])
    for mode in ("faithful", "zstd_dict"):
        scores = _score(pool_texts + target, target, mode)
        assert scores[-1] > 0.9 and scores[-1] > scores[:-1].max()


@pytest.mark.parametrize("mode", ["faithful", "zstd_dict"])
def test_scores_do_not_depend_on_batching(corpus, mode):
    texts, targets = _texts(corpus[0][:30]), _texts(corpus[1][:10])
    scorer = zf.AlignmentScorer(zf.fit_target_model(targets, mode, zf.DEFAULT_LEVELS[mode]))
    whole = scorer.score(texts)
    np.testing.assert_array_equal(whole, np.concatenate([scorer.score(texts[:7]), scorer.score(texts[7:])]))
    assert scorer.score([]).shape == (0,)


def test_dictionary_is_trained_or_falls_back_to_raw_content(corpus):
    targets = _texts(corpus[1])
    dictionary, kind = zf.train_target_dictionary(targets, 3)
    assert kind == "trained" and len(dictionary) <= zf.DICT_MAX_BYTES
    assert zf.train_target_dictionary(targets, 3) == (dictionary, kind)  # deterministic
    tiny = targets[1:2]  # 1.6 KB: too little to train on
    model = zf.fit_target_model(tiny, "zstd_dict", 3)
    assert model.dictionary_type == "raw_content" and model.dictionary == tiny[0]
    scores = zf.AlignmentScorer(model).score(_texts(corpus[0][:5]) + tiny)
    assert np.all(np.isfinite(scores)) and scores[-1] == scores.max()


def test_fit_target_model_rejects_an_empty_target():
    with pytest.raises(ValueError, match="target set is empty"):
        zf.fit_target_model([], "zstd_dict", 3)


# --- config and sample -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "gzip"}, "mode='gzip'"),
        ({"mode": "faithful", "level": 10}, r"level=10; expected an int in \[0, 9\]"),
        ({"mode": "zstd_dict", "level": 0}, r"level=0; expected an int in \[1, 22\]"),
        ({"level": 3.0}, "level=3.0"),
        ({"target_sample": 0}, "target_sample=0"),
        ({"target_sample": True}, "target_sample=True"),
        ({"seed": "1"}, "seed='1'"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zf.ZipfitConfig(**kwargs)


def test_config_defaults():
    assert zf.ZipfitConfig().mode == "zstd_dict" and zf.ZipfitConfig().compress_level == 3
    assert zf.ZipfitConfig(mode="faithful").compress_level == 9
    assert zf.ZipfitConfig(mode="faithful", level=0).compress_level == 0  # the reference's default
    assert (zf.ZipfitConfig().target_sample, zf.ZipfitConfig().seed) == (256, 0)


def test_target_entries_are_seeded_ranks_ids_and_utf8_texts():
    entries = zf.target_entries(["t1", 7, "t3"], ["alpha", "bêta", "gamma"], seed=5)
    ranks = seeded.sample_rank(["t1", 7, "t3"], 5).tolist()
    assert entries == [(ranks[0], "t1", b"alpha"), (ranks[1], "7", "bêta".encode("utf-8")), (ranks[2], "t3", b"gamma")]
    assert all(isinstance(rank, int) for rank, _, _ in entries)  # plain ints: comparable, picklable
    assert zf.target_entries(["t1"], ["alpha"], seed=6)[0][0] != entries[0][0]
    assert zf.target_entries([], [], seed=5) == []


def test_fit_on_sample_fits_in_rank_order_whatever_the_entry_order(corpus):
    target = corpus[1][:8]
    entries = zf.target_entries([r["id"] for r in target], [r["text"] for r in target], seed=2)
    shuffled = list(entries)
    random.Random(0).shuffle(shuffled)
    for mode in zf.MODES:
        config = zf.ZipfitConfig(mode=mode)
        model = zf.fit_on_sample(shuffled, config)
        expected = zf.fit_target_model([t for _, _, t in sorted(entries)], mode, config.compress_level)
        assert model == expected and model.stats()["target_docs"] == 8
    with pytest.raises(ValueError, match="target set is empty"):
        zf.fit_on_sample([], zf.ZipfitConfig())


def test_target_model_stats():
    faithful = zf.fit_target_model([b"abc", b"defgh"], "faithful", 9)
    assert faithful.stats() == {"mode": "faithful", "level": 9, "target_docs": 2, "target_bytes": 8,
                                "dictionary_type": None, "dictionary_bytes": 0}
    assert faithful.target_sizes == (zf.gzip_size(b"abc", 9), zf.gzip_size(b"defgh", 9))
    fast = zf.fit_target_model([b"abc", b"defgh"], "zstd_dict", 3)
    assert fast.stats()["dictionary_type"] == "raw_content" and fast.stats()["dictionary_bytes"] == 8 and fast.targets == ()


# --- Beam ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, flags",
    [
        ("zstd_dict", {"direct_running_mode": "multi_processing", "direct_num_workers": 2}),
        ("faithful", {}),
    ],
    ids=["zstd_dict-2-workers", "faithful-in-process"],
)
def test_fit_and_score_zipfit_pipeline_tables_in_and_out(corpus, mode, flags):
    raw, target = corpus
    records = [{"id": r["id"], "text": r["text"], "source": r["source"]} for r in raw[:9]]
    targets = [{"id": r["id"], "text": r["text"]} for r in target[:6]]
    config = zf.ZipfitConfig(mode=mode, target_sample=4, seed=7)
    # The expected sample: the 4 smallest seeded sample ranks, whatever the input order.
    ranks = seeded.sample_rank([t["id"] for t in targets], 7)
    sample = [targets[i] for i in np.argsort(ranks)[:4]]
    model = zf.fit_target_model(_texts(sample), mode, config.compress_level)
    scores = zf.AlignmentScorer(model).score(_texts(records))
    expected = {r["id"]: float(s) for r, s in zip(records, scores)}

    def check_tables(tables):
        assert sorted(t.num_rows for t in tables) == [4, 5]
        got = {}
        for table in tables:
            assert table.column_names == ["id", "text", "source", ZIPFIT_ALIGNMENT]
            assert table.schema.field(ZIPFIT_ALIGNMENT).type == pa.float64()
            got.update(zip(table.column("id").to_pylist(), table.column(ZIPFIT_ALIGNMENT).to_pylist()))
        assert got == expected

    with local_pipeline(**flags) as p:  # zstd_dict: two worker processes build their own state
        target_tables = p | "Target" >> beam.Create([pa.Table.from_pylist(targets[3:]), pa.Table.from_pylist(targets[:3][::-1])])
        fitted = target_tables | zf.FitZipfit(config)
        assert_that(fitted | beam.Map(lambda m: m.stats()), equal_to([model.stats()]), label="CheckModel")
        raw_tables = p | "Records" >> beam.Create([pa.Table.from_pylist(records[:4]), pa.Table.from_pylist(records[4:])])
        assert_that(raw_tables | zf.ScoreZipfit(fitted), check_tables, label="CheckTables")
    assert model.stats()["target_docs"] == 4 and model.stats()["mode"] == mode
