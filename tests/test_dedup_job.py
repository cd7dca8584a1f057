"""``winnow dedup`` and ``select --dedup`` end to end: planted copies, modes, dedup indexes (--index/--against), the guard."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from examples import make_demo_corpus
from winnow.pipelines import cli, decide, dedup_index
from tests.helpers import RootedFileSystem, estimate_passes
from winnow.transforms import schema
from winnow.transforms.minhash import band_keys


def _table(directory):
    return pa.concat_tables(pq.read_table(p) for p in sorted(directory.glob("*.parquet")))


def _report(output):
    return json.loads((output / "report.json").read_text())


@pytest.fixture(scope="module")
def dedup_run(demo_corpus, tmp_path_factory):
    demo_dir, _ = demo_corpus
    output = tmp_path_factory.mktemp("dedup") / "out"
    assert cli.main(["dedup", "--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--write-scores"]) == 0
    return demo_dir, output


def _root(scores: dict, doc_id: str) -> str:
    """Follow duplicate_of to the record its cluster kept."""
    while scores[doc_id][schema.DUPLICATE_OF] is not None:
        doc_id = scores[doc_id][schema.DUPLICATE_OF]
    return doc_id


def test_each_planted_copy_ends_in_its_originals_cluster_and_the_smallest_id_is_kept(dedup_run):
    demo_dir, output = dedup_run
    scores = {r["id"]: r for r in _table(output / "scores").to_pylist()}
    kept = set(_table(output / "selected").column("id").to_pylist())
    planted = _table(demo_dir / "raw").to_pylist()  # the Parquet shard as the corpus builder wrote it
    copies = {r["id"]: r["copy_of"] for r in planted if r["variant"] == "exact_copy"}
    assert copies
    for copy_id, original in copies.items():
        root = _root(scores, copy_id)
        assert root == _root(scores, original) and root in kept and root <= min(copy_id, original)
    assert all(scores[i][schema.DUPLICATE_OF] < i for i in scores if scores[i][schema.DUPLICATE_OF])
    assert all(scores[i][schema.DROP_REASON] is None for i in kept)


def test_dedup_accounting_and_report(dedup_run):
    _, output = dedup_run
    report = _report(output)
    counts = report["counts"]
    assert counts["selected"] == _table(output / "selected").num_rows
    assert counts["selected"] + counts["duplicates"] + counts["invalid"] == counts["input"]
    assert all(report["checks"].values())
    near = report["metrics"]["dedup_minhash"]
    assert near["connected_components"]["converged"] is True
    assert near["near_duplicates"] == counts["dropped"]["near_duplicate"] and near["config"]["false_negative_weight"] == 0.8


@pytest.mark.parametrize("mode, reasons", [("exact", {"exact_duplicate"}), ("minhash", {"near_duplicate"})])
def test_dedup_runs_one_kind_alone(demo_corpus, tmp_path, mode, reasons):
    demo_dir, _ = demo_corpus
    output = tmp_path / mode
    assert cli.main(["dedup", "--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--dedup", mode]) == 0
    assert set(_report(output)["counts"]["dropped"]) == reasons


def test_select_with_dedup_never_selects_a_duplicate(demo_corpus, tmp_path):
    demo_dir, _ = demo_corpus
    output = tmp_path / "out"
    assert cli.main(["select", "--method", "random", "--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--dedup", "minhash,exact",
                     "--fraction", "1.0"]) == 0
    report = _report(output)
    assert report["options"]["job"]["deciding"]["dedup"] == "exact,minhash"
    selected = _table(output / "selected").to_pylist()
    texts = [" ".join(r["text"].casefold().split()) for r in selected]
    assert len(set(texts)) == len(texts)  # no two selected records share their normalized text
    assert len(selected) == report["counts"]["valid"] - report["counts"]["duplicates"]


def test_bad_dedup_values_are_usage_errors(tmp_path, capsys):
    assert cli.main(["select", "--input", "x.jsonl", "--output", str(tmp_path), "--dedup", "fuzzy"]) == 2
    assert "expected one of none, exact, minhash, exact,minhash" in capsys.readouterr().err
    assert cli.main(["dedup", "--input", "x.jsonl", "--output", str(tmp_path), "--dedup", "none"]) == 2
    assert "nothing to do" in capsys.readouterr().err


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_incremental_dedup_against_an_index_matches_one_run_over_everything(tmp_path):
    raw, _ = make_demo_corpus.build(code_docs=120)
    old, new = raw[: len(raw) * 4 // 5], raw[len(raw) * 4 // 5 :]
    old_glob = _write_jsonl(tmp_path / "old" / "a.jsonl", old)
    new_glob = _write_jsonl(tmp_path / "new" / "b.jsonl", new)
    index = tmp_path / "index"
    assert cli.main(["dedup", "--input", old_glob, "--output", str(tmp_path / "o1"), "--index", str(index)]) == 0
    manifest = json.loads((index / "index.json").read_text())
    assert sum(s["rows"] for s in manifest["shards"]) == _report(tmp_path / "o1")["counts"]["selected"]
    assert manifest["options"]["signature"]["num_perm"] == 128
    assert cli.main(["dedup", "--input", new_glob, "--output", str(tmp_path / "o2"), "--against", str(index), "--write-scores"]) == 0
    assert cli.main(["dedup", "--input", old_glob, "--input", new_glob, "--output", str(tmp_path / "all")]) == 0
    kept_old, kept_new = (set(_table(tmp_path / o / "selected").column("id").to_pylist()) for o in ("o1", "o2"))
    whole = set(_table(tmp_path / "all" / "selected").column("id").to_pylist())
    # indexed documents keep priority, so which record of a group is kept can differ from one run over
    # everything (a new record with a smaller id); how many are kept does not, up to LSH star centres
    assert abs(len(kept_old | kept_new) - len(whole)) <= len(raw) // 100
    assert kept_old == set(_table(tmp_path / "o1" / "selected").column("id").to_pylist()) and not kept_old & kept_new
    scores = _table(tmp_path / "o2" / "scores").to_pylist()
    old_ids = {r["id"] for r in old}
    indexed = [r for r in scores if r[schema.DUPLICATE_SOURCE] is not None]
    assert indexed and all(r[schema.DUPLICATE_SOURCE] == str(index) and r[schema.DUPLICATE_OF] in old_ids for r in indexed)
    assert all(r[schema.DUPLICATE_OF] not in old_ids for r in scores if r[schema.DUPLICATE_OF] and r[schema.DUPLICATE_SOURCE] is None)


def test_an_index_is_appended_to_and_checked_against_the_run(tmp_path, capsys):
    raw, _ = make_demo_corpus.build(code_docs=30)
    first = _write_jsonl(tmp_path / "a" / "a.jsonl", raw[:200])
    second = _write_jsonl(tmp_path / "b" / "b.jsonl", raw[200:])
    index = tmp_path / "index"
    assert cli.main(["dedup", "--input", first, "--output", str(tmp_path / "o1"), "--index", str(index)]) == 0
    assert cli.main(["dedup", "--input", second, "--output", str(tmp_path / "o2"), "--index", str(index), "--against", str(index)]) == 0
    shards = json.loads((index / "index.json").read_text())["shards"]
    assert len(shards) == 2 and sum(s["rows"] for s in shards) == sum(_report(tmp_path / o)["counts"]["selected"] for o in ("o1", "o2"))
    assert cli.main(["dedup", "--input", second, "--output", str(tmp_path / "o3"), "--against", str(index), "--num-perm", "64"]) == 2
    assert f"--against {index}: the index's MinHash num_perm is 128, this run's 64" in capsys.readouterr().err
    assert cli.main(["dedup", "--input", second, "--output", str(tmp_path / "o4"), "--index", str(index), "--shingle", "3"]) == 2
    assert "was written with other options" in capsys.readouterr().err
    assert cli.main(["dedup", "--input", second, "--output", str(tmp_path / "o5"), "--against", str(tmp_path / "a")]) == 2
    assert "not a winnow dedup index" in capsys.readouterr().err


def test_index_round_trip_keeps_ids_hashes_and_signatures(tmp_path):
    raw, _ = make_demo_corpus.build(code_docs=10)
    path = _write_jsonl(tmp_path / "a" / "a.jsonl", [{"id": i, "text": r["text"]} for i, r in enumerate(raw[:50])])
    index = tmp_path / "index"
    assert cli.main(["dedup", "--input", path, "--output", str(tmp_path / "o"), "--index", str(index)]) == 0
    manifest = dedup_index.read_manifest(str(index))
    rows = pa.concat_tables(pq.read_table(index / s["name"]) for s in manifest["shards"])
    assert rows.column("id").type == pa.int64()  # the input's id type, kept
    assert rows.schema.field("signature").type == pa.binary(4 * 128) and rows.schema.field("exact_hash").type == pa.binary(16)
    assert sorted(rows.column("id").to_pylist()) == sorted(_table(tmp_path / "o" / "selected").column("id").to_pylist())
    signatures = np.frombuffer(b"".join(rows.column("signature").to_pylist()), "<u4").reshape(-1, 128)  # little-endian rows
    scored = pa.concat_tables(pq.read_table(p, columns=["id", "signature"]) for p in sorted((tmp_path / "o" / "features").glob("unit-*.parquet")))
    run_signatures = dict(zip(scored.column("id").to_pylist(), scored.column("signature").to_pylist()))
    assert scored.schema.field("signature").type == pa.binary(4 * 128)
    assert all(row == run_signatures[i] for i, row in zip(rows.column("id").to_pylist(), rows.column("signature").to_pylist()))
    assert rows.schema.metadata[b"winnow.band_rows"] == b"12,10" and rows.schema.field("band_keys").type == pa.binary(8 * 12)
    assert np.array_equal(np.frombuffer(b"".join(rows.column("band_keys").to_pylist()), "<u8").reshape(-1, 12), band_keys(signatures, 12, 10))


def test_stored_band_keys_decide_as_the_signatures_do(tmp_path):
    """A run with the index's bands reads its band keys; one with other bands, or an index shard without
    them, computes them from the signatures: the same decisions either way."""
    raw, _ = make_demo_corpus.build(code_docs=30)
    by_id = {r["id"]: r for r in raw}
    first = _write_jsonl(tmp_path / "a" / "a.jsonl", raw[:200])
    index = tmp_path / "index"
    assert cli.main(["dedup", "--input", first, "--output", str(tmp_path / "o1"), "--index", str(index)]) == 0
    kept = _table(tmp_path / "o1" / "selected").column("id").to_pylist()[:20]
    near = [{"id": f"near-{i}", "text": by_id[i]["text"] + " and one more word"} for i in kept]
    second = _write_jsonl(tmp_path / "b" / "b.jsonl", raw[200:] + near)

    def decisions(name, *flags):
        assert cli.main(["dedup", "--input", second, "--output", str(tmp_path / name), "--against", str(index), "--write-scores", *flags]) == 0
        return sorted((r["id"], r[schema.DROP_REASON], r[schema.DUPLICATE_OF]) for r in _table(tmp_path / name / "scores").to_pylist())

    stored, other_bands = decisions("stored"), decisions("other", "--threshold", "0.7")
    assert sum(reason == "near_duplicate" and of in kept for _, reason, of in stored) >= 15
    for shard in index.glob("shard-*.parquet"):  # an index of an earlier version: fixed_size_list columns
        table = pq.read_table(shard)
        for name, width, dtype in (("signature", 128, "<u4"), ("band_keys", 12, "<u8")):
            values = np.frombuffer(b"".join(table.column(name).to_pylist()), dtype).reshape(-1, width)
            listed = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1).astype(dtype[1:])), width)
            table = table.set_column(table.schema.get_field_index(name), name, listed)
        pq.write_table(table, shard)
    assert decisions("listed") == stored and decisions("listed_other", "--threshold", "0.7") == other_bands
    for shard in index.glob("shard-*.parquet"):
        pq.write_table(pq.read_table(shard).drop_columns(["band_keys"]).replace_schema_metadata(None), shard)
    assert decisions("computed") == stored
    assert decisions("computed_other", "--threshold", "0.7") == other_bands


def test_an_index_on_a_beam_filesystem_round_trips(tmp_path, monkeypatch):
    monkeypatch.setattr(RootedFileSystem, "ROOT", str(tmp_path / "store"))
    raw, _ = make_demo_corpus.build(code_docs=10)
    first = _write_jsonl(tmp_path / "a" / "a.jsonl", raw[:100])
    assert cli.main(["dedup", "--input", first, "--output", str(tmp_path / "o1"), "--index", "rooted://idx"]) == 0
    kept = _table(tmp_path / "o1" / "selected").column("id").to_pylist()[:5]
    by_id = {r["id"]: r for r in raw}
    copies = [{"id": f"copy-{i}", "text": by_id[i]["text"]} for i in kept]
    second = _write_jsonl(tmp_path / "b" / "b.jsonl", raw[100:150] + copies)
    assert (tmp_path / "store" / "idx" / "index.json").exists()
    assert cli.main(["dedup", "--input", second, "--output", str(tmp_path / "o2"), "--against", "rooted://idx", "--write-scores"]) == 0
    scores = {r["id"]: r for r in _table(tmp_path / "o2" / "scores").to_pylist()}
    for original in kept:
        row = scores[f"copy-{original}"]
        assert (row[schema.DROP_REASON], row[schema.DUPLICATE_OF], row[schema.DUPLICATE_SOURCE]) == ("exact_duplicate", original, "rooted://idx")


def test_dedup_against_an_index_decides_the_same_on_parallel_workers(tmp_path):
    raw, _ = make_demo_corpus.build(code_docs=20)
    first = _write_jsonl(tmp_path / "a" / "a.jsonl", raw[:150])
    second = _write_jsonl(tmp_path / "b" / "b.jsonl", raw[150:] + [{"id": f"copy-{r['id']}", "text": r["text"]} for r in raw[:150:10]])
    assert cli.main(["dedup", "--input", first, "--output", str(tmp_path / "o1"), "--index", str(tmp_path / "index")]) == 0
    decisions = []
    for name, flags in (("memory", []), ("workers", ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])):
        output = tmp_path / name
        # --max-cluster-size 1: every component goes through the guard, whose text reads run on the workers too
        assert cli.main(["dedup", "--input", second, "--output", str(output), "--against", str(tmp_path / "index"), "--write-scores",
                         "--max-cluster-size", "1", *flags]) == 0
        assert _report(output)["metrics"]["dedup_minhash"]["split_component_count"] > 0
        rows = _table(output / "scores").to_pylist()
        decisions.append(sorted((r["id"], r[schema.DROP_REASON], r[schema.DUPLICATE_OF], r[schema.DUPLICATE_SOURCE]) for r in rows))
    assert decisions[0] == decisions[1]
    assert sum(1 for _, _, _, source in decisions[0] if source is not None) >= 15  # the copies name indexed documents


def test_the_guard_reads_the_text_of_a_component_above_the_limit(tmp_path):
    # a ~ b ~ c, where c's estimated Jaccard to a passes 0.8 and its exact one (0.774) does not
    a, b, c = estimate_passes()
    fillers = [{"id": f"f{i}", "text": " ".join(f"f{i}x{j}" for j in range(40))} for i in range(30)]
    first = _write_jsonl(tmp_path / "in" / "a.jsonl", fillers[:15] + [{"id": "a", "text": a}, {"id": "c", "text": c}])
    second = _write_jsonl(tmp_path / "in" / "b.jsonl", [{"id": "b", "text": b}] + fillers[15:])
    guarded = ["--write-scores", "--max-cluster-size", "2"]
    assert cli.main(["dedup", "--input", first, "--input", second, "--output", str(tmp_path / "out"), *guarded]) == 0
    scores = {r["id"]: r for r in _table(tmp_path / "out" / "scores").to_pylist()}
    assert (scores["b"][schema.DROP_REASON], scores["b"][schema.DUPLICATE_OF]) == ("near_duplicate", "a")
    assert scores["c"][schema.SELECTED] and sum(not r[schema.SELECTED] for r in scores.values()) == 1
    split = _report(tmp_path / "out")["metrics"]["dedup_minhash"]["split_components"]
    assert [(s["size"], s["largest_group"], s["text_members"]) for s in split] == [(3, 2, 3)]
    # against an index holding a, whose text is never read: c's copy is compared to a by the signatures
    assert cli.main(["dedup", "--input", first, "--output", str(tmp_path / "o1"), "--index", str(tmp_path / "index")]) == 0
    new = _write_jsonl(tmp_path / "new" / "n.jsonl", [{"id": "b2", "text": b}, {"id": "c2", "text": c}])
    assert cli.main(["dedup", "--input", new, "--output", str(tmp_path / "o2"), "--against", str(tmp_path / "index"), *guarded]) == 0
    rows = sorted((r["id"], r[schema.DROP_REASON], r[schema.DUPLICATE_OF]) for r in _table(tmp_path / "o2" / "scores").to_pylist())
    assert rows == [("b2", "near_duplicate", "a"), ("c2", "near_duplicate", "a")]
    split = _report(tmp_path / "o2")["metrics"]["dedup_minhash"]["split_components"]
    assert [(s["size"], s["text_members"]) for s in split] == [(3, 2)]


@pytest.mark.parametrize("row_group_bytes, row_groups", [(32 << 20, 1), (1, 3)])  # 1 byte: a row group per read batch
def test_selected_parts_are_written_in_row_groups_of_row_group_bytes_not_one_per_read_batch(tmp_path, monkeypatch, row_group_bytes, row_groups):
    records = [{"id": f"r{i:05d}", "text": f"record {i} says {i * 7919 % 10007} and {i * 104729 % 1009} words"} for i in range(2_500)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))  # three read batches of 1,024
    monkeypatch.setattr(decide, "ROW_GROUP_BYTES", row_group_bytes)
    output = tmp_path / "out"
    assert cli.main(["dedup", "--input", str(tmp_path / "in.jsonl"), "--output", str(output), "--dedup", "exact"]) == 0
    (part,) = sorted((output / "selected").glob("*.parquet"))
    assert pq.ParquetFile(part).metadata.num_row_groups == row_groups
    assert pq.read_table(part).column("id").to_pylist() == [r["id"] for r in records]  # every row, in input order
