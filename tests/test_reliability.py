"""Reliability: hostile input, faults and reruns lose nothing.

Three layers:

- property tests of the pure cores (reader, scorers) on hostile text: every input yields a valid
  record or finite score, or a dead-letter reason, never an exception;
- ``winnow select`` on corrupt inputs and misuse: one clear line naming the file, exit code, and
  for every run that succeeds, ``selected + dropped + invalid = records read`` counted from the
  output files themselves;
- faults inside transforms (a record that makes a scorer raise) and duplicate ids.
"""

import gzip
import json
import math

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winnow.pipelines import cli
from tests.helpers import local_pipeline
from winnow.transforms import dsir, embed, io, minhash, schema, text, zipfit

CONFIG = io.ReadConfig()
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Characters that break naive readers: BOM, CR/LF and other line breaks, NUL and controls,
# combining marks, lone surrogates (legal in JSON escapes, not in UTF-8), astral code points.
_HOSTILE = ["\ufeff", "\r", "\n", "\x00", "\x1b", "\u0301", "\u2028", "\u0085", "\t", " ", "\ud800", "\udfff", "\U0001f600", "ß", "İ"]
HOSTILE_TEXT = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(_HOSTILE)), max_size=60)
# What a reader can hand a scorer: a non-blank str that encodes as UTF-8 (no lone surrogates).
VALID_TEXT = st.text(alphabet=st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from([c for c in _HOSTILE if c not in ("\ud800", "\udfff")])), max_size=80)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), HOSTILE_TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3), max_leaves=6)
LONG_TEXT = ("The quick brown fox jumps over the lazy dog 0123456789 " * 200_000)[: 11 * 2**20]  # 11 MiB


def _encode(obj, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _check_parsed(record, error):
    """Exactly one of (record, error); a record is what every downstream stage may assume."""
    assert (record is None) != (error is None)
    if error is not None:
        assert error["reason"] in io.ERROR_REASONS
        assert isinstance(error["raw"], str) and len(error["raw"]) <= io.RAW_PREVIEW_CHARS
        return
    assert isinstance(record[schema.ID], str) and record[schema.ID]
    assert isinstance(record[schema.TEXT], str) and record[schema.TEXT].strip()
    record[schema.TEXT].encode("utf-8")  # no lone surrogate gets through
    extra = {k: v for k, v in record.items() if k not in (schema.ID, schema.TEXT)}
    row = io.conform_row(record, io.selected_schema({}))
    pa.Table.from_pylist([row], schema=io.selected_schema({}))  # the writer can write it
    if extra:
        assert json.loads(row[io.EXTRA_JSON]).keys() == {k for k in extra}


# --- reader core -----------------------------------------------------------------------------


@PROPERTY
@given(text_value=JSON_VALUES, id_value=JSON_VALUES, other=JSON_VALUES, ascii_only=st.booleans())
def test_any_json_object_is_a_record_or_a_reason(text_value, id_value, other, ascii_only):
    line = _encode({"id": id_value, "text": text_value, "other": other}, ascii_only)
    _check_parsed(*io.parse_jsonl_line(line, "f.jsonl", 3, CONFIG))


@PROPERTY
@given(line=st.one_of(st.binary(max_size=80), HOSTILE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_any_bytes_are_a_record_or_a_reason(line):
    _check_parsed(*io.parse_jsonl_line(line, "f.jsonl", 0, CONFIG))


@PROPERTY
@given(text_value=VALID_TEXT, id_value=st.one_of(st.integers(), VALID_TEXT))
def test_valid_text_round_trips_through_reader_and_writer(text_value, id_value):
    line = _encode({"id": id_value, "text": text_value}, ascii_only=False)
    record, error = io.parse_jsonl_line(line, "f.jsonl", 0, CONFIG)
    if not text_value.strip() or id_value == "":
        assert error["reason"] in (io.EMPTY_TEXT, io.INVALID_ID)
        return
    assert record[schema.TEXT] == text_value and record[schema.ID] == str(id_value)
    table = pa.Table.from_pylist([io.conform_row(record, io.selected_schema({}))], schema=io.selected_schema({}))
    assert table.column("text").to_pylist() == [text_value]


@PROPERTY
@given(
    text_value=JSON_VALUES,
    id_value=JSON_VALUES,
    other=st.dictionaries(st.sampled_from(["n", "tags", "text2", schema.DROP_REASON, io.EXTRA_JSON]), JSON_VALUES, max_size=3),
)
def test_parquet_style_rows_validate_or_give_a_reason(text_value, id_value, other):
    """Parquet rows skip JSON parsing: ``validate_fields`` alone must reject every bad value."""
    if isinstance(text_value, str):
        text_value = text_value.encode("utf-8", "surrogatepass")  # a binary column
    record, reason = io.validate_fields({"id": id_value, "text": text_value, **other}, "f.parquet", 5, CONFIG)
    _check_parsed(record, None if reason is None else io.error_record("f.parquet", 5, reason, "x"))


def _blob_lines():
    """Lines of hostile shapes: CRLF, blank and whitespace-only lines, binary garbage, very long."""
    good = st.builds(lambda i, t: _encode({"id": i, "text": t}, False), st.integers(0, 99), HOSTILE_TEXT)
    junk = st.one_of(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), st.sampled_from([b"", b"  ", b"\t", b"\r", b"\x00"]))
    return st.lists(st.tuples(st.one_of(good, junk), st.sampled_from([b"\n", b"\r\n"])), min_size=1, max_size=25)


@PROPERTY
@given(lines=_blob_lines(), bom=st.booleans(), cuts=st.lists(st.integers(1, 2000), max_size=4))
def test_hostile_file_under_any_split_reads_every_line_once(tmp_path_factory, lines, bom, cuts):
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(body + end for body, end in lines)
    path = tmp_path_factory.mktemp("hostile") / "h.jsonl"
    path.write_bytes(data)
    expected, position = [], 0
    for piece in data.split(b"\n"):
        body = piece[3:] if position == 0 and piece.startswith(b"\xef\xbb\xbf") else piece
        if body.strip():
            expected.append((position, body.rstrip(b"\r")))
        position += len(piece) + 1
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    got = [item for start, end in zip(bounds, bounds[1:]) for item in io.jsonl_lines(str(path), start, end)]
    assert got == expected
    for pos, line in got:
        _check_parsed(*io.parse_jsonl_line(line, str(path), pos, CONFIG))


def test_long_document_through_the_reader(tmp_path):
    path = tmp_path / "long.jsonl"
    short = _encode({"id": "s", "text": "short one"}, False)
    path.write_bytes(short + b"\n" + _encode({"id": "L", "text": LONG_TEXT}, False) + b"\n" + short + b"\n")
    size = path.stat().st_size
    units = io.work_units(str(path), size, 1 << 20)  # the long line spans ~11 units
    got = [io.parse_jsonl_line(line, str(path), pos, CONFIG)[0] for _, start, end in units for pos, line in io.jsonl_lines(str(path), start, end)]
    assert [r["id"] for r in got] == ["s", "L", "s"]
    assert got[1]["text"] == LONG_TEXT
    row = io.conform_row(got[1], io.selected_schema({}))
    assert pa.Table.from_pylist([row], schema=io.selected_schema({})).num_rows == 1


# --- scorer cores ----------------------------------------------------------------------------

_HASHERS = {name: dsir.NgramHasher(dsir.DsirConfig(buckets=4096, hash=name)) for name in ("fast", "sha256")}
_MINHASH = {kind: minhash.MinHashConfig(shingle_kind=kind, num_perm=64, threshold=0.8) for kind in ("word", "char")}
_PARAMS = {kind: minhash.permutation_params(c.num_perm, c.seed, c.permutation) for kind, c in _MINHASH.items()}
_TARGETS = [b"the python language reference describes the syntax", b"an expression statement is evaluated"]
_SCORERS = {mode: zipfit.AlignmentScorer(zipfit.fit_target_model(_TARGETS, mode, 3 if mode == zipfit.ZSTD_DICT else 6)) for mode in zipfit.MODES}
_EMBED_CONFIG = embed.EmbedConfig(dim=8, n_features=2**12, max_features=2**10)
_VECTORIZER = embed.make_vectorizer(_EMBED_CONFIG)
_PROJECTION = embed.fit_projection(["the python language reference", "python syntax and the language", "syntax of a reference"], _VECTORIZER, _EMBED_CONFIG)


def _score_all(texts: list[str]) -> None:
    """Every scorer core on ``texts``: shapes right, values finite, documents independent of the batch."""
    n = len(texts)
    for hasher in _HASHERS.values():
        features = hasher.featurize(texts)
        assert features.n_tokens.shape == (n,) and (features.n_tokens >= 0).all()
        assert ((features.bucket >= 0) & (features.bucket < hasher.buckets)).all()
        assert np.array_equal(hasher.count_tokens(texts), features.n_tokens)
        weights = dsir.log_weights(features, np.linspace(-1, 1, hasher.buckets))
        assert weights.shape == (n,) and np.isfinite(weights).all()
    for kind, config in _MINHASH.items():
        signatures = minhash.minhash_signatures(texts, config, _PARAMS[kind])
        assert signatures.shape == (n, config.num_perm)
        if n:
            assert np.array_equal(signatures[-1:], minhash.minhash_signatures(texts[-1:], config, _PARAMS[kind]))
    encoded = [t.encode("utf-8") for t in texts]
    for scorer in _SCORERS.values():
        scores = scorer.score(encoded)
        assert scores.shape == (n,) and np.isfinite(scores).all()
    if texts:
        vectors, _ = embed.embed_texts(texts, _VECTORIZER, _PROJECTION)
        assert vectors.shape == (n, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for t in texts:
        assert isinstance(text.normalize_text(t), str)
        assert all(tok for tok in text.wordpunct_tokens(t))
        assert text.word_shingles(t, 3) and text.char_shingles(t, 5)


@PROPERTY
@given(texts=st.lists(VALID_TEXT, max_size=6))
def test_scorer_cores_never_raise_on_valid_text(texts):
    """Anything the reader accepts, including whitespace-only and empty strings, scores finitely."""
    _score_all(texts)


def test_scorer_cores_on_edge_texts():
    _score_all(["", " ", "\r\n", "\ufeff", "\x00\x00", "\u0301", "a", "İ" * 7, "\U0001f600 x " * 3, "ß" * 4000])


def test_long_document_through_the_scorer_cores():
    texts = [LONG_TEXT, "the quick brown fox"]
    features = _HASHERS["fast"].featurize(texts)
    assert features.n_tokens[0] == len(text.wordpunct_tokens(LONG_TEXT))
    assert np.isfinite(dsir.log_weights(features, np.zeros(4096))).all()
    signatures = minhash.minhash_signatures(texts, _MINHASH["word"], _PARAMS["word"])
    assert np.array_equal(signatures[1:], minhash.minhash_signatures(texts[1:], _MINHASH["word"], _PARAMS["word"]))
    scores = _SCORERS[zipfit.ZSTD_DICT].score([t.encode() for t in texts])
    assert np.isfinite(scores).all()


# --- the CLI on corrupt inputs and misuse ------------------------------------------------------


def _run(*argv) -> int:
    """``winnow select``; ``--method random`` unless a method is given (the default, combined, embeds and clusters)."""
    method = [] if "--method" in argv else ["--method", "random"]
    return cli.main(["select", *method, *argv])


def _jsonl(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _docs(n: int, prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"document {prefix}{i} " + "lorem ipsum dolor " * (i % 5 + 1)} for i in range(n)]


def _rows(directory) -> list[dict]:
    return [row for path in sorted(directory.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def _errors(output) -> list[dict]:
    return [json.loads(line) for path in sorted((output / "errors").glob("*.jsonl")) for line in path.read_text().splitlines()]


def _check_accounting(output, records_read: int) -> dict:
    """selected + dropped + invalid, counted from the output files, = records read; returns report.json."""
    selected, scores, errors = _rows(output / "selected"), _rows(output / "scores"), _errors(output)
    dropped = [row for row in scores if row[schema.DROP_REASON] is not None]
    assert all((row[schema.DROP_REASON] is None) == row[schema.SELECTED] for row in scores)
    assert sorted(r["id"] for r in selected) == sorted(r["id"] for r in scores if r[schema.SELECTED])
    assert len(selected) + len(dropped) + len(errors) == records_read
    report = json.loads((output / "report.json").read_text())
    counts = report["counts"]
    assert (counts["input"], counts["selected"], counts["invalid"]) == (records_read, len(selected), len(errors))
    assert sum(counts["dropped"].values()) == len(dropped)
    assert report["checks"] == {"input_equals_records_read": True}
    return report


def _one_line_error(capsys, *fragments) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_binary_blob_in_jsonl_becomes_dead_letters_and_the_rest_is_read(tmp_path):
    """Policy: the blob's lines go to errors as invalid_utf8/invalid_json; every other line is read."""
    good = _docs(6)
    blob = bytes(range(256)) * 3 + b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1))
    path = tmp_path / "blob.jsonl"
    path.write_bytes(_jsonl(good[:3]) + blob + b"\n" + _jsonl(good[3:]))
    blob_lines = [piece for piece in (blob + b"\n").split(b"\n")[:-1] if piece.strip()]
    output = tmp_path / "out"
    assert _run("--input", str(path), "--output", str(output), "--fraction", "1", "--write-scores") == 0
    _check_accounting(output, len(good) + len(blob_lines))
    assert sorted(r["id"] for r in _rows(output / "selected")) == sorted(r["id"] for r in good)
    reasons = {e["reason"] for e in _errors(output)}
    assert reasons <= {io.INVALID_UTF8, io.INVALID_JSON} and io.INVALID_UTF8 in reasons
    assert all(e["source"].endswith("blob.jsonl") for e in _errors(output))


def test_empty_inputs_run_with_zero_counts(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl").write_bytes(b"\n  \r\n\n")  # blank lines are not records
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "d.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b""))
    output = tmp_path / "out"
    assert _run("--input", str(tmp_path / "*.jsonl*"), "--output", str(output), "--num-select", "3", "--write-scores") == 0
    report = _check_accounting(output, 0)
    assert report["counts"]["selected"] == 0
    assert report["warnings"] == ["--num-select 3 is more than the 0 eligible records; all 0 were selected"]


def test_num_select_above_the_pool_after_dedup_selects_all_with_a_warning(tmp_path):
    docs = _docs(4) + [{"id": f"copy{i}", "text": d["text"].upper()} for i, d in enumerate(_docs(4))]
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl(docs) + b"not json\n")
    output = tmp_path / "out"
    assert _run("--input", str(path), "--output", str(output), "--num-select", "50", "--dedup", "exact", "--write-scores") == 0
    report = _check_accounting(output, len(docs) + 1)
    assert report["counts"]["selected"] == 4 and report["counts"]["dropped"] == {"exact_duplicate": 4}
    assert any("--num-select 50 is more than the 4 eligible records" in w for w in report["warnings"])


def test_overwrite_leaves_no_old_shard_and_keeps_foreign_files(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl(_docs(5)))
    output = tmp_path / "out"
    for name in ("selected", "scores", "errors"):
        (output / name).mkdir(parents=True)
    stale = [output / "selected" / "part-00007-of-00009.parquet", output / "scores" / "part-00003-of-00004.parquet", output / "errors" / "part-00001-of-00002.jsonl"]
    for old in stale:
        old.write_bytes(b"old run")
    (output / "report.json").write_text("{}")
    (output / "notes.txt").write_text("mine")
    assert _run("--input", str(path), "--output", str(output), "--fraction", "0.4") == 2
    _one_line_error(capsys, "already holds a run", "--overwrite")
    assert all(old.exists() for old in stale)
    assert _run("--input", str(path), "--output", str(output), "--fraction", "0.4", "--write-scores", "--overwrite") == 0
    assert not any(old.exists() for old in stale)
    for name in ("selected", "scores"):
        assert [p.name for p in (output / name).iterdir()] == ["part-00000-of-00001.parquet"]
    assert (output / "notes.txt").read_text() == "mine"
    _check_accounting(output, 5)


def test_output_path_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl(_docs(3)))
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where the output directory should be")
    assert _run("--input", str(path), "--output", str(blocker)) == 2
    _one_line_error(capsys, str(blocker), "is a file, not a directory")
    assert blocker.read_text().startswith("a regular file")


def test_output_under_a_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl(_docs(3)))
    (tmp_path / "blocker").write_text("x")
    assert _run("--input", str(path), "--output", str(tmp_path / "blocker" / "out")) == 2
    _one_line_error(capsys, str(tmp_path / "blocker"))


def test_truncated_zst_found_by_the_job_names_the_file(tmp_path, capsys):
    """Past the schema probe (first 1,000 records), so the job itself meets the cut: exit 1."""
    lines = _jsonl({"id": str(i), "text": f"word {i * 7919 % 10007} " * 20} for i in range(5000))
    data = zstandard.ZstdCompressor(level=3).compress(lines)
    path = tmp_path / "broken.jsonl.zst"
    path.write_bytes(data[: int(len(data) * 0.95)])
    output = tmp_path / "out"
    assert _run("--input", str(path), "--output", str(output)) == 1
    _one_line_error(capsys, "broken.jsonl.zst: corrupt or truncated .jsonl.zst stream")
    assert not (output / "report.json").exists()
    assert not list(output.glob("selected/*.parquet"))


@pytest.mark.parametrize("fmt", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_compressed_file_found_by_the_probe(tmp_path, capsys, fmt):
    data = _jsonl(_docs(50))
    packed = gzip.compress(data) if fmt == ".jsonl.gz" else zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"cut{fmt}"
    path.write_bytes(packed[: len(packed) // 2])
    assert _run("--input", str(path), "--output", str(tmp_path / "out")) == 2
    _one_line_error(capsys, f"cut{fmt}: corrupt or truncated")


def test_parquet_without_text_column_names_the_file(tmp_path, capsys):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "body": ["x", "y"]}), path)
    output = tmp_path / "out"
    assert _run("--input", str(path), "--output", str(output)) == 2
    _one_line_error(capsys, "wrong.parquet: Parquet file has no column 'text'")
    assert not (output / "report.json").exists()


@pytest.mark.parametrize("name", ["shards", "shards.jsonl"])
def test_directory_as_input_is_a_clear_error(tmp_path, capsys, name):
    """Also a directory whose name has a known extension."""
    (tmp_path / name).mkdir()
    (tmp_path / name / "a.jsonl").write_bytes(_jsonl(_docs(2)))
    assert _run("--input", str(tmp_path / name), "--output", str(tmp_path / "out")) == 2
    _one_line_error(capsys, str(tmp_path / name), "is a directory")


# --- faults inside transforms ------------------------------------------------------------------


_GOOD = {"id": "g", "text": "the python language reference describes the syntax " * 30}


def test_zipfit_and_embed_send_a_record_that_makes_them_raise_to_errors():
    """Reached only when the transforms are used without the reader (which guarantees a str text);
    lone surrogates cannot be tested here: Beam's own coder refuses them between stages."""
    bad = {"id": "b", "title": "no text field"}
    with local_pipeline() as pipeline:
        records = pipeline | "Records" >> beam.Create([_GOOD, bad])
        target = pipeline | "Target" >> beam.Create([{"id": "t", "text": "the python language reference"}])
        scored = records | zipfit.ScoreZipfit(target, zipfit.ZipfitConfig())
        assert_that(scored["records"] | "ZipIds" >> beam.Map(lambda r: r["id"]), equal_to(["g"]), label="zipfit_records")
        assert_that(scored["errors"] | "ZipReasons" >> beam.Map(lambda e: e["reason"]), equal_to(["zipfit_failed: KeyError"]), label="zipfit_errors")
        embedded = records | embed.Embed(embed.EmbedConfig(dim=4, n_features=2**10, max_features=2**8))
        assert_that(embedded["records"] | "EmbedIds" >> beam.Map(lambda r: r["id"]), equal_to(["g"]), label="embed_records")
        assert_that(embedded["errors"] | "EmbedReasons" >> beam.Map(lambda e: e["reason"]), equal_to(["embed_failed: invalid_text"]), label="embed_errors")


def test_dsir_sends_a_non_string_text_to_errors():
    with local_pipeline() as pipeline:
        records = pipeline | "Records" >> beam.Create([{"id": "g", "text": "a b c d " * 40}, {"id": "b", "text": ["not", "a", "string"]}])
        target = pipeline | "Target" >> beam.Create([{"id": "t", "text": "a b c"}])
        scored = records | dsir.ScoreDsir(target, dsir.DsirConfig(buckets=64, min_tokens=1))
        assert_that(scored["records"] | "Ids" >> beam.Map(lambda r: (r["id"], math.isfinite(r[schema.DSIR_LOG_WEIGHT]))), equal_to([("g", True)]), label="records")
        assert_that(scored["errors"] | "Reasons" >> beam.Map(lambda e: e["reason"]), equal_to(["dsir_failed: TypeError"]), label="errors")


# --- duplicate ids -------------------------------------------------------------------------------


def test_duplicate_ids_across_shards_fail_the_run_naming_both_sources(tmp_path, capsys):
    for shard in range(2):
        (tmp_path / f"s{shard}.jsonl").write_bytes(_jsonl({"id": f"d{i}", "text": f"shard {shard} doc {i} " * 5} for i in range(5)))
    output = tmp_path / "out"
    code = _run("--input", str(tmp_path / "*.jsonl"), "--output", str(output), "--num-select", "3")
    line = _one_line_error(capsys, "duplicate id", "s0.jsonl", "s1.jsonl")
    assert code == 1 and "'d" in line
    assert not (output / "report.json").exists()
    assert not list(output.glob("selected/*.parquet"))
