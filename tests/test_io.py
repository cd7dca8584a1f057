"""Reading: formats, work units and splits, line and row positions, dead letters, ids, probes, schemas."""

import gzip
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import local_pipeline
from winnow.transforms import deadletter, io, schema

CONFIG = io.ReadConfig()
IDS = io.IdPolicy(True, "", "str")


def _jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _read_file(path, config=CONFIG, ids=IDS, split_bytes=None):
    """Every batch of every unit of one file, planned as the job plans it."""
    if split_bytes is not None:
        config = io.ReadConfig(split_bytes=split_bytes, batch_records=config.batch_records)
    units = io.plan_units(io.match_inputs([str(path)]), config)
    return [batch for unit in units for batch in io.read_unit(unit, config, ids)]


def _valid(batches):
    return [(doc_id, text, int(position)) for b in batches for doc_id, text, position in zip(b.ids, b.texts, b.positions)]


def _invalid(batches):
    return [(int(position), reason) for b in batches for _, position, reason, _ in b.invalid]


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"id": "a", "text": "unterminated', deadletter.INVALID_JSON),
        (b'[1, 2]', deadletter.NOT_AN_OBJECT),
        (b'{"id": "a", "title": "x"}', deadletter.MISSING_TEXT),
        (b'{"id": "a", "text": null}', deadletter.MISSING_TEXT),
        (b'{"id": "a", "text": 5}', deadletter.TEXT_NOT_STRING),
        (b'{"id": "a", "text": " \\n\\t "}', deadletter.EMPTY_TEXT),
        (b'{"id": "a", "text": "caf\xe9"}', deadletter.INVALID_UTF8),
        (b'{"id": "a", "text": "lone \\ud800 surrogate"}', deadletter.INVALID_UTF8),
        (b'{"id": 1.5, "text": "ok"}', deadletter.INVALID_ID),
        (b'{"id": "", "text": "ok"}', deadletter.INVALID_ID),
        (b'{"id": 7, "text": "ok"}', deadletter.INVALID_ID),  # an int among the run's string ids
        (b'{"text": "ok"}', deadletter.INVALID_ID),  # the run has an id field; this record lacks it
    ],
)
def test_bad_lines_become_dead_letters_with_their_reason_and_line_number(tmp_path, line, reason):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"id": "x", "text": "fine"}\n\n' + line + b"\n")
    batches = _read_file(path)
    assert _valid(batches) == [("x", "fine", 1)]
    assert _invalid(batches) == [(3, reason)]  # the blank line 2 counts as a line
    assert isinstance(batches[0].invalid[0][3], str)


def test_valid_records_keep_every_field_typed_and_int_ids_as_ints(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(_jsonl([{"id": 3, "text": "a b", "meta": {"n": 1, "tags": ["x"]}, "score": 1.5},
                             {"id": 4, "text": "c", "score": 2, "extra": True}]))
    (batch,) = _read_file(path, ids=io.IdPolicy(True, "", "int"))
    assert batch.ids == [3, 4] and batch.texts == ["a b", "c"]
    assert batch.table.schema.field("meta").type == pa.struct([("n", pa.int64()), ("tags", pa.list_(pa.string()))])
    assert batch.table.schema.field("score").type == pa.float64()  # 1.5 and 2 share a column
    assert batch.table.column("extra").to_pylist() == [None, True]  # keys first seen later are kept
    assert batch.table.column("id").type == pa.int64()


def test_a_field_with_conflicting_values_becomes_a_string_column_and_is_named(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(_jsonl([{"id": "a", "text": "x", "v": 1}, {"id": "b", "text": "y", "v": "two"}, {"id": "c", "text": "z", "v": {"k": 3}}]))
    (batch,) = _read_file(path)
    assert batch.conflicts == {"v"}
    assert batch.table.column("v").to_pylist() == ["1", "two", '{"k": 3}']


def test_generated_ids_are_paths_under_the_common_root_and_line_numbers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name in ("a", "b"):
        (tmp_path / name / "x.jsonl").write_bytes(b'{"text": "one"}\n\n{"text": "two"}\n')
    globs = [str(tmp_path / "a" / "*.jsonl"), str(tmp_path / "b" / "*.jsonl")]
    root = io.common_root(globs)
    assert root == str(tmp_path)
    ids = io.IdPolicy(False, root, "str")
    batches = [b for path, _ in io.match_inputs(globs) for b in _read_file(path, ids=ids)]
    assert [i for b in batches for i in b.ids] == ["a/x.jsonl:1", "a/x.jsonl:3", "b/x.jsonl:1", "b/x.jsonl:3"]


def test_two_spellings_of_a_glob_have_one_root(tmp_path, monkeypatch):
    (tmp_path / "shards").mkdir()
    monkeypatch.chdir(tmp_path)
    assert io.common_root(["shards/*"]) == io.common_root([str(tmp_path / "shards" / "*")]) == str(tmp_path / "shards")


def test_bom_and_crlf_lines(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\r\n{"id": "b", "text": "y"}\r\n')
    assert _valid(_read_file(path)) == [("a", "x", 1), ("b", "y", 2)]


def test_count_line_starts_and_first_lines_by_hand(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"aa\nb\n\ncc\n")  # lines start at bytes 0, 3, 5, 6
    assert [io.count_line_starts(str(path), start, stop) for start, stop in ((0, 4), (4, 6), (6, 9))] == [2, 1, 1]
    assert io.first_lines([2, 1, 1]) == [1, 3, 4]


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=40), blanks=st.lists(st.booleans(), min_size=40, max_size=40),
       split=st.integers(1024, 1400))
def test_byte_range_splits_read_every_line_once_with_its_line_number(tmp_path_factory, lengths, blanks, split):
    path = tmp_path_factory.mktemp("split") / "f.jsonl"
    lines, expected = [], []
    for i, n in enumerate(lengths):
        if blanks[i]:
            lines.append(b"")
        lines.append(json.dumps({"id": f"d{i}", "text": "w" * n * 20}).encode())
        expected.append((f"d{i}", len(lines)))
    path.write_bytes(b"\n".join(lines) + b"\n")
    batches = _read_file(path, split_bytes=split)
    assert [(i, p) for i, _, p in _valid(batches)] == expected


def test_formats_read_the_same_records(tmp_path):
    records = [{"id": f"d{i}", "text": f"text {i}"} for i in range(5)]
    (tmp_path / "a.jsonl").write_bytes(_jsonl(records))
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(_jsonl(records)))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(records)))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet", row_group_size=2)
    expected = [(r["id"], r["text"], i + 1) for i, r in enumerate(records)]
    for name in ("a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet"):
        assert _valid(_read_file(tmp_path / name)) == expected, name


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.zst", "a.parquet"])
def test_reading_only_some_ordinals_returns_those_records_and_counts_the_rest(tmp_path, name):
    """``only`` parses the records asked for, as a full read would return them; every record is still counted."""
    records = [{"id": f"d{i}", "text": f"text {i}", "n": i} for i in range(23)]
    payload = _jsonl(records).replace(b'"text 5"', b'"   "')  # one invalid record: never in a selection, skipped unchecked
    (tmp_path / "a.jsonl").write_bytes(payload)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(payload))
    pq.write_table(pa.Table.from_pylist([r if r["n"] != 5 else {**r, "text": "   "} for r in records]), tmp_path / "a.parquet", row_group_size=4)
    config = io.ReadConfig(batch_records=6)
    (unit,) = io.plan_units(io.match_inputs([str(tmp_path / name)]), config)
    only = np.array([0, 3, 4, 11, 22], np.int64)
    full = list(io.read_unit(unit, config, IDS))
    partial = list(io.read_unit(unit, config, IDS, only=only))
    wanted = [row for row in _valid(full) if row[2] - 1 in only.tolist()]
    assert _valid(partial) == wanted and [r[0] for r in wanted] == ["d0", "d3", "d4", "d11", "d22"]
    assert [row["n"] for b in partial for row in b.table.to_pylist()] == [0, 3, 4, 11, 22]
    assert sum(b.records for b in partial) == sum(b.records for b in full) == 23
    assert not any(b.invalid for b in partial)


def test_parquet_units_are_runs_of_row_groups_with_their_first_row(tmp_path):
    records = [{"id": f"d{i}", "text": "x" * 200 + str(i)} for i in range(10)]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet", row_group_size=2)
    units = io.plan_units(io.match_inputs([str(tmp_path / "a.parquet")]), io.ReadConfig(split_bytes=1024))
    assert len(units) > 1 and [u.index for u in units] == list(range(len(units)))
    assert [u.first_position for u in units] == [1 + 2 * u.start for u in units]
    read = [(i, p) for u in units for b in io.read_unit(u, CONFIG, IDS) for i, p in zip(b.ids, b.positions.tolist())]
    assert read == [(f"d{i}", i + 1) for i in range(10)]


def test_parquet_types_are_kept_and_bad_rows_are_dead_letters(tmp_path):
    table = pa.table({
        "id": pa.array(["a", "b", "c", None], pa.string()),
        "text": pa.array(["ok", None, "  ", "fine"], pa.string()),
        "n": pa.array([1, 2, 3, 4], pa.int32()),
        "when": pa.array([0, 1, 2, 3], pa.timestamp("ms")),
    })
    pq.write_table(table, tmp_path / "a.parquet")
    batches = _read_file(tmp_path / "a.parquet")
    assert _valid(batches) == [("a", "ok", 1)]
    assert _invalid(batches) == [(2, deadletter.MISSING_TEXT), (3, deadletter.EMPTY_TEXT), (4, deadletter.INVALID_ID)]
    assert batches[0].table.schema.field("n").type == pa.int32()
    assert batches[0].table.schema.field("when").type == pa.timestamp("ms")


def test_parquet_binary_text_is_decoded_or_a_dead_letter(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array([b"caf\xc3\xa9", b"caf\xe9"], pa.binary())}), tmp_path / "a.parquet")
    batches = _read_file(tmp_path / "a.parquet")
    assert _valid(batches) == [("a", "café", 1)]
    assert _invalid(batches) == [(2, deadletter.INVALID_UTF8)]


def test_match_inputs_errors(tmp_path):
    with pytest.raises(io.InputError, match="matches no file"):
        io.match_inputs([str(tmp_path / "*.jsonl")])
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(io.InputError, match="unknown input format"):
        io.match_inputs([str(tmp_path / "a.txt")])
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(io.InputError, match="is a directory"):
        io.match_inputs([str(tmp_path / "d.jsonl")])


@pytest.mark.parametrize("fmt", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_file_is_a_clear_error(tmp_path, fmt):
    data = _jsonl([{"id": f"d{i}", "text": "some text " * 20} for i in range(200)])
    compressed = gzip.compress(data) if fmt == ".jsonl.gz" else zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"a{fmt}"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(io.InputError, match="corrupt or truncated"):
        _read_file(path)


def test_parquet_without_text_column_and_not_parquet_are_clear_errors(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(io.InputError, match="no column 'text'"):
        _read_file(tmp_path / "a.parquet")
    (tmp_path / "b.parquet").write_bytes(b"not parquet")
    with pytest.raises(io.InputError, match="not a readable Parquet file"):
        io.probe_file(str(tmp_path / "b.parquet"), CONFIG)


def test_probes_catch_a_wrong_text_field_reserved_names_and_mixed_id_types(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl([{"id": "a", "content": "x"}]))
    probe = io.probe_file(str(tmp_path / "a.jsonl"), CONFIG)
    with pytest.raises(io.InputError, match=r"no field 'text'.*fields: id, content"):
        io.check_probes([probe], CONFIG, str(tmp_path))
    (tmp_path / "b.jsonl").write_bytes(_jsonl([{"id": "a", "text": "x", "winnow_cluster": 3}]))
    with pytest.raises(io.InputError, match="winnow_cluster.*reserved prefix"):
        io.check_probes([io.probe_file(str(tmp_path / "b.jsonl"), CONFIG)], CONFIG, str(tmp_path))
    (tmp_path / "c.jsonl").write_bytes(_jsonl([{"id": 1, "text": "x"}]))
    (tmp_path / "d.jsonl").write_bytes(_jsonl([{"id": "1", "text": "x"}]))
    probes = [io.probe_file(str(tmp_path / n), CONFIG) for n in ("c.jsonl", "d.jsonl")]
    with pytest.raises(io.InputError, match=r"int in .*c\.jsonl, str in .*d\.jsonl"):
        io.check_probes(probes, CONFIG, str(tmp_path))
    pq.write_table(pa.table({"id": [1.5], "text": ["x"]}), tmp_path / "e.parquet")
    with pytest.raises(io.InputError, match="id column 'id' has type double"):
        io.probe_file(str(tmp_path / "e.parquet"), CONFIG)


def test_id_policy_follows_the_first_file(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl([{"text": "x"}]))
    policy = io.check_probes([io.probe_file(str(tmp_path / "a.jsonl"), CONFIG)], CONFIG, str(tmp_path))
    assert policy == io.IdPolicy(False, str(tmp_path), "str")


def test_table_from_rows_unions_keys_in_first_seen_order():
    table, conflicts = io.table_from_rows([{"b": 1}, {"a": "x", "b": 2}])
    assert table.column_names == ["b", "a"] and not conflicts
    assert table.column("a").to_pylist() == [None, "x"]


def test_unify_fields_promotes_and_stringifies_conflicts():
    unified, conflicts = io.unify_fields([
        pa.schema([("n", pa.int64()), ("s", pa.string()), ("z", pa.null())]),
        pa.schema([("n", pa.float64()), ("s", pa.int64()), ("z", pa.int32()), ("new", pa.bool_())]),
    ])
    assert unified == pa.schema([("n", pa.float64()), ("s", pa.string()), ("z", pa.int32()), ("new", pa.bool_())])
    assert conflicts == ["s"]


def test_conform_casts_fills_and_writes_uncastable_values_as_json():
    table = pa.table({"n": pa.array([1, 2], pa.int32()), "s": pa.array([{"k": 1}, None])})
    target = pa.schema([("n", pa.int64()), ("s", pa.string()), ("missing", pa.float64())])
    out = io.conform(table, target)
    assert out.schema == target
    assert out.to_pylist() == [{"n": 1, "s": '{"k": 1}', "missing": None}, {"n": 2, "s": None, "missing": None}]


def test_read_batches_yields_tables_and_dead_letters(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "one"}\nnot json\n{"text": "two"}\n')
    with local_pipeline() as pipeline:
        read = pipeline | io.ReadBatches([str(tmp_path / "*.jsonl")])
        rows = read["batches"] | "Rows" >> beam.FlatMap(lambda t: t.select(["text", schema.ID]).to_pylist())
        assert_that(rows, equal_to([{"text": "one", schema.ID: "a.jsonl:1"}, {"text": "two", schema.ID: "a.jsonl:3"}]), label="Valid")
        reasons = read["errors"] | "Reasons" >> beam.Map(lambda e: (e["position"], e["reason"]))
        assert_that(reasons, equal_to([(2, deadletter.INVALID_JSON)]), label="Invalid")


def test_batches_are_bounded(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl([{"id": f"d{i}", "text": "x"} for i in range(10)]))
    batches = _read_file(tmp_path / "a.jsonl", config=io.ReadConfig(batch_records=4))
    assert [b.records for b in batches] == [4, 4, 2]
    assert np.concatenate([b.ordinals for b in batches]).tolist() == list(range(10))
