"""``winnow dedup`` and ``winnow select --dedup`` end to end on the demo corpus's planted copies."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from winnow.pipelines import cli


def _table(directory):
    return pa.concat_tables(pq.read_table(p) for p in sorted(directory.glob("*.parquet")))


@pytest.fixture(scope="module")
def dedup_run(demo_corpus, tmp_path_factory):
    demo_dir, _ = demo_corpus
    output = tmp_path_factory.mktemp("dedup") / "out"
    assert cli.main(["dedup", "--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--write-scores"]) == 0
    return demo_dir, output


def _root(scores: dict, doc_id: str) -> str:
    """Follow duplicate_of to the record its cluster kept."""
    while scores[doc_id]["duplicate_of"] is not None:
        doc_id = scores[doc_id]["duplicate_of"]
    return doc_id


def test_each_planted_copy_ends_in_its_originals_cluster_and_the_smallest_id_is_kept(dedup_run):
    demo_dir, output = dedup_run
    scores = {r["id"]: r for r in _table(output / "scores").to_pylist()}
    kept = set(_table(output / "selected").column("id").to_pylist())
    copies = {r["id"]: r["copy_of"] for r in _planted_records(demo_dir) if r["variant"] == "exact_copy"}
    assert copies
    for copy_id, original in copies.items():
        root = _root(scores, copy_id)
        assert root == _root(scores, original) and root in kept
        assert root <= min(copy_id, original)
        dropped = max(copy_id, original)
        assert scores[dropped]["drop_reason"] == "exact_duplicate"
    assert all(scores[i]["duplicate_of"] < i for i in scores if scores[i]["duplicate_of"])
    assert all(scores[i]["drop_reason"] is None for i in kept)


def _planted_records(demo_dir):
    """The raw records of the demo's Parquet shard as the corpus builder wrote them (variant, copy_of)."""
    return _table(demo_dir / "raw").to_pylist()


def test_dedup_accounting_and_report(dedup_run):
    _, output = dedup_run
    report = json.loads((output / "report.json").read_text())
    counts = report["counts"]
    assert counts["selected"] == _table(output / "selected").num_rows
    assert counts["selected"] + counts["duplicates"] + counts["invalid"] == counts["input"]
    assert report["checks"] == {"input_equals_records_read": True}
    assert report["metrics"]["dedup_minhash"]["connected_components"]["converged"] is True
    assert report["metrics"]["dedup_minhash"]["near_duplicates"] == counts["dropped"]["near_duplicate"]


def test_select_with_dedup_never_selects_a_duplicate(demo_corpus, tmp_path):
    demo_dir, _ = demo_corpus
    output = tmp_path / "out"
    assert cli.main(["select", "--method", "random", "--input", str(demo_dir / "raw" / "*"), "--output", str(output), "--dedup", "minhash,exact",
                     "--fraction", "1.0", "--write-scores"]) == 0
    report = json.loads((output / "report.json").read_text())
    assert report["options"]["dedup"] == "exact,minhash"
    selected = _table(output / "selected").to_pylist()
    texts = [" ".join(r["text"].casefold().split()) for r in selected]
    assert len(set(texts)) == len(texts)  # no two selected records share their normalized text
    assert len(selected) == report["counts"]["valid"] - report["counts"]["duplicates"]


def test_bad_dedup_value_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["select", "--input", "x.jsonl", "--output", str(tmp_path), "--dedup", "fuzzy"]) == 2
    assert "expected one of none, exact, minhash, exact,minhash" in capsys.readouterr().err
