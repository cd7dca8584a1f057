"""Reliability: hostile input, faults and reruns lose nothing.

Three layers:

- property tests of the pure cores (reader, scorers) on hostile text: every input yields a valid
  record or finite score, or a dead-letter reason, never an exception;
- ``winnow select`` on corrupt inputs and misuse: one clear line naming the file, exit code, and
  for every run that succeeds, ``selected + dropped + invalid = records read`` counted from the
  output files themselves;
- duplicate ids, and a run in which no record is valid.
"""

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winnow.pipelines import cli
from winnow.transforms import deadletter, dsir, embed, io, minhash, schema, text, zipfit

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


def _read_lines(tmp_path, lines: list[bytes], id_type: str = "str") -> list[io.UnitBatch]:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    units = io.plan_units(io.match_inputs([str(path)]), CONFIG)
    return [batch for unit in units for batch in io.read_unit(unit, CONFIG, io.IdPolicy(True, str(tmp_path), id_type))]


def _check_batches(batches: list[io.UnitBatch], records: int) -> None:
    """Every record is valid or a dead letter with a known reason; a valid one is what every later step may assume."""
    assert sum(b.records for b in batches) == records
    for batch in batches:
        for _, _, reason, raw in batch.invalid:
            assert reason in deadletter.READ_REASONS and isinstance(raw, str) and len(raw) <= deadletter.RAW_PREVIEW_CHARS
        assert batch.table.num_rows == len(batch.ids) == len(batch.texts)
        for doc_id, text in zip(batch.ids, batch.texts):
            assert isinstance(doc_id, str) and doc_id
            assert isinstance(text, str) and text.strip()
            text.encode("utf-8")  # no lone surrogate gets through
        pq.write_table(io.conform(batch.table, io.unify_fields([batch.table.schema])[0]), pa.BufferOutputStream())  # the writer can write it


@PROPERTY
@given(text_value=JSON_VALUES, id_value=JSON_VALUES, other=JSON_VALUES, ascii_only=st.booleans())
def test_any_json_object_is_a_record_or_a_reason(tmp_path, text_value, id_value, other, ascii_only):
    _check_batches(_read_lines(tmp_path, [_encode({"id": id_value, "text": text_value, "other": other}, ascii_only)]), 1)


@PROPERTY
@given(line=st.one_of(st.binary(max_size=80), HOSTILE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_any_bytes_are_a_record_or_a_reason(tmp_path, line):
    line = line.replace(b"\n", b" ").replace(b"\r", b" ")
    _check_batches(_read_lines(tmp_path, [b'{"id": "x", "text": "first"}', line]), 1 + bool(line.strip()))


@PROPERTY
@given(text_value=VALID_TEXT, id_value=VALID_TEXT)
def test_valid_text_round_trips_through_the_reader(tmp_path, text_value, id_value):
    batches = _read_lines(tmp_path, [_encode({"id": id_value, "text": text_value}, ascii_only=False)])
    if not text_value.strip() or id_value == "":
        assert [reason for b in batches for _, _, reason, _ in b.invalid][0] in (deadletter.EMPTY_TEXT, deadletter.INVALID_ID)
        return
    assert (batches[0].ids, batches[0].texts) == ([id_value], [text_value])
    assert batches[0].table.column("text").to_pylist() == [text_value]


@PROPERTY
@given(text_value=JSON_VALUES, id_value=JSON_VALUES, other=st.dictionaries(st.sampled_from(["n", "tags", "text2"]), JSON_VALUES, max_size=3))
def test_parquet_rows_validate_or_give_a_reason(tmp_path, text_value, id_value, other):
    """Parquet rows skip JSON parsing: the row checks alone must reject every bad value."""
    if isinstance(text_value, str):
        text_value = text_value.encode("utf-8", "surrogatepass")  # a binary column
    try:
        table = pa.table({"id": pa.array([str(id_value)]), "text": pa.array([text_value]), **{k: pa.array([v]) for k, v in other.items()}})
        pq.write_table(table, tmp_path / "f.parquet")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, UnicodeEncodeError):
        return  # not a value Parquet can hold
    units = io.plan_units(io.match_inputs([str(tmp_path / "f.parquet")]), CONFIG)
    _check_batches([b for u in units for b in io.read_unit(u, CONFIG, io.IdPolicy(True, str(tmp_path), "str"))], 1)


def _blob_lines():
    """Lines of hostile shapes: CRLF, blank and whitespace-only lines, binary garbage, very long."""
    good = st.builds(lambda i, t: _encode({"id": i, "text": t}, False), st.integers(0, 99), HOSTILE_TEXT)
    junk = st.one_of(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), st.sampled_from([b"", b"  ", b"\t", b"\r", b"\x00"]))
    return st.lists(st.tuples(st.one_of(good, junk), st.sampled_from([b"\n", b"\r\n"])), min_size=1, max_size=25)


@PROPERTY
@given(lines=_blob_lines(), bom=st.booleans(), cuts=st.lists(st.integers(1, 2000), max_size=4), unterminated=st.booleans(),
       block_bytes=st.one_of(st.just(io.LINE_BLOCK_BYTES), st.integers(1, 64)))
def test_hostile_file_under_any_split_reads_every_line_once(tmp_path_factory, lines, bom, cuts, unterminated, block_bytes):
    """Whatever the ranges and the reader's block size (lines cut across blocks), and with or without a last newline."""
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(body + end for body, end in lines)
    data = data[:-1] if unterminated else data
    path = tmp_path_factory.mktemp("hostile") / "h.jsonl"
    path.write_bytes(data)
    expected, offset = [], 0
    for number, piece in enumerate(data.split(b"\n")):
        body = piece[3:] if offset == 0 and piece.startswith(b"\xef\xbb\xbf") else piece
        if body.strip():
            expected.append((number, body.rstrip(b"\r")))
        offset += len(piece) + 1
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    firsts = io.first_lines([io.count_line_starts(str(path), start, end) for start, end in zip(bounds, bounds[1:])])
    got = [(first - 1 + index, line) for (start, end), first in zip(zip(bounds, bounds[1:]), firsts)
           for index, line, _ in io.jsonl_lines(str(path), start, end, block_bytes)]
    assert got == expected


def test_long_document_through_the_reader(tmp_path):
    path = tmp_path / "long.jsonl"
    short = _encode({"id": "s", "text": "short one"}, False)
    path.write_bytes(short + b"\n" + _encode({"id": "L", "text": LONG_TEXT}, False) + b"\n" + short.replace(b'"s"', b'"t"') + b"\n")
    config = io.ReadConfig(split_bytes=1 << 20)
    units = io.plan_units(io.match_inputs([str(path)]), config)
    assert len(units) > 10  # the long line spans ~11 units
    batches = [b for u in units for b in io.read_unit(u, config, io.IdPolicy(True, str(tmp_path), "str"))]
    assert [i for b in batches for i in b.ids] == ["s", "L", "t"]
    assert [p for b in batches for p in b.positions.tolist()] == [1, 2, 3]
    assert [t for b in batches for t in b.texts][1] == LONG_TEXT


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
    assert all(report["checks"].values()) and "selected_dropped_invalid_equal_records_read" in report["checks"]
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
    assert reasons <= {deadletter.INVALID_UTF8, deadletter.INVALID_JSON} and deadletter.INVALID_UTF8 in reasons
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
    stale = [output / "selected" / "part-00007.parquet", output / "scores" / "part-00003.parquet", output / "errors" / "part-00001.jsonl",
             output / "features" / "unit-00009.parquet"]
    (output / "features").mkdir()
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
        assert [p.name for p in (output / name).iterdir()] == ["part-00000.parquet"]
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
    """Past the probe (first 100 records), so the job itself meets the cut: exit 1."""
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


def test_a_run_in_which_no_record_is_valid_fails_after_the_run(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n' + b"".join(b'{"id": "b%d", "text": 5}\n' % i for i in range(4)))
    (tmp_path / "b.jsonl").write_bytes(b'{"id": "c", "text": ""}\n')
    output = tmp_path / "out"
    assert _run("--input", str(tmp_path / "b.jsonl"), "--output", str(output)) == 1
    _one_line_error(capsys, "no valid record among the 1 read", "empty_text")
    assert not (output / "report.json").exists() and len(_errors(output)) == 1


def test_a_wrong_text_field_on_jsonl_fails_before_the_run_naming_the_fields(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl(_docs(5)))
    output = tmp_path / "out"
    assert _run("--input", str(path), "--output", str(output), "--text-field", "content") == 2
    _one_line_error(capsys, "no field 'content' in its first records (fields: id, text)", "--text-field")
    assert not output.exists()
