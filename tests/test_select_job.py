"""``winnow select`` end to end on the demo corpus: outputs, accounting, determinism, CLI errors."""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from data_selection import HashedNgramDSIR

from examples import make_demo_corpus
from winnow.pipelines import cli, select_job
from winnow.transforms import dsir, io, schema, select


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
    assert _run("--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--num-select", "123", "--write-scores", "--seed", "7") == 0
    return demo_dir, output


def test_outputs_exist_with_contract_columns(random_run):
    _, output = random_run
    selected = _table(output / "selected")
    for column in ("id", "text", "source", "variant", "copy_of", *schema.SCORE_COLUMNS):
        assert column in selected.column_names
    scores = _table(output / "scores")
    assert scores.column_names == ["id", *schema.SCORE_COLUMNS, "selected", "drop_reason"]
    report = json.loads((output / "report.json").read_text())
    assert report["checks"] == {"input_equals_records_read": True}
    assert "<svg" in (output / "report.html").read_text()


def test_exactly_n_selected_and_accounting_from_the_files(random_run):
    demo_dir, output = random_run
    selected = _table(output / "selected")
    scores = _table(output / "scores")
    errors = _errors(output)
    assert selected.num_rows == 123
    assert len(set(selected.column("id").to_pylist())) == 123
    flags = scores.column("selected").to_pylist()
    reasons = scores.column("drop_reason").to_pylist()
    assert sum(flags) == 123
    assert all((r is None) == f for r, f in zip(reasons, flags))
    dropped = sum(1 for r in reasons if r is not None)
    assert selected.num_rows + dropped + len(errors) == _raw_line_count(demo_dir)
    report = json.loads((output / "report.json").read_text())
    assert report["counts"]["input"] == _raw_line_count(demo_dir)
    assert report["counts"]["selected"] == 123
    assert report["counts"]["invalid"] == len(errors) == 6


def test_every_bad_record_reason_reaches_the_dead_letter_file(random_run):
    _, output = random_run
    errors = _errors(output)
    assert sorted(e["reason"] for e in errors) == sorted(
        ["invalid_json", "missing_text", "text_not_string", "empty_text", "invalid_utf8", "not_an_object"]
    )
    assert all(e["source"].endswith("shard-0.jsonl") and isinstance(e["position"], int) for e in errors)


def test_same_selection_with_two_worker_processes(random_run, tmp_path):
    demo_dir, output = random_run
    other = tmp_path / "mp"
    assert _run(
        "--input", str(demo_dir / "raw" / "*"), "--output", str(other), "--num-select", "123", "--seed", "7",
        "--direct_running_mode", "multi_processing", "--direct_num_workers", "2",
    ) == 0
    assert sorted(_table(other / "selected").column("id").to_pylist()) == sorted(_table(output / "selected").column("id").to_pylist())


def test_fraction_and_config_file_with_flags_winning(demo_corpus, tmp_path):
    demo_dir, _ = demo_corpus
    config = tmp_path / "winnow.yaml"
    config.write_text(f"input: ['{demo_dir / 'raw' / 'shard-1.jsonl.gz'}']\nfraction: 0.5\nseed: 3\n")
    output = tmp_path / "out"
    assert _run("--config", str(config), "--output", str(output), "--seed", "4") == 0
    report = json.loads((output / "report.json").read_text())
    valid = report["counts"]["valid"]
    assert report["counts"]["selected"] == round(valid * 0.5)
    assert report["options"]["seed"] == 4


def test_refuses_to_mix_runs_without_overwrite(random_run, capsys):
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
        (["--input", "a.jsonl", "--output", "/tmp/x", "--method", "magic"], "invalid choice"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--method", "zipfit", "--dsir-separate-targets"],
         "--dsir-separate-targets selects per target with --method dsir"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--method", "dsir", "--dsir-separate-targets",
          "--dsir-target-proportions", "1,2"], "has 2 shares for 1 --target"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--target", "u.jsonl", "--method", "dsir",
          "--dsir-separate-targets", "--dsir-target-proportions", "1,-2"], "target_proportions=(1.0, -2.0); expected finite shares >= 0"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--dsir-target-proportions", "1,x"], "expected comma-separated numbers"),
        (["--input", "a.jsonl", "--output", "/tmp/x", "--target", "t.jsonl", "--method", "dsir", "--dsir-target-proportions", "1"],
         "--dsir-target-proportions needs --dsir-separate-targets"),
    ],
)
def test_cli_errors_are_one_clear_line(argv, message, capsys):
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("keep, code", [(0.5, 2), (0.97, 1)])
def test_corrupt_gzip_fails_with_the_file_named(tmp_path, capsys, keep, code):
    """Cut early, the schema probe finds it before the job runs (2); cut late, the job fails (1)."""
    path = tmp_path / "broken.jsonl.gz"
    lines = b"".join(json.dumps({"id": str(i), "text": f"word {i * 7919 % 10007} " * 20}).encode() + b"\n" for i in range(5000))
    data = gzip.compress(lines)
    path.write_bytes(data[: int(len(data) * keep)])
    assert _run("--input", str(path), "--output", str(tmp_path / "out")) == code
    err = capsys.readouterr().err
    assert "broken.jsonl.gz: corrupt or truncated .jsonl.gz stream" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "out").glob("selected/*.parquet"))


def test_default_method_is_combined():
    from winnow.pipelines.select_job import select_parser

    assert select_parser().parse_args([]).method == "combined"


def test_help_lists_every_group(capsys):
    assert _run("--help") == 0
    out = capsys.readouterr().out
    for heading in ("input:", "output:", "selection:", "--num-select", "--fraction", "--config"):
        assert heading in out


@pytest.mark.parametrize("method, column", [("dsir", "dsir_log_weight"), ("zipfit", "zipfit_alignment")])
def test_target_methods_prefer_the_target_domain(demo_corpus, tmp_path, monkeypatch, method, column):
    """Reference-manual prose is the target; both methods select mostly prose, random does not.

    The input and target globs are each listed once (listing an object store takes time).
    """
    demo_dir, _ = demo_corpus
    output = tmp_path / method
    globs = [str(demo_dir / "raw" / "*"), str(demo_dir / "target" / "*.jsonl")]
    listed, match = [], io.FileSystems.match
    monkeypatch.setattr(io.FileSystems, "match", lambda patterns, *args, **kwargs: listed.extend(patterns) or match(patterns, *args, **kwargs))
    assert _run(
        "--input", globs[0], "--target", globs[1],
        "--output", str(output), "--num-select", "60", "--method", method, "--write-scores",
    ) == 0
    assert sorted(pattern for pattern in listed if pattern in globs) == sorted(globs)
    selected = _table(output / "selected")
    assert selected.num_rows == 60
    assert None not in selected.column(column).to_pylist()
    prose = selected.column("source").to_pylist().count("reference_manual") / 60
    raw = _table(output / "scores")
    assert prose >= 0.8, prose
    report = json.loads((output / "report.json").read_text())
    assert report["checks"] == {"input_equals_records_read": True}
    if method == "dsir":
        kl = report["metrics"]["dsir_kl"]
        assert kl["kl_reduction_selected"] > kl["kl_reduction_random"] + 0.05
        # the same number computed here, outside the pipeline, from the demo records and the scores table
        config = dsir.DsirConfig()
        counts = dsir.NgramCountsCombineFn(config)
        count = lambda texts: counts.extract_output(counts.add_input(counts.create_accumulator(), texts))  # noqa: E731
        raw_records, target_records = make_demo_corpus.build(code_docs=300)
        texts = {r["id"]: r["text"] for r in raw_records}
        chosen = [texts[i] for i in selected.column("id").to_pylist()]
        expected = dsir.kl_reduction(count([r["text"] for r in target_records]), count(list(texts.values())), count(chosen))
        assert kl["kl_reduction_selected"] == pytest.approx(expected, rel=1e-9)
        too_short = [r for r in raw.column("drop_reason").to_pylist() if r == "too_short"]
        assert report["counts"]["dropped"].get("too_short", 0) == len(too_short) > 0
        # the histogram of log weights, recounted from the scores table: the pool's range in 30 bins
        histogram = report["metrics"]["score_histograms"]["dsir_log_weight"]
        reasons = raw.column("drop_reason").to_pylist()
        pool = [w for w, why in zip(raw.column("dsir_log_weight").to_pylist(), reasons) if why in (None, "not_selected")]
        low, high = histogram["edges"][0], histogram["edges"][-1]
        assert (low, high) == (min(pool), max(pool)) and len(histogram["edges"]) == select_job.N_HISTOGRAM_BINS + 1
        bins = [select_job.histogram_bin(w, low, high, select_job.N_HISTOGRAM_BINS) for w in pool]
        assert histogram["all"] == np.bincount(bins, minlength=select_job.N_HISTOGRAM_BINS).tolist()
        assert sum(histogram["selected"]) == 60


def test_histogram_bins_are_equal_width_with_the_ends_closed():
    assert [select_job.histogram_bin(v, 0.0, 3.0, 3) for v in (0.0, 0.99, 1.0, 2.5, 3.0)] == [0, 0, 1, 2, 2]
    assert [select_job.histogram_bin(v, 0.0, 3.0, 3) for v in (-1.0, 4.0)] == [0, 2]  # outside the range: the end bins
    assert select_job.histogram_bin(5.0, 2.0, 2.0, 3) == 0  # one value: one bin


@pytest.mark.parametrize("method", ["dsir", "zipfit"])
def test_missing_or_empty_target_is_a_clear_error(demo_corpus, tmp_path, capsys, method):
    demo_dir, _ = demo_corpus
    raw = str(demo_dir / "raw" / "*")
    assert _run("--input", raw, "--output", str(tmp_path / "a"), "--method", method) == 2
    assert f"--method {method} needs --target" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "x", "text": ""}\n')
    assert _run("--input", raw, "--target", str(empty), "--output", str(tmp_path / "b"), "--method", method) == 2
    assert "no valid record" in capsys.readouterr().err


def test_combined_fills_every_cluster_quota_and_leans_to_the_target(demo_corpus, tmp_path):
    demo_dir, _ = demo_corpus
    common = ["--input", str(demo_dir / "raw" / "*"), "--num-select", "80", "--write-scores", "--seed", "5"]
    combined, random_out = tmp_path / "combined", tmp_path / "random"
    assert _run(*common, "--target", str(demo_dir / "target" / "*.jsonl"), "--output", str(combined),
                "--method", "combined", "--semdedup-eps", "0.02", "--kmeans-k", "8") == 0
    assert _run(*common, "--output", str(random_out), "--method", "random") == 0
    selected = _table(combined / "selected")
    report = json.loads((combined / "report.json").read_text())
    quotas = {int(c): q for c, q in report["metrics"]["selection"]["quota"].items()}
    assert sum(quotas.values()) == selected.num_rows == 80
    per_cluster = {}
    for cluster in selected.column("cluster").to_pylist():
        per_cluster[cluster] = per_cluster.get(cluster, 0) + 1
    assert per_cluster == {c: q for c, q in quotas.items() if q}
    assert report["counts"]["dropped"]["semantic_duplicate"] >= 40  # the demo's 60 exact copies at least
    assert None not in selected.column("dsir_log_weight").to_pylist()

    def mean_alignment(table):
        values = [v for v in table.column("zipfit_alignment").to_pylist() if v is not None]  # too_short: unscored
        return sum(values) / len(values)

    scores = _table(combined / "scores")
    chosen = scores.filter(scores.column("selected"))
    random_ids = set(_table(random_out / "selected").column("id").to_pylist())
    random_scored = scores.filter(pa.array([i in random_ids for i in scores.column("id").to_pylist()]))
    assert mean_alignment(chosen) > mean_alignment(random_scored)


def test_cluster_quota_mixes_strategy_quotas_with_quality_mass():
    from winnow.pipelines.select_job import ClusterQuota
    from winnow.transforms import kmeans, select

    counts = {0: 50, 1: 50, 2: 50, 3: 5}
    stats = {"complexity": {c: 0.0 for c in counts}}
    total = select.TotalQuota(n=40)
    balanced = ClusterQuota(total, kmeans.KMeansConfig(strategy="balanced"), diversity=1.0)
    assert balanced(counts, {"stats": stats, "quality": {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}}) == {0: 12, 1: 12, 2: 11, 3: 5}
    mixed = ClusterQuota(total, kmeans.KMeansConfig(strategy="balanced"), diversity=0.5)
    quotas = mixed(counts, {"stats": stats, "quality": {0: 97.0, 1: 1.0, 2: 1.0, 3: 1.0}})
    # targets 0.5 * (12, 12, 11, 5) + 0.5 * 40 * (0.97, 0.01, 0.01, 0.01) = (25.4, 6.2, 5.7, 2.7) -> nearest integers summing to 40
    assert quotas == {0: 25, 1: 6, 2: 6, 3: 3}


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
    reference.resample(out_dir=str(tmp_path / "selected"), num_to_sample=k, top_k=True)
    ref_selected = {json.loads(line)["id"] for line in (tmp_path / "selected" / "0.jsonl").read_text(encoding="utf-8").splitlines()}
    ref_rounds = [{raw[i]["id"] for i in chosen} for chosen in _reference_rounds(ref_weights, eligible, select.split_quota(k, [0.6, 0.4]))]
    assert set().union(*ref_rounds) == ref_selected and min(map(len, ref_rounds)) > 50

    output = tmp_path / "out"
    assert _run(
        "--input", paths["raw"], "--target", paths["prose"], "--target", paths["code"], "--output", str(output),
        "--method", "dsir", "--dsir-separate-targets", "--dsir-target-proportions", "0.6,0.4", "--dsir-hash", "sha256",
        "--dsir-top-k", "--num-select", str(k), "--write-scores",
    ) == 0
    scores = _table(output / "scores").to_pylist()
    by_id = {r["id"]: i for i, r in enumerate(raw)}
    worst = max(abs(np.asarray(r["dsir_target_log_weights"]) - ref_weights[by_id[r["id"]]]).max() for r in scores)
    assert worst < 1e-6, worst
    chosen = [{r["id"] for r in scores if r["dsir_target"] == t} for t in range(2)]
    assert chosen == ref_rounds
    assert {r["id"] for r in scores if r["selected"]} == ref_selected
    selected = _table(output / "selected").to_pylist()
    assert {(r["id"], r["dsir_target"]) for r in selected} == {(i, t) for t, ids in enumerate(ref_rounds) for i in ids}


def test_each_separate_target_must_hold_a_valid_record(demo_corpus, tmp_path, capsys):
    demo_dir, _ = demo_corpus
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": "x", "text": ""}\n')
    assert _run(
        "--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*"), "--target", str(empty),
        "--output", str(tmp_path / "out"), "--method", "dsir", "--dsir-separate-targets",
    ) == 2
    assert f"--target {empty}: no valid record" in capsys.readouterr().err


def test_one_separate_target_selects_as_the_pooled_target(demo_corpus, tmp_path):
    demo_dir, _ = demo_corpus
    common = ["--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*"), "--method", "dsir", "--num-select", "90", "--seed", "3"]
    assert _run(*common, "--output", str(tmp_path / "pooled")) == 0
    assert _run(*common, "--output", str(tmp_path / "separate"), "--dsir-separate-targets") == 0
    pooled, separate = (sorted(_table(tmp_path / name / "selected").column("id").to_pylist()) for name in ("pooled", "separate"))
    assert len(pooled) == 90 and pooled == separate
