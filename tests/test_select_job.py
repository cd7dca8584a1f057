"""``winnow select`` end to end on the demo corpus: outputs, accounting, methods, CLI errors."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from data_selection import HashedNgramDSIR

from examples import make_demo_corpus
from winnow.pipelines import cli, features, metrics
from winnow.transforms import dsir, kmeans, quotas, schema, select


def _run(*argv) -> int:
    """``winnow select``; ``--method random`` unless a method is given (the default, combined, embeds and clusters)."""
    method = [] if "--method" in argv else ["--method", "random"]
    return cli.main(["select", *method, *argv])


def _table(directory):
    files = sorted(directory.glob("*.parquet"))
    assert files, f"no Parquet files in {directory}"
    return pa.concat_tables(pq.read_table(f) for f in files)


def _errors(output):
    return [json.loads(line) for path in sorted((output / "errors").glob("*.jsonl")) for line in path.read_text().splitlines()]


def _report(output):
    return json.loads((output / "report.json").read_text())


def _raw_line_count(demo_dir) -> int:
    """Records in the raw shards as stored, counted independently of winnow's reader."""
    raw = demo_dir / "raw"
    lines = len((raw / "shard-0.jsonl").read_bytes().splitlines())
    lines += len(gzip.decompress((raw / "shard-1.jsonl.gz").read_bytes()).splitlines())
    lines += len(zstandard.ZstdDecompressor().decompressobj().decompress((raw / "shard-2.jsonl.zst").read_bytes()).splitlines())
    lines += pq.ParquetFile(raw / "shard-3.parquet").metadata.num_rows
    return lines


@pytest.fixture(scope="module")
def random_run(demo_corpus, tmp_path_factory):
    demo_dir, _ = demo_corpus
    output = tmp_path_factory.mktemp("run") / "out"
    assert _run("--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--num-select", "123", "--write-scores", "--seed", "7",
                "--dedup", "exact,minhash") == 0
    return demo_dir, output


def test_outputs_hold_the_input_columns_and_only_the_winnow_columns_that_ran(random_run):
    _, output = random_run
    selected = _table(output / "selected")
    assert selected.column_names == ["id", "text", "source", "variant", "copy_of"]  # random adds no score column
    scores = _table(output / "scores")
    assert scores.column_names == ["id", schema.DUPLICATE_OF, schema.DEDUP_CLUSTER, schema.SELECTED, schema.DROP_REASON]
    report = _report(output)
    assert report["checks"] == {"selected_dropped_invalid_equal_records_read": True, "selected_rows_written": True, "beam_counters_agree": True}
    assert "<svg" in (output / "report.html").read_text()
    assert sorted(p.name for p in output.iterdir()) == ["errors", "features", "report.html", "report.json", "scores", "selected"]
    assert not list(output.glob("selected/_*")) and not list(output.rglob("*.inprogress*"))


def test_exactly_n_selected_and_accounting_from_the_files(random_run):
    demo_dir, output = random_run
    selected = _table(output / "selected")
    scores = _table(output / "scores")
    errors = _errors(output)
    assert selected.num_rows == 123 == len(set(selected.column("id").to_pylist()))
    flags = scores.column(schema.SELECTED).to_pylist()
    reasons = scores.column(schema.DROP_REASON).to_pylist()
    assert sum(flags) == 123 and all((r is None) == f for r, f in zip(reasons, flags))
    dropped = sum(1 for r in reasons if r is not None)
    assert selected.num_rows + dropped + len(errors) == _raw_line_count(demo_dir)
    report = _report(output)
    assert report["counts"]["input"] == _raw_line_count(demo_dir)
    assert (report["counts"]["selected"], report["counts"]["invalid"], len(errors)) == (123, 6, 6)
    assert report["counts"]["dropped"]["exact_duplicate"] > 50 and report["counts"]["dropped"]["near_duplicate"] > 50


def test_duplicates_name_their_kept_record_and_near_ones_their_cluster(random_run):
    _, output = random_run
    rows = _table(output / "scores").to_pylist()
    by_id = {r["id"]: r for r in rows}
    for row in rows:
        if row[schema.DROP_REASON] in ("exact_duplicate", "near_duplicate"):
            kept = by_id[row[schema.DUPLICATE_OF]]
            assert kept["id"] < row["id"] and kept[schema.DROP_REASON] not in ("exact_duplicate",)
        if row[schema.DROP_REASON] == "near_duplicate":
            assert row[schema.DEDUP_CLUSTER] == by_id[row[schema.DUPLICATE_OF]][schema.DEDUP_CLUSTER] is not None


def test_every_bad_record_reason_reaches_the_dead_letter_file_with_its_line(random_run):
    demo_dir, output = random_run
    errors = _errors(output)
    assert sorted(e["reason"] for e in errors) == sorted(
        ["invalid_json", "missing_text", "text_not_string", "empty_text", "invalid_utf8", "not_an_object"])
    lines = (demo_dir / "raw" / "shard-0.jsonl").read_bytes().splitlines()
    for error in errors:
        assert error["source"].endswith("shard-0.jsonl")
        assert lines[error["position"] - 1].decode("utf-8", "replace")[:50] == error["raw"][:50]


def test_fraction_and_config_file_with_beam_options_and_flags_winning(demo_corpus, tmp_path):
    demo_dir, _ = demo_corpus
    config = tmp_path / "winnow.yaml"
    config.write_text(f"input: ['{demo_dir / 'raw' / 'shard-1.jsonl.gz'}']\nfraction: 0.5\nseed: 3\n"
                      "direct_running_mode: in_memory\ndirect_num_workers: 1\n")
    output = tmp_path / "out"
    assert _run("--config", str(config), "--output", str(output), "--seed", "4") == 0
    report = _report(output)
    assert report["counts"]["selected"] == round(report["counts"]["valid"] * 0.5)
    assert report["options"]["job"]["deciding"]["seed"] == 4
    assert "--direct_num_workers=1" in report["options"]["beam_flags"]


def test_refuses_to_mix_runs_without_overwrite_or_resume(random_run, capsys):
    demo_dir, output = random_run
    assert _run("--input", str(demo_dir / "raw" / "*"), "--output", str(output)) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "/tmp/x"], "--input is required"),
        (["--input", "/nonexistent/*.jsonl", "--output", "/tmp/x"], "matches no file"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--num-selct", "5"], "did you mean --num-select"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--num-select", "0"], "expected an integer >= 1"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--num-select", "-5"], "expected an integer >= 1"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--fraction", "1.5"], "expected a fraction in (0, 1]"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--method", "dsri"], "invalid choice: 'dsri'"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--dedup", "minhash", "--dedup-threshold", "2"], "--dedup-threshold 2.0; expected a number in (0, 1)"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--method", "zipfit", "--dsir-separate-targets"],
         "--dsir-separate-targets selects per target with --method dsir"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--method", "dsir", "--dsir-separate-targets",
          "--dsir-target-proportions", "1,2"], "has 2 shares for 1 --target"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--target", "u.jsonl", "--method", "dsir",
          "--dsir-separate-targets", "--dsir-target-proportions", "1,-2"], "--dsir-target-proportions (1.0, -2.0); expected finite shares >= 0"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--dsir-target-proportions", "1,x"], "expected comma-separated numbers"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--method", "dsir", "--dsir-target-proportions", "1"],
         "--dsir-target-proportions needs --dsir-separate-targets"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--semdedup-eps", "0.1"], "--semdedup-eps compares records within k-means clusters"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--overwrite", "--resume"], "not allowed with argument"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, message, capsys):
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert "Traceback" not in err and "usage:" not in err


@pytest.mark.parametrize("keep, code", [(0.5, 2), (0.97, 1)])
def test_corrupt_gzip_fails_with_the_file_named(tmp_path, capsys, keep, code):
    """Cut early, the probe finds it before the run (2); cut late, the job fails on it (1), leaving no temporary file."""
    path = tmp_path / "broken.jsonl.gz"
    lines = b"".join(json.dumps({"id": str(i), "text": f"word {i * 7919 % 10007} " * 20}).encode() + b"\n" for i in range(5000))
    data = gzip.compress(lines)
    path.write_bytes(data[: int(len(data) * keep)])
    assert _run("--input", str(path), "--output", str(tmp_path / "out")) == code
    err = capsys.readouterr().err
    assert "broken.jsonl.gz: corrupt or truncated .jsonl.gz stream" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "out").glob("selected/*.parquet")) and not list(tmp_path.rglob("*.inprogress*"))


def test_default_method_is_combined():
    from winnow.pipelines.select_job import select_parser

    assert select_parser().parse_args([]).method == "combined"


def test_help_lists_every_group_and_the_required_options(capsys):
    assert cli.main(["select", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: winnow select --input GLOB [--input GLOB ...] --output DIR" in out
    for heading in ("input:", "output:", "selection:", "--num-select", "--fraction", "--config", "--features", "--resume"):
        assert heading in out


@pytest.mark.parametrize("method, column", [("dsir", schema.DSIR_LOG_WEIGHT), ("zipfit", schema.ZIPFIT_ALIGNMENT)])
def test_target_methods_prefer_the_target_domain(demo_corpus, tmp_path, method, column):
    """Reference-manual prose is the target; both methods select mostly prose."""
    demo_dir, _ = demo_corpus
    output = tmp_path / method
    assert _run("--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*.jsonl"),
                "--output", str(output), "--num-select", "60", "--method", method, "--write-scores") == 0
    selected = _table(output / "selected")
    assert selected.num_rows == 60 and None not in selected.column(column).to_pylist()
    assert selected.column("source").to_pylist().count("reference_manual") / 60 >= 0.8
    report = _report(output)
    assert all(report["checks"].values())
    if method == "dsir":
        kl = report["metrics"]["dsir_kl"]
        assert kl["kl_reduction_selected"] > kl["kl_reduction_random"] + 0.05
        # the same number computed here, outside the pipeline, from the demo records and the random baseline
        scores = _table(output / "scores")
        raw_records, target_records = make_demo_corpus.build(code_docs=300)
        texts = {r["id"]: r["text"] for r in raw_records}
        counts = dsir.NgramCountsCombineFn(dsir.DsirConfig())
        count = lambda chosen: counts.extract_output(counts.add_input(counts.create_accumulator(), chosen)).counts  # noqa: E731
        chosen = [texts[i] for i in selected.column("id").to_pylist()]
        reasons = scores.column(schema.DROP_REASON).to_pylist()
        assert report["counts"]["dropped"]["too_short"] == reasons.count("too_short") > 0
        # the histogram of log weights, recounted from the scores table
        distribution = report["metrics"]["score_distributions"][schema.DSIR_LOG_WEIGHT]
        pool = np.array([w for w, why in zip(scores.column(schema.DSIR_LOG_WEIGHT).to_pylist(), reasons) if why in (None, "not_selected")])
        histogram = distribution["histogram"]
        binned = metrics.bin_counts(pool, histogram["edges"])
        assert [histogram["underflow"]["all"], *histogram["counts"]["all"], histogram["overflow"]["all"]] == binned.tolist()
        assert sum(histogram["counts"]["selected"]) + histogram["underflow"]["selected"] + histogram["overflow"]["selected"] == 60
        assert histogram["edges"][0] > pool.min() or histogram["underflow"]["all"] == 0  # robust range: the 1% quantile
        assert count(chosen).sum() > 0


def test_histogram_edges_span_the_robust_range_and_bins_close_their_ends():
    quantiles = list(np.linspace(0.0, 100.0, 21))
    edges = metrics.histogram_edges(quantiles)
    assert (edges[0], edges[-1], len(edges)) == (1.0, 99.0, metrics.HISTOGRAM_BINS + 1)
    counts = metrics.bin_counts(np.array([-5.0, 1.0, 50.0, 99.0, 120.0]), edges)
    assert counts[0] == 1 and counts[-1] == 1 and counts[1] == 1 and counts[-2] == 1 and counts.sum() == 5
    assert metrics.histogram_edges([2.0] * 21)[:2] == [2.0, 2.0 + 1.0 / metrics.HISTOGRAM_BINS]


def _quantiles_of(batches, size):
    fn = metrics.SampleQuantilesCombineFn(size)
    return fn.extract_output(fn.merge_accumulators(fn.add_input(fn.create_accumulator(), batch) for batch in batches))


def test_sample_quantiles_are_exact_below_the_sample_size_and_independent_of_order_and_split():
    rng = np.random.default_rng(3)
    keys, values = rng.integers(0, 2**63, 5000).astype(np.uint64), rng.normal(size=5000)
    whole = _quantiles_of([(keys, values)], 8192)
    assert whole == np.quantile(values, np.linspace(0, 1, metrics.N_QUANTILES), method="inverted_cdf").tolist()
    assert (whole[0], whole[-1]) == (values.min(), values.max())
    for size in (8192, 500):  # exact, and a sample of 500: the same result for any split and order of the batches
        order = rng.permutation(5000)
        parts = [(keys[order[i:j]], values[order[i:j]]) for i, j in ((0, 7), (7, 2000), (2000, 2000), (2000, 5000))]
        assert _quantiles_of(parts[::-1], size) == _quantiles_of([(keys, values)], size)
    sampled = np.array(_quantiles_of([(keys, values)], 500))
    ranks = np.searchsorted(np.sort(values), sampled[1:-1]) / 5000
    assert np.abs(ranks - np.linspace(0, 1, metrics.N_QUANTILES)[1:-1]).max() < 0.08  # a uniform sample of 500
    assert _quantiles_of([(keys, values)], 500)[::20] == [values.min(), values.max()]  # the ends stay exact
    assert _quantiles_of([], 10) == [] and _quantiles_of([(keys[:0], values[:0])], 10) == []


def test_smallest_keys_breaks_ties_by_value_whatever_the_order():
    keys = np.array([5, 1, 3, 3, 3, 9], np.uint64)
    values = np.array([0.5, 0.1, 0.9, 0.2, 0.4, 0.0])
    for order in ([0, 1, 2, 3, 4, 5], [4, 3, 2, 1, 0, 5]):
        got_keys, got_values = metrics.smallest_keys(keys[order], values[order], 3)
        assert sorted(got_values.tolist()) == [0.1, 0.2, 0.4] and sorted(got_keys.tolist()) == [1, 3, 3]


@pytest.mark.parametrize("method", ["dsir", "zipfit"])
def test_missing_or_empty_target_is_a_clear_error(demo_corpus, tmp_path, capsys, method):
    demo_dir, _ = demo_corpus
    raw = str(demo_dir / "raw" / "*")
    assert _run("--input", raw, "--output", str(tmp_path / "a"), "--method", method) == 2
    assert f"--method {method} needs --target" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "x", "text": "  "}\n')
    assert _run("--input", raw, "--target", str(empty), "--output", str(tmp_path / "b"), "--method", method) == 2
    err = capsys.readouterr().err
    assert "no valid record" in err and "--text-field applies to the target too" in err
    (tmp_path / "other.jsonl").write_text('{"id": "x", "body": "no text field"}\n')
    assert _run("--input", raw, "--target", str(tmp_path / "other.jsonl"), "--output", str(tmp_path / "c"), "--method", method) == 2
    assert "no field 'text'" in (err := capsys.readouterr().err) and "apply to the target too" in err


def test_combined_spans_dsir_to_kmeans_by_its_diversity_weight(demo_corpus, tmp_path):
    """--combined-diversity 0 selects DSIR's records, 1 k-means' (same pool), 0.3 trades target fit for spread."""
    demo_dir, _ = demo_corpus
    combined = tmp_path / "combined"
    assert _run("--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*.jsonl"), "--output", str(combined),
                "--num-select", "80", "--seed", "5", "--write-scores", "--method", "combined") == 0
    table = str(combined / "features")

    def reselect(name, *flags):
        assert _run("--features", table, "--output", str(tmp_path / name), "--num-select", "80", "--seed", "5", *flags) == 0
        return set(_table(tmp_path / name / "selected").column("id").to_pylist())

    assert reselect("d0", "--method", "combined", "--combined-diversity", "0") == reselect("dsir", "--method", "dsir")
    everyone = ("--dsir-min-tokens", "0")  # k-means has no too_short rule; combined pools like it then
    assert reselect("d1", "--method", "combined", "--combined-diversity", "1", *everyone) == reselect("kmeans", "--method", "kmeans", *everyone)

    report, pure_dsir = _report(combined), _report(tmp_path / "d0")
    assert report["options"]["job"]["deciding"]["diversity"]["diversity"] == 0.3
    vendi, kl = report["metrics"]["vendi"], report["metrics"]["dsir_kl"]
    assert vendi["selected"]["vendi_score"] > pure_dsir["metrics"]["vendi"]["selected"]["vendi_score"]
    assert kl["kl_reduction_selected"] > kl["kl_reduction_random"]
    selected = _table(combined / "selected")
    assert selected.num_rows == 80 and None not in selected.column(schema.DSIR_LOG_WEIGHT).to_pylist()
    scores = _table(combined / "scores")
    assert scores.num_rows == report["counts"]["valid"]  # every valid record
    assert sum(scores.column(schema.SELECTED).to_pylist()) == 80


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _reference_rounds(weights: np.ndarray, eligible: np.ndarray, quotas: list[int]) -> list[set[int]]:
    """The reference's separate-targets top-k in plain numpy: round t takes the top quotas[t] left by weights[:, t]."""
    left, rounds = eligible.copy(), []
    for t, quota in enumerate(quotas):
        order = np.flatnonzero(left)[np.argsort(-weights[left, t], kind="stable")]
        rounds.append(set(order[:quota].tolist()))
        left[order[:quota]] = False
    return rounds


def _no_boundary_tie(weights, eligible, quotas) -> bool:
    left = eligible.copy()
    for t, quota in enumerate(quotas):
        ranked = np.sort(weights[left, t])[::-1]
        if quota < len(ranked) and ranked[quota - 1] - ranked[quota] <= 1e-6:
            return False
        left[list(_reference_rounds(weights, left, [quota])[0])] = False
    return True


def test_separate_targets_select_as_the_reference_package(tmp_path):
    """Two targets (reference-manual prose, stdlib code), shares 0.6 / 0.4, sha256 buckets, top-k:
    per-target weights equal ``data-selection``'s and the same documents are selected per target."""
    raw, prose = make_demo_corpus.build(code_docs=100)
    code = [{"id": f"t-{r['id']}", "text": r["text"]} for r in raw if r["source"] == "stdlib_code" and r["variant"] == "original"][:30]
    paths = {name: _write_jsonl(tmp_path / f"{name}.jsonl", records) for name, records in (("raw", raw), ("prose", prose), ("code", code))}
    reference = HashedNgramDSIR(
        raw_datasets=[paths["raw"]], target_datasets=[paths["prose"], paths["code"]], cache_dir=str(tmp_path / "cache"),
        num_proc=1, ngrams=2, num_buckets=10_000, min_example_length=100, separate_targets=True, target_proportions=[0.6, 0.4],
    )
    reference.fit_importance_estimator(num_tokens_to_fit="all")
    reference.compute_importance_weights()
    ref_weights = np.load(tmp_path / "cache" / "log_importance_weights" / "0.npy")  # (documents, targets)
    eligible = np.load(tmp_path / "cache" / "perexample_metadata" / "0.npy") >= 100
    k = next(k for k in range(150, 300) if _no_boundary_tie(ref_weights, eligible, select.split_quota(k, [0.6, 0.4])))
    ref_rounds = [{raw[i]["id"] for i in chosen} for chosen in _reference_rounds(ref_weights, eligible, select.split_quota(k, [0.6, 0.4]))]
    assert min(map(len, ref_rounds)) > 50

    output = tmp_path / "out"
    assert _run(
        "--input", paths["raw"], "--target", paths["prose"], "--target", paths["code"], "--output", str(output),
        "--method", "dsir", "--dsir-separate-targets", "--dsir-target-proportions", "0.6,0.4", "--dsir-hash", "sha256",
        "--dsir-top-k", "--num-select", str(k), "--write-scores",
    ) == 0
    scores = _table(output / "scores").to_pylist()
    by_id = {r["id"]: i for i, r in enumerate(raw)}
    # the features table holds the per-target weights; scores/ the pooled one
    features = pa.concat_tables(pq.read_table(f) for f in sorted((output / "features").glob("unit-*.parquet"))).to_pylist()
    worst = max((abs(np.asarray(r["dsir_target_log_weights"]) - ref_weights[by_id[r["id"]]]) / np.maximum(1.0, abs(ref_weights[by_id[r["id"]]]))).max()
                for r in features if r["id"] in by_id)
    assert worst < 1e-12, worst  # relative: weights run to thousands of nats
    selected = _table(output / "selected").to_pylist()
    assert {(r["id"], r[schema.DSIR_TARGET]) for r in selected} == {(i, t) for t, ids in enumerate(ref_rounds) for i in ids}
    assert {r["id"] for r in scores if r[schema.SELECTED]} == set().union(*ref_rounds)


def test_one_separate_target_selects_as_the_pooled_target(demo_corpus, tmp_path):
    demo_dir, _ = demo_corpus
    common = ["--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*"), "--method", "dsir", "--num-select", "90", "--seed", "3"]
    assert _run(*common, "--output", str(tmp_path / "pooled")) == 0
    assert _run(*common, "--output", str(tmp_path / "separate"), "--dsir-separate-targets") == 0
    pooled, separate = (sorted(_table(tmp_path / name / "selected").column("id").to_pylist()) for name in ("pooled", "separate"))
    assert len(pooled) == 90 and pooled == separate


@pytest.fixture(scope="module")
def kmeans_run(demo_corpus, tmp_path_factory):
    demo_dir, _ = demo_corpus
    output = tmp_path_factory.mktemp("kmeans")
    assert _run("--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--num-select", "60", "--seed", "3",
                "--method", "kmeans", "--kmeans-k", "6") == 0
    return output


@pytest.mark.parametrize("strategy", ["balanced", "complexity"])
def test_kmeans_quota_strategies_select_each_clusters_quota(kmeans_run, tmp_path, strategy):
    """Per cluster, the records selected are ``quotas.cluster_quotas`` of the pool's cluster sizes (complexity: from
    the fitted centroids and the pool's stored embeddings, as ``kmeans.cluster_complexity`` defines it)."""
    output = tmp_path / strategy
    assert _run("--features", str(kmeans_run / "features"), "--output", str(output), "--num-select", "60", "--seed", "3",
                "--method", "kmeans", "--kmeans-strategy", strategy, "--write-scores") == 0
    scores = _table(output / "scores").to_pydict()
    pooled = [reason in (None, "not_selected") for reason in scores[schema.DROP_REASON]]
    in_pool = {i for i, p in zip(scores["id"], pooled) if p}
    table = features.FeaturesTable(str(kmeans_run / "features"))
    clusters, embeddings = [], []
    for unit in table.manifest()["units"]:
        rows = table.read(unit["index"], [features.ID, features.CLUSTER, features.EMBEDDING])
        stored = features.embeddings_of(rows.column(features.EMBEDDING))
        for doc_id, cluster, embedding in zip(rows.column(features.ID).to_pylist(), rows.column(features.CLUSTER).to_pylist(), stored):
            if str(doc_id) in in_pool:
                clusters.append(cluster)
                embeddings.append(embedding)
    clusters = np.array(clusters, np.int64)
    sizes = {int(c): int(n) for c, n in zip(*np.unique(clusters, return_counts=True))}
    complexity = None
    if strategy == "complexity":
        centroids = table.fit_state().centroids
        stats = dict(kmeans.cluster_partials(np.array(embeddings, np.float32), clusters, np.zeros(len(clusters))))
        complexity = dict(enumerate(kmeans.cluster_complexity(centroids, stats, kmeans.COMPLEXITY_NEIGHBORS).tolist()))
    expected = {c: q for c, q in quotas.cluster_quotas(strategy, sizes, 60, complexity).items() if q}
    picked = [c for c, s in zip(scores[schema.CLUSTER], scores[schema.SELECTED]) if s]
    assert dict(zip(*[a.tolist() for a in np.unique(picked, return_counts=True)])) == expected
    assert len(picked) == 60 and len(expected) > 1
