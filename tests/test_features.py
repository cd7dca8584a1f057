"""Score once, select many: the features table, re-selection from it, and resuming a killed run."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from examples import make_demo_corpus
from winnow.pipelines import cli, features
from winnow.transforms import schema

SELECT = ["--num-select", "150", "--dedup", "exact,minhash", "--seed", "2", "--write-scores"]


def _run(*argv) -> int:
    return cli.main(["select", *argv])


def _ids(output) -> list:
    files = sorted((output / "selected").glob("*.parquet"))
    return sorted(pa.concat_tables(pq.read_table(f) for f in files).column("id").to_pylist())


def _scores(output) -> list:
    files = sorted((output / "scores").glob("*.parquet"))
    return sorted(pa.concat_tables(pq.read_table(f) for f in files).to_pylist(), key=lambda r: r["id"])


def _report(output) -> dict:
    return json.loads((output / "report.json").read_text())


@pytest.fixture(scope="module")
def combined_run(demo_corpus, tmp_path_factory):
    """A full combined run with a target, over the demo corpus cut into small work units."""
    demo_dir, _ = demo_corpus
    output = tmp_path_factory.mktemp("full") / "out"
    argv = ["--input", str(demo_dir / "raw" / "*"), "--target", str(demo_dir / "target" / "*"), "--method", "combined", "--combined-zipfit-weight", "0.5", *SELECT]
    assert _run(*argv, "--output", str(output)) == 0
    return argv, output


def test_the_features_table_holds_one_complete_row_per_record(combined_run):
    _, output = combined_run
    table = features.FeaturesTable(str(output / "features"))
    manifest = table.manifest()
    assert table.complete_units() == {u["index"] for u in manifest["units"]} and table.fit_complete()
    rows = pa.concat_tables(pq.read_table(table.shard(u["index"])) for u in manifest["units"])
    assert rows.num_rows == _report(output)["counts"]["input"]
    for name in (features.EXACT_HASH, features.SIGNATURE, features.DSIR_LOG_WEIGHT, features.ZIPFIT_ALIGNMENT, features.EMBEDDING,
                 features.CLUSTER, features.CLUSTER_DISTANCE):
        assert name in rows.column_names
    assert manifest["scoring"]["minhash"]["num_perm"] == 128 and "threshold" not in manifest["scoring"]["minhash"]
    chunk = pq.ParquetFile(table.shard(0)).metadata.row_group(0)
    encodings = {chunk.column(i).path_in_schema.split(".")[0]: (chunk.column(i).compression, chunk.column(i).encodings) for i in range(chunk.num_columns)}
    for name in (features.EXACT_HASH, features.SIGNATURE, features.EMBEDDING):  # random bits, float16 rows: neither a dictionary nor zstd
        assert encodings[name][0] == "UNCOMPRESSED" and "RLE_DICTIONARY" not in encodings[name][1]
    for name in (features.ID, features.DSIR_LOG_WEIGHT):
        assert encodings[name][0] == "ZSTD"


def test_read_rows_returns_the_rows_asked_for_in_their_order(tmp_path, monkeypatch):
    monkeypatch.setattr(features, "ROWS_PER_READ", 7)  # many batches, rows asked for in several
    rng = np.random.default_rng(0)
    table = pa.table({"id": [f"d{i}" for i in range(100)], features.SIGNATURE: features.signature_array(
        rng.integers(0, 2**32, (100, 4), dtype=np.uint64).astype(np.uint32))})
    path = str(tmp_path / "shard.parquet")
    pq.write_table(table, path, row_group_size=30, **features.parquet_options(table.schema))
    for ordinals in ([], [0], [99, 3, 3, 50], sorted(rng.choice(100, 40, replace=False)), rng.integers(0, 100, 60)):
        got = features.read_rows(path, ["id", features.SIGNATURE], np.array(ordinals, np.int64))
        assert got.equals(table.take(pa.array(ordinals, pa.int64())))
    read_groups = []  # only the row groups holding a wanted row are read
    iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", lambda self, *a, **k: read_groups.extend(k["row_groups"]) or iter_batches(self, *a, **k))
    assert features.read_rows(path, ["id"], np.array([95, 31, 35])).column("id").to_pylist() == ["d95", "d31", "d35"]
    assert read_groups == [1, 3]
    with pytest.raises(IndexError, match="rows 5..100 asked for, the file has 100"):
        features.read_rows(path, ["id"], np.array([5, 100]))
    with pytest.raises(IndexError, match="rows -1..5 asked for"):
        features.read_rows(path, ["id"], np.array([5, -1]))


@pytest.mark.parametrize("method, extra", [("combined", []), ("dsir", ["--dsir-top-k"]), ("random", ["--dedup", "exact"])])
def test_reselection_from_the_features_table_equals_a_full_run(combined_run, tmp_path, method, extra):
    argv, output = combined_run
    options = [a for a in argv if a not in ("combined",)]
    options = [*options[: options.index("--method") + 1], method, *options[options.index("--method") + 1 :]]
    again, full = tmp_path / "again", tmp_path / "full"
    assert _run(*options, *extra, "--num-select", "77", "--output", str(full)) == 0
    assert _run(*options, *extra, "--num-select", "77", "--features", str(output / "features"), "--output", str(again)) == 0
    assert _ids(again) == _ids(full) and len(_ids(full)) == 77
    assert _scores(again) == _scores(full)
    again_metrics, full_metrics = _report(again)["metrics"], _report(full)["metrics"]
    assert again_metrics.get("score_distributions") == full_metrics.get("score_distributions")  # the pool's from the saved statistics
    for subset, stats in full_metrics.get("vendi", {}).items():
        assert again_metrics["vendi"][subset]["vendi_score"] == pytest.approx(stats["vendi_score"], rel=1e-9)
    assert not (again / "features").exists()  # re-selection reads the table, it does not copy it
    assert _report(again)["timings_s"].keys() >= {"decide_write"} and "score" not in _report(again)["timings_s"]


def test_reselection_reuses_the_saved_dedup_decisions_of_the_same_dedup_options(combined_run, tmp_path):
    """The full run saves its dedup decisions beside the table; a re-selection with the same dedup options
    reads them (seen by altering them), one with another threshold deduplicates again."""
    argv, output = combined_run
    saved = list((output / "features").glob("dedup-*"))
    assert len(saved) == 1 and (saved[0] / "stats.json").exists()
    table = tmp_path / "features"
    shutil.copytree(output / "features", table)
    cache = table / saved[0].name
    near_dropped = 0
    for path in cache.glob("unit-*.pkl"):
        decisions = pickle.loads(path.read_bytes())
        if "near" in decisions:  # (ordinals, kept ids, kept sources, clusters, dropped)
            near_dropped += int(decisions.pop("near")[4].sum())
        path.write_bytes(pickle.dumps(decisions))  # as if no record of the unit had a near duplicate
    assert near_dropped > 0
    selection = ["--method", "random", "--num-select", "77", "--seed", "2", "--features", str(table)]
    assert _run(*selection, "--dedup", "exact,minhash", "--output", str(tmp_path / "same")) == 0
    assert "near_duplicate" not in _report(tmp_path / "same")["counts"]["dropped"]
    assert _run(*selection, "--dedup", "exact,minhash", "--dedup-threshold", "0.7", "--output", str(tmp_path / "other")) == 0
    assert _report(tmp_path / "other")["counts"]["dropped"]["near_duplicate"] >= near_dropped
    assert len(list(table.glob("dedup-*"))) == 1  # a re-selection does not write into the table it reads


def test_reselection_reports_the_saved_statistics_of_the_same_pool(combined_run, tmp_path):
    """The full run saves its pool's report statistics beside its dedup decisions; a re-selection over the
    same pool reports them (seen by altering them) beside its own selection's, another pool its own."""
    argv, output = combined_run
    full = _report(output)["metrics"]
    pools = list((output / "features").glob("dedup-*/pool-*.json"))
    assert len(pools) == 1
    saved = json.loads(pools[0].read_text())
    assert saved["vendi"] == full["vendi"]["all"]
    for name, distribution in full["score_distributions"].items():
        assert saved["scores"][name]["quantiles"] == distribution["quantiles"]["all"]
        assert saved["scores"][name]["counts"] == distribution["histogram"]["counts"]["all"]
    table = tmp_path / "features"
    shutil.copytree(output / "features", table)
    saved["vendi"]["vendi_score"] = 12345.0
    saved["scores"]["winnow_dsir_log_weight"]["counts"][0] += 1000
    (table / pools[0].relative_to(output / "features")).write_text(json.dumps(saved))
    selection = [*argv[: argv.index("--num-select")], "--num-select", "77", *argv[argv.index("--num-select") + 2 :], "--features", str(table)]
    assert _run(*selection, "--output", str(tmp_path / "same")) == 0
    same = _report(tmp_path / "same")["metrics"]
    assert same["vendi"]["all"]["vendi_score"] == 12345.0 and same["vendi"]["selected"]["n_vectors"] == 77
    weights = same["score_distributions"]["winnow_dsir_log_weight"]
    assert weights["histogram"]["counts"]["all"][0] == full["score_distributions"]["winnow_dsir_log_weight"]["histogram"]["counts"]["all"][0] + 1000
    assert sum(weights["histogram"]["counts"]["selected"]) + weights["histogram"]["underflow"]["selected"] + weights["histogram"]["overflow"]["selected"] == 77
    assert _run(*selection, "--semdedup-eps", "0.05", "--output", str(tmp_path / "other")) == 0
    other = _report(tmp_path / "other")["metrics"]
    assert other["vendi"]["all"]["vendi_score"] != 12345.0 and other["vendi"]["all"]["n_vectors"] < full["vendi"]["all"]["n_vectors"]


def test_reselection_bands_come_from_the_tables_minhash_options(demo_corpus, tmp_path):
    """A table scored with 64 permutations, re-selected without the flag at another threshold: the
    bands are those of 64 permutations (the command line's default is 128), as in a full run."""
    demo_dir, _ = demo_corpus
    options = ["--input", str(demo_dir / "raw" / "*"), "--method", "random", "--num-select", "60", "--dedup", "minhash", "--write-scores"]
    assert _run(*options, "--dedup-num-perm", "64", "--output", str(tmp_path / "scored")) == 0
    lower = ["--dedup-threshold", "0.6"]
    assert _run(*options, "--dedup-num-perm", "64", *lower, "--output", str(tmp_path / "full")) == 0
    assert _run(*options, *lower, "--features", str(tmp_path / "scored" / "features"), "--output", str(tmp_path / "again")) == 0
    assert _scores(tmp_path / "again") == _scores(tmp_path / "full")
    assert _report(tmp_path / "again")["counts"]["dropped"]["near_duplicate"] > _report(tmp_path / "scored")["counts"]["dropped"]["near_duplicate"]


def test_reselection_may_omit_the_inputs_but_not_change_a_scoring_option(combined_run, tmp_path, capsys):
    _, output = combined_run
    table = str(output / "features")
    assert _run("--method", "combined", "--features", table, "--output", str(tmp_path / "a"), "--num-select", "10") == 0
    assert len(_ids(tmp_path / "a")) == 10
    assert _run("--method", "combined", "--features", table, "--output", str(tmp_path / "b"), "--dsir-buckets", "5000") == 2
    assert "--dsir-buckets 5000 (the features table has 10000): a scoring option" in capsys.readouterr().err
    assert _run("--method", "zipfit", "--features", table, "--output", str(tmp_path / "c"), "--dedup", "minhash", "--dedup-num-perm", "64") == 2
    assert "--dedup-num-perm 64 (the features table has 128)" in capsys.readouterr().err


def test_overwrite_refuses_to_delete_the_features_table_it_reads(combined_run, capsys):
    _, output = combined_run
    assert _run("--method", "random", "--features", str(output / "features"), "--output", str(output), "--overwrite") == 2
    assert "--features table this run reads" in capsys.readouterr().err


def _resume_after(argv, output, tmp_path, damage) -> None:
    """Copy a complete run, ``damage`` it as a kill would have left it, resume: the same output as the complete run."""
    killed = tmp_path / "killed"
    shutil.copytree(output, killed)
    for name in ("report.json", "report.html"):
        (killed / name).unlink()
    damage(killed)
    assert _run(*argv, "--output", str(killed), "--resume") == 0
    assert _ids(killed) == _ids(output)
    assert _scores(killed) == _scores(output)
    assert _report(killed)["counts"] == _report(output)["counts"]


def test_resume_after_a_kill_in_the_fit_pass(combined_run, tmp_path):
    argv, output = combined_run

    def killed_in_fit(directory):
        for path in (directory / "features").glob("unit-*"):
            path.unlink()
        for name in ("fit.json", "fit.pkl"):
            (directory / "features" / name).unlink()
        for kind in ("selected", "scores", "errors"):
            shutil.rmtree(directory / kind)

    _resume_after(argv, output, tmp_path, killed_in_fit)


def test_resume_after_a_kill_in_the_score_pass(combined_run, tmp_path):
    argv, output = combined_run

    def killed_in_score(directory):
        markers = sorted((directory / "features").glob("unit-*.json"))
        for marker in markers[len(markers) // 2 :]:
            marker.unlink()  # shards without a marker are incomplete: scored again
        (directory / "features" / "unit-00000.parquet.inprogress-0123456789ab").write_bytes(b"half a shard")
        for kind in ("selected", "scores", "errors"):
            shutil.rmtree(directory / kind)

    _resume_after(argv, output, tmp_path, killed_in_score)


def test_resume_after_a_kill_in_the_write_pass(combined_run, tmp_path):
    argv, output = combined_run
    written = {}

    def killed_in_write(directory):
        parts = sorted((directory / "selected").glob("part-*.parquet"))
        for part in parts[: len(parts) // 2]:  # these units finished: their markers are as the write pass left them
            written[part.name] = part.stat().st_mtime_ns
            stats = {"unit": int(part.stem[-5:]), "written": pq.read_metadata(part).num_rows, "kl_counts": {}, "openings": {}}
            (part.parent / f"_{part.stem}.json").write_text(json.dumps(stats))
        for part in parts[len(parts) // 2 :]:
            part.unlink()

    _resume_after(argv, output, tmp_path, killed_in_write)
    for name, mtime in written.items():
        assert (tmp_path / "killed" / "selected" / name).stat().st_mtime_ns == mtime  # complete units are not written again


def test_resume_with_a_changed_scoring_option_is_an_error_naming_it(combined_run, tmp_path, capsys):
    argv, output = combined_run
    killed = tmp_path / "killed"
    shutil.copytree(output, killed)
    (killed / "report.json").unlink()
    assert _run(*argv, "--output", str(killed), "--resume", "--dsir-ngrams", "1") == 2
    assert "--resume: --dsir-ngrams 1 (the features table has 2)" in capsys.readouterr().err


def test_ctrl_c_is_one_line_exit_130_no_temporary_files_and_resume_completes(tmp_path):
    """A real interrupt (SIGINT to the command) while it works, then ``--resume``: the same ids as an uninterrupted run."""
    corpus = tmp_path / "corpus"
    make_demo_corpus.write_corpus(corpus, code_docs=1500)
    argv = ["--input", str(corpus / "raw" / "*"), "--method", "random", "--dedup", "exact,minhash", "--num-select", "200"]
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # a shell starts background jobs with SIGINT ignored, and Python keeps it ignored: restore it
    process = subprocess.Popen([sys.executable, "-m", "winnow.pipelines.cli", "select", *argv, "--output", str(output)],
                               stderr=subprocess.PIPE, text=True, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (output / "features" / "manifest.json").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("winnow select: interrupted: ") and last.endswith("units scored; rerun with --resume to continue"), err
    assert "Traceback" not in err
    assert not list(output.rglob("*.inprogress*")) and not (output / "report.json").exists()
    assert _run(*argv, "--output", str(output), "--resume") == 0
    assert _run(*argv, "--output", str(tmp_path / "whole")) == 0
    assert _ids(output) == _ids(tmp_path / "whole")


def test_ids_are_the_same_under_two_spellings_of_the_glob(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    make_demo_corpus.write_corpus(corpus, code_docs=20)
    for path in (corpus / "raw").iterdir():  # no id field: ids from the path and the line or row
        if path.suffix == ".parquet":
            pq.write_table(pq.read_table(path).drop_columns(["id"]), path)
        elif path.name.endswith(".jsonl"):
            lines = []
            for line in path.read_bytes().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    lines.append(line)
                    continue
                if isinstance(record, dict):
                    record.pop("id", None)
                lines.append(json.dumps(record).encode())
            path.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.chdir(corpus)
    relative, absolute = tmp_path / "relative", tmp_path / "absolute"
    assert _run("--method", "random", "--num-select", "40", "--input", "raw/*.jsonl", "--input", "raw/*.parquet", "--output", str(relative)) == 0
    assert _run("--method", "random", "--num-select", "40", "--input", str(corpus / "raw" / "*.jsonl"), "--input", str(corpus / "raw" / "*.parquet"),
                "--output", str(absolute)) == 0
    ids = [i for i in pa.concat_tables(pq.read_table(f) for f in sorted((relative / "selected").glob("*.parquet"))).column(schema.ID).to_pylist()]
    assert sorted(ids) == sorted(pa.concat_tables(pq.read_table(f) for f in sorted((absolute / "selected").glob("*.parquet")))
                                 .column(schema.ID).to_pylist())
    assert all(i.split(":")[0] in ("shard-0.jsonl", "shard-3.parquet") and i.split(":")[1].isdigit() for i in ids)


def test_fixed_rows_round_trip_both_column_layouts_and_a_sliced_column():
    values = (np.arange(4 * 3, dtype=np.uint64) * 0x0123456789ABCDEF).reshape(4, 3)
    stored = features.fixed_rows_array(values)
    assert stored.type == pa.binary(3 * 8) and stored[0].as_py() == values[0].astype("<u8").tobytes()
    listed = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 3)  # the layout of earlier versions
    for column in (stored, listed, pa.chunked_array([stored[:1], stored[1:]])):
        assert np.array_equal(features.fixed_lists_of(column, np.uint64), values)
    assert np.array_equal(features.fixed_lists_of(stored.slice(1, 2), np.uint64), values[1:3])  # the slice's offset is honoured


def test_embeddings_are_stored_as_float16_rows_and_read_back_in_both_layouts():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 64))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    X[1] = X[0] + 0.05 * X[1]
    X[1] /= np.linalg.norm(X[1])  # one close pair, cosine ~ 0.999
    stored = features.embedding_array(X)
    assert stored.type == pa.binary(2 * 64) and stored[2].as_py() == X[2].astype("<f2").tobytes()
    back = features.embeddings_of(stored)
    assert back.dtype == np.float32 and back.shape == (300, 64)
    np.testing.assert_array_equal(back, X.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(back, X, rtol=2.0**-11, atol=2.0**-25)  # float16 rounding: half a unit in 11 bits
    assert np.abs(back.astype(np.float64) @ back.T - X @ X.T).max() < 1e-3  # about three decimals of cosine
    listed = pa.FixedSizeListArray.from_arrays(pa.array(X.astype(np.float16).reshape(-1)), 64)  # earlier versions' layout
    for column in (listed, pa.chunked_array([stored.slice(0, 50), stored.slice(50)])):
        np.testing.assert_array_equal(features.embeddings_of(column), back)
    half = features.embeddings_of(stored, features.EMBEDDING_DTYPE)  # as stored, no conversion
    assert half.dtype == np.float16 and np.array_equal(half.astype(np.float32), back)
    empty = features.embedding_array(np.zeros((0, 8)))
    assert features.embeddings_of(empty).shape == (0, 8) and features.embeddings_of(pa.chunked_array([], type=empty.type)).shape == (0, 8)


def test_parquet_options_key_a_list_columns_codec_by_its_values_path(tmp_path):
    schema = pa.schema([(features.ID, pa.string()), (features.DSIR_TARGET_LOG_WEIGHTS, pa.list_(pa.float64())), (features.SIGNATURE, pa.binary(8))])
    options = features.parquet_options(schema)
    assert options == {"compression": {features.ID: "zstd", f"{features.DSIR_TARGET_LOG_WEIGHTS}.list.element": "zstd", features.SIGNATURE: "none"},
                       "use_dictionary": [features.ID]}
    pq.write_table(pa.table({features.ID: ["a"], features.DSIR_TARGET_LOG_WEIGHTS: [[0.5, 1.5]], features.SIGNATURE: [b"12345678"]}, schema=schema),
                   tmp_path / "t.parquet", **options)
    chunk = pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0)
    assert [chunk.column(i).compression for i in range(3)] == ["ZSTD", "ZSTD", "UNCOMPRESSED"]
