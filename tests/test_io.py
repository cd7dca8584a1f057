"""Reader and writer: formats, compressions, splits, bad records, schema conformance."""

import gzip
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import local_pipeline
from winnow.transforms import io

CONFIG = io.ReadConfig()


def _jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _write_formats(tmp_path, records):
    """The same records as .jsonl, .jsonl.gz, .jsonl.zst and .parquet files."""
    paths = {
        io.JSONL: tmp_path / "a.jsonl",
        io.JSONL_GZ: tmp_path / "a.jsonl.gz",
        io.JSONL_ZST: tmp_path / "a.jsonl.zst",
        io.PARQUET: tmp_path / "a.parquet",
    }
    paths[io.JSONL].write_bytes(_jsonl(records))
    paths[io.JSONL_GZ].write_bytes(gzip.compress(_jsonl(records)))
    paths[io.JSONL_ZST].write_bytes(zstandard.ZstdCompressor().compress(_jsonl(records)))
    pq.write_table(pa.Table.from_pylist(records), paths[io.PARQUET], row_group_size=2)
    return paths


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"id": "a", "text": "unterminated', io.INVALID_JSON),
        (b'[1, 2]', io.NOT_AN_OBJECT),
        (b'{"id": "a", "title": "x"}', io.MISSING_TEXT),
        (b'{"id": "a", "text": null}', io.MISSING_TEXT),
        (b'{"id": "a", "text": 5}', io.TEXT_NOT_STRING),
        (b'{"id": "a", "text": " \\n\\t "}', io.EMPTY_TEXT),
        (b'{"id": "a", "text": "caf\xe9"}', io.INVALID_UTF8),
        (b'{"id": "a", "text": "lone \\ud800 surrogate"}', io.INVALID_UTF8),
        (b'{"id": 1.5, "text": "ok"}', io.INVALID_ID),
        (b'{"id": "", "text": "ok"}', io.INVALID_ID),
    ],
)
def test_bad_lines_become_errors_with_their_reason(line, reason):
    record, error = io.parse_jsonl_line(line, "f.jsonl", 7, CONFIG)
    assert record is None
    assert error["reason"] == reason
    assert (error["source"], error["position"]) == ("f.jsonl", 7)
    assert isinstance(error["raw"], str)


def test_valid_line_keeps_other_fields_and_converts_int_ids():
    record, error = io.parse_jsonl_line(b'{"id": 12, "text": "hello", "lang": "en"}', "f.jsonl", 0, CONFIG)
    assert error is None
    assert record == {"id": "12", "text": "hello", "lang": "en"}


def test_missing_id_is_derived_from_source_and_position():
    record, _ = io.parse_jsonl_line(b'{"text": "hello"}', "/data/f.jsonl", 4096, CONFIG)
    assert record["id"] == "/data/f.jsonl:4096"


def test_custom_fields():
    config = io.ReadConfig(text_field="body", id_field="key")
    record, _ = io.parse_jsonl_line(b'{"key": "k1", "body": "hi", "text": "other"}', "f", 0, config)
    assert record == {"id": "k1", "text": "hi"}


def test_error_record_truncates_raw():
    error = io.error_record("f", 0, io.INVALID_JSON, "x" * 10_000)
    assert len(error["raw"]) == io.RAW_PREVIEW_CHARS


def test_bom_and_crlf_lines(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "one"}\r\n\r\n{"id": "b", "text": "two"}\r\n')
    lines = list(io.jsonl_lines(str(path), 0, -1))
    parsed = [io.parse_jsonl_line(line, str(path), pos, CONFIG)[0]["id"] for pos, line in lines]
    assert parsed == ["a", "b"]
    assert [pos for pos, _ in lines] == [0, 33]


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30),
    split=st.integers(min_value=1, max_value=200),
)
def test_byte_range_splits_read_every_line_exactly_once(tmp_path_factory, lengths, split):
    path = tmp_path_factory.mktemp("split") / "s.jsonl"
    lines = [json.dumps({"id": str(i), "text": "x" * n}).encode() for i, n in enumerate(lengths)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    size = path.stat().st_size
    got = []
    for start in range(0, size, split):
        got += list(io.jsonl_lines(str(path), start, min(start + split, size)))
    assert [line for _, line in got] == lines
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    assert [pos for pos, _ in got] == offsets


def test_work_units_split_plain_jsonl_only():
    assert io.work_units("a.jsonl", 2500, 1024) == [("a.jsonl", 0, 1024), ("a.jsonl", 1024, 2048), ("a.jsonl", 2048, 2500)]
    assert io.work_units("a.jsonl.gz", 2500, 1024) == [("a.jsonl.gz", 0, -1)]
    assert io.work_units("a.parquet", 10**9, 1024) == [("a.parquet", 0, -1)]


def test_match_inputs_errors(tmp_path):
    with pytest.raises(io.InputError, match="matches no file"):
        io.match_inputs([str(tmp_path / "*.jsonl")])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(io.InputError, match="notes.txt: unknown input format"):
        io.match_inputs([str(tmp_path / "notes.txt")])
    (tmp_path / "sub").mkdir()
    with pytest.raises(io.InputError, match="is a directory"):
        io.match_inputs([str(tmp_path / "sub")])
    (tmp_path / "named.jsonl").mkdir()  # a directory named like a shard
    with pytest.raises(io.InputError, match="named.jsonl: is a directory"):
        io.match_inputs([str(tmp_path / "named.jsonl")])


def test_match_inputs_deduplicates_and_sorts(tmp_path):
    for name in ("b.jsonl", "a.jsonl"):
        (tmp_path / name).write_bytes(b'{"text": "x"}\n')
    matched = io.match_inputs([str(tmp_path / "*.jsonl"), str(tmp_path / "a.jsonl")])
    assert [p for p, _ in matched] == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]


@pytest.mark.parametrize("fmt", [io.JSONL_GZ, io.JSONL_ZST])
def test_truncated_compressed_file_is_a_clear_error(tmp_path, fmt):
    records = [{"id": str(i), "text": "word " * 50 + str(i)} for i in range(200)]
    path = _write_formats(tmp_path, records)[fmt]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.InputError, match=f"{path.name}: corrupt or truncated"):
        list(io.jsonl_lines(str(path), 0, -1))


def test_parquet_without_text_column_is_a_clear_error(tmp_path):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), path)
    with pytest.raises(io.InputError, match="has no column 'text'"):
        list(io.parquet_rows(str(path), CONFIG))
    with pytest.raises(io.InputError, match="wrong.parquet: Parquet file has no column 'text'"):
        io.probe_extra_fields(io.match_inputs([str(path)]), CONFIG)  # found before the job runs


def test_not_a_parquet_file_is_a_clear_error(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(io.InputError, match="fake.parquet: not a readable Parquet file"):
        list(io.parquet_rows(str(path), CONFIG))


def test_read_documents_reads_every_format_and_dead_letters(tmp_path):
    records = [{"id": f"d{i}", "text": f"text {i}", "n": i} for i in range(5)]
    paths = _write_formats(tmp_path, records)
    with_bad = tmp_path / "bad.jsonl"
    with_bad.write_bytes(_jsonl(records[:1]) + b"{oops\n" + b'{"id": "e", "text": ""}\n')
    patterns = [str(p) for p in paths.values()] + [str(with_bad)]
    with local_pipeline() as pipeline:
        read = pipeline | io.ReadDocuments(patterns, io.ReadConfig(split_bytes=1024))
        assert_that(
            read["records"] | beam.Map(lambda r: (r["id"], r["text"], r["n"])),
            equal_to([(r["id"], r["text"], r["n"]) for r in records] * 4 + [("d0", "text 0", 0)]),
            label="records",
        )
        assert_that(
            read["errors"] | beam.Map(lambda e: (e["source"].rsplit("/", 1)[-1], e["position"], e["reason"])),
            equal_to([("bad.jsonl", len(_jsonl(records[:1])), io.INVALID_JSON), ("bad.jsonl", len(_jsonl(records[:1])) + len(b"{oops\n"), io.EMPTY_TEXT)]),
            label="errors",
        )


def test_probe_and_conform_keep_every_field(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl([{"id": "a", "text": "x", "n": 1, "tags": ["p", "q"], "score": 0.5}]))
    extra = io.probe_extra_fields(io.match_inputs([str(path)]), CONFIG)
    assert extra == {"n": pa.int64(), "score": pa.float64(), "tags": pa.string()}
    arrow_schema = io.selected_schema(extra)
    row = io.conform_row({"id": "b", "text": "y", "n": "not a number", "tags": ["r"], "late": True, "score": 2, "__winnow_key": 1.0}, arrow_schema)
    assert row["tags"] == '["r"]'
    assert row["score"] == 2.0
    assert row["n"] is None
    assert json.loads(row[io.EXTRA_JSON]) == {"late": True, "n": "not a number"}
    assert "__winnow_key" not in row
    assert row["dsir_log_weight"] is None
    pa.Table.from_pylist([row], schema=arrow_schema)  # the row fits the schema
