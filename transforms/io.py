"""Reading documents from JSON Lines and Parquet shards; writing Parquet selections and dead letters.

Inputs are glob patterns on any filesystem Beam supports (local paths, ``gs://``, ...), any mix of
``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` and ``.parquet``. Files are cut into work units that
workers read independently and stream, never whole into memory:

- uncompressed JSON Lines: byte ranges of ``SPLIT_BYTES``; a line belongs to the range holding its
  first byte, so every line is read exactly once whatever the split;
- compressed JSON Lines: one unit per file, decompressed as a stream (gzip and zstd are not
  splittable);
- Parquet: one unit per row group.

Every record read leaves exactly once: as a valid record (``id``, ``text``, the other fields) or as
an error ``{"source", "position", "reason", "raw"}`` for ``errors/*.jsonl``. ``position`` is the
byte offset of the line in the (decompressed) JSON Lines stream, or the row index in a Parquet
file. A record without an id field gets the stable id ``"<source>:<position>"``.

Problems with a whole file (a pattern matching nothing, an unknown extension, a directory, a
corrupt compressed stream, a Parquet file without the text column) raise ``InputError`` with a
message naming the file.
"""

import dataclasses
import gzip
import io
import json
import os
import zlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.metrics import Metrics

from winnow.transforms import schema

NAMESPACE = "winnow.io"
SPLIT_BYTES = 64 << 20
RAW_PREVIEW_CHARS = 1000
SCHEMA_PROBE_FILES = 8
SCHEMA_PROBE_RECORDS = 1000
EXTRA_JSON = "extra_json"
INPUT_ROLE, TARGET_ROLE = "input", "target"
SOURCES_TAG = "sources"
PRIVATE_PREFIX = "__winnow"

JSONL, JSONL_GZ, JSONL_ZST, PARQUET = ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"
FORMATS = (JSONL_GZ, JSONL_ZST, JSONL, PARQUET)  # longest suffix first

INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
INVALID_UTF8 = "invalid_utf8"
MISSING_TEXT = "missing_text"
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"
INVALID_ID = "invalid_id"
ERROR_REASONS = (INVALID_JSON, NOT_AN_OBJECT, INVALID_UTF8, MISSING_TEXT, TEXT_NOT_STRING, EMPTY_TEXT, INVALID_ID)


class InputError(Exception):
    """A whole input file or pattern cannot be read; the message names it."""


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """How records are read. ``text_field`` must hold a non-empty string; ``id_field`` is optional."""

    text_field: str = "text"
    id_field: str = "id"
    split_bytes: int = SPLIT_BYTES

    def __post_init__(self):
        if not self.text_field or not self.id_field:
            raise ValueError(f"text_field={self.text_field!r}, id_field={self.id_field!r}; both must be non-empty")
        if self.text_field == self.id_field:
            raise ValueError(f"text_field and id_field are both {self.text_field!r}; they must differ")
        if self.split_bytes < 1024:
            raise ValueError(f"split_bytes={self.split_bytes}; expected >= 1024")


def input_format(path: str) -> str:
    """The format suffix of ``path`` (one of ``FORMATS``); ``InputError`` for anything else."""
    for suffix in FORMATS:
        if path.endswith(suffix):
            return suffix
    raise InputError(f"{path}: unknown input format; expected one of {', '.join(FORMATS)}")


def match_inputs(patterns: list[str]) -> list[tuple[str, int]]:
    """``(path, size_in_bytes)`` of every file the patterns match, sorted, each once.

    Raises:
        InputError: a pattern matches nothing, or matches a file of an unknown format or a directory.
    """
    files = {}
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as err:  # Beam raises BeamIOError with a nested dict of causes
            raise InputError(f"{pattern}: cannot list ({err})") from None
        if not matched:
            raise InputError(f"{pattern}: matches no file")
        for meta in matched:
            if _is_local_directory(meta.path):  # also one named like a shard, e.g. data.jsonl/
                raise InputError(f"{meta.path}: is a directory; give a glob such as {meta.path.rstrip('/')}/*.jsonl")
            input_format(meta.path)
            files[meta.path] = meta.size_in_bytes
    return sorted(files.items())


def _is_local_directory(path: str) -> bool:
    """A directory on the local filesystem (object stores such as gs:// have no directories to match)."""
    return isinstance(FileSystems.get_filesystem(path), LocalFileSystem) and os.path.isdir(path)


def work_units(path: str, size: int, split_bytes: int) -> list[tuple[str, int, int]]:
    """``(path, start, end)`` units of one file: byte ranges for plain JSON Lines, else the whole file.

    Parquet files are further split into row groups by the reader (``end == -1`` marks "whole file").
    """
    if input_format(path) != JSONL or size <= split_bytes:
        return [(path, 0, -1)]
    return [(path, start, min(start + split_bytes, size)) for start in range(0, size, split_bytes)]


def error_record(source: str, position, reason: str, raw) -> dict:
    """A dead-letter record; ``raw`` is kept as text, truncated to ``RAW_PREVIEW_CHARS``."""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw[: RAW_PREVIEW_CHARS * 4]).decode("utf-8", errors="replace")
    elif not isinstance(raw, str):
        raw = repr(raw)
    return {"source": source, "position": position, "reason": reason, "raw": raw[:RAW_PREVIEW_CHARS]}


def validate_fields(obj: dict, source: str, position: int, config: ReadConfig) -> tuple[dict | None, str | None]:
    """``(record, None)`` for a valid object, ``(None, reason)`` otherwise.

    The record has ``id`` (the id field as str, or ``"<source>:<position>"`` when absent or null),
    ``text`` and every other field. Text must be a non-blank string encodable as UTF-8 (JSON
    allows lone surrogates; Parquet does not); ids must be non-empty strings or integers.
    """
    text = obj.get(config.text_field)
    if text is None:
        return None, MISSING_TEXT
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None, INVALID_UTF8
    if not isinstance(text, str):
        return None, TEXT_NOT_STRING
    if not text.strip():
        return None, EMPTY_TEXT
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None, INVALID_UTF8
    doc_id = obj.get(config.id_field)
    if doc_id is None:
        doc_id = f"{source}:{position}"
    elif isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    elif not isinstance(doc_id, str) or not doc_id:
        return None, INVALID_ID
    record = {k: v for k, v in obj.items() if k not in (config.text_field, config.id_field)}
    record[schema.ID] = doc_id
    record[schema.TEXT] = text
    return record, None


def parse_jsonl_line(line: bytes, source: str, position: int, config: ReadConfig) -> tuple[dict | None, dict | None]:
    """One JSON Lines line -> ``(record, None)`` or ``(None, error_record)``."""
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, error_record(source, position, INVALID_UTF8, line)
    try:
        obj = json.loads(decoded)
    except ValueError:
        return None, error_record(source, position, INVALID_JSON, decoded)
    if not isinstance(obj, dict):
        return None, error_record(source, position, NOT_AN_OBJECT, decoded)
    record, reason = validate_fields(obj, source, position, config)
    if reason:
        return None, error_record(source, position, reason, decoded)
    return record, None


class _ZstdStream(io.RawIOBase):
    """Decompressed bytes of concatenated zstd frames; ``ZstdError`` when the last frame is cut short.

    (zstandard's own ``stream_reader`` ends silently on a truncated frame.)
    """

    def __init__(self, raw):
        super().__init__()
        self._raw = raw
        self._context = zstandard.ZstdDecompressor()
        self._frame = self._context.decompressobj()
        self._pending = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise zstandard.ZstdError("stream ends inside a zstd frame")
                return 0
            self._decompress(chunk)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _decompress(self, chunk: bytes) -> None:
        while chunk:
            self._pending += self._frame.decompress(chunk)
            self._in_frame = not self._frame.eof
            chunk = b""
            if self._frame.eof:
                chunk = self._frame.unused_data
                self._frame = self._context.decompressobj()

    def close(self):
        self._raw.close()
        super().close()


def _open_raw(path: str):
    """The file's bytes, uncompressed by Beam; ``InputError`` for a directory (a glob can match one)."""
    try:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; give a glob such as {path.rstrip('/')}/*.jsonl") from None


def _open_jsonl_stream(path: str, fmt: str):
    raw = _open_raw(path)
    if fmt == JSONL_GZ:
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), buffer_size=1 << 20)
    if fmt == JSONL_ZST:
        return io.BufferedReader(_ZstdStream(raw), buffer_size=1 << 20)
    return raw


def jsonl_lines(path: str, start: int, end: int):
    """``(position, line)`` of the non-blank lines whose first byte lies in ``[start, end)``.

    ``end == -1`` reads to the end of the stream. Compressed files are read from the start.

    Raises:
        InputError: the compressed stream is corrupt or truncated.
    """
    fmt = input_format(path)
    stream = _open_jsonl_stream(path, fmt)
    position = start
    try:
        if start > 0:  # the line holding byte start - 1 belongs to the previous range
            stream.seek(start - 1)
            position = start - 1 + len(stream.readline())
        for line in stream:
            if end != -1 and position >= end:
                break
            if position == 0 and line.startswith(b"\xef\xbb\xbf"):
                line_body = line[3:]
            else:
                line_body = line
            if line_body.strip():
                yield position, line_body.rstrip(b"\r\n")
            position += len(line)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
        raise InputError(f"{path}: corrupt or truncated {fmt} stream after byte {position} of its content: {err}") from None
    finally:
        stream.close()


def _parquet_file(path: str, config: ReadConfig) -> pq.ParquetFile:
    """The opened Parquet file; ``InputError`` when it is unreadable or has no ``text_field`` column."""
    try:
        parquet = pq.ParquetFile(_open_raw(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None
    names = parquet.schema_arrow.names
    if config.text_field not in names:
        raise InputError(f"{path}: Parquet file has no column {config.text_field!r} (columns: {', '.join(names)})")
    return parquet


def parquet_rows(path: str, config: ReadConfig):
    """``(row_group, first_row, rows)`` of every row group of a Parquet file, rows as dicts.

    Raises:
        InputError: not a Parquet file, or no ``text_field`` column.
    """
    parquet = _parquet_file(path, config)
    first_row = 0
    for group in range(parquet.num_row_groups):
        try:
            rows = parquet.read_row_group(group).to_pylist()
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(f"{path}: corrupt Parquet row group {group}: {err}") from None
        yield group, first_row, rows
        first_row += len(rows)


class _ReadUnitFn(beam.DoFn):
    """(path, start, end) -> valid records; invalid ones -> ``errors`` with a counter per reason.

    Counters are ``records_read``, ``valid``, ``invalid_<reason>``, prefixed ``<role>_`` for a
    role other than ``input``; errors of such a role carry ``"role": role``.
    """

    def __init__(self, config: ReadConfig, role: str, emit_sources: bool):
        self._config = config
        self._role = role
        self._emit_sources = emit_sources

    def setup(self):
        prefix = "" if self._role == INPUT_ROLE else f"{self._role}_"
        self._read = Metrics.counter(NAMESPACE, f"{prefix}records_read")
        self._valid = Metrics.counter(NAMESPACE, f"{prefix}valid")
        self._invalid = {reason: Metrics.counter(NAMESPACE, f"{prefix}invalid_{reason}") for reason in ERROR_REASONS}

    def _emit(self, record, error):
        self._read.inc()
        if error is not None:
            self._invalid[error["reason"]].inc()
            if self._role != INPUT_ROLE:
                error["role"] = self._role
            return beam.pvalue.TaggedOutput(schema.ERRORS_TAG, error)
        self._valid.inc()
        return record

    def _outputs(self, record, error, source: str):
        yield self._emit(record, error)
        if record is not None and self._emit_sources:
            yield beam.pvalue.TaggedOutput(SOURCES_TAG, (record[schema.ID], source))

    def process(self, unit):
        path, start, end = unit
        if input_format(path) == PARQUET:
            for _, first_row, rows in parquet_rows(path, self._config):
                for offset, row in enumerate(rows):
                    position = first_row + offset
                    record, reason = validate_fields(row, path, position, self._config)
                    error = error_record(path, position, reason, json.dumps(row, default=str)) if reason else None
                    yield from self._outputs(record, error, f"{path}:{position}")
            return
        for position, line in jsonl_lines(path, start, end):
            yield from self._outputs(*parse_jsonl_line(line, path, position, self._config), f"{path}:{position}")


class FirstSourcesCombineFn(beam.CombineFn):
    """Sources of one id -> ``(count, the two smallest sources)``; a fixed-size accumulator."""

    def create_accumulator(self):
        return 0, ()

    def add_input(self, accumulator, source):
        count, sources = accumulator
        return count + 1, tuple(sorted((*sources, source))[:2])

    def merge_accumulators(self, accumulators):
        counts, sources = zip(*accumulators)
        return sum(counts), tuple(sorted(s for group in sources for s in group)[:2])

    def extract_output(self, accumulator):
        return accumulator


def _unique_or_raise(element, duplicate: list):
    """Pass ``element`` on, or raise when the input holds a duplicate id (``duplicate``: [] or [(id, (n, sources))])."""
    if duplicate:
        doc_id, (count, sources) = duplicate[0]
        raise ValueError(f"duplicate id {doc_id!r}: {count} records, in {' and '.join(sources)}; ids must be unique across the inputs")
    return element


class ReadDocuments(beam.PTransform):
    """Read records from glob patterns: ``{"records": valid records, "errors": dead letters}``.

    The patterns are matched when the pipeline is built, so a pattern matching nothing fails
    before anything runs. ``role`` names what is read (``"input"``, or e.g. ``"target"``, whose
    errors then carry ``"role": "target"`` and whose counters are prefixed ``target_``).

    With ``unique_ids`` (selection and dedup keep or drop records by id), a second record with
    an id already read fails the job before any record or error leaves the reader, naming the id
    and two of its sources: the ``(id, source)`` pairs are counted per id (a keyed combine), and
    both outputs pass a check that has the smallest duplicate id, if any, as a side input.

    ``files``: ``match_inputs(patterns)``, when the caller has listed them already (listing an
    object store takes time); without it the patterns are listed when the pipeline is built.
    """

    def __init__(self, patterns: list[str], config: ReadConfig = ReadConfig(), role: str = INPUT_ROLE, unique_ids: bool = False,
                 files: list[tuple[str, int]] | None = None):
        super().__init__()
        self._patterns = list(patterns)
        self._config = config
        self._role = role
        self._unique_ids = unique_ids
        self._files = None if files is None else list(files)

    def expand(self, pbegin):
        files = match_inputs(self._patterns) if self._files is None else self._files
        units = [unit for path, size in files for unit in work_units(path, size, self._config.split_bytes)]
        # Reshuffle spreads the units over workers instead of reading them where Create ran.
        results = (
            pbegin
            | "ListUnits" >> beam.Create(units)
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadUnits" >> beam.ParDo(_ReadUnitFn(self._config, self._role, self._unique_ids)).with_outputs(
                schema.ERRORS_TAG, SOURCES_TAG, main="records"
            )
        )
        records, errors = results.records, results[schema.ERRORS_TAG]
        if self._unique_ids:
            duplicate = beam.pvalue.AsSingleton(
                results[SOURCES_TAG]
                | "SourcesPerId" >> beam.CombinePerKey(FirstSourcesCombineFn())
                | "Duplicated" >> beam.Filter(lambda pair: pair[1][0] > 1)
                | "SmallestDuplicate" >> beam.combiners.Top.Smallest(1)
            )
            records = records | "CheckUniqueIds" >> beam.Map(_unique_or_raise, duplicate)
            errors = errors | "HoldErrorsForIdCheck" >> beam.Map(_unique_or_raise, duplicate)
        return {"records": records, "errors": errors}


def has_valid_record(files: list[tuple[str, int]], config: ReadConfig) -> bool:
    """Whether the files (``match_inputs``' ``(path, size)`` pairs) hold a valid record; reads until the first."""
    for path, _ in files:
        if input_format(path) == PARQUET:
            rows = (row for _, _, group in parquet_rows(path, config) for row in group)
            if any(validate_fields(row, path, 0, config)[0] is not None for row in rows):
                return True
        elif any(parse_jsonl_line(line, path, pos, config)[0] is not None for pos, line in jsonl_lines(path, 0, -1)):
            return True
    return False


# --- output schema and writing ---------------------------------------------------------------


def _column_type(arrow_type: pa.DataType) -> pa.DataType:
    """Integers, floats and booleans keep their kind; everything else (strings, nested) is a string column."""
    if pa.types.is_integer(arrow_type):
        return pa.int64()
    if pa.types.is_floating(arrow_type):
        return pa.float64()
    if pa.types.is_boolean(arrow_type):
        return pa.bool_()
    return pa.string()


def probe_extra_fields(files: list[tuple[str, int]], config: ReadConfig) -> dict[str, pa.DataType]:
    """Types of the input fields other than id and text, from the first records of the first files.

    ``files`` are ``match_inputs``' ``(path, size)`` pairs.

    Reads at most ``SCHEMA_PROBE_RECORDS`` valid records from each of the first
    ``SCHEMA_PROBE_FILES`` files (Parquet: the file schema). Fields first seen later in the data
    are not lost: ``conform_row`` keeps them in the ``extra_json`` column.
    """
    fields: dict[str, pa.DataType] = {}
    for path, _ in files[:SCHEMA_PROBE_FILES]:
        if input_format(path) == PARQUET:
            arrow_schema = _parquet_file(path, config).schema_arrow
            found = {f.name: f.type for f in arrow_schema}
        else:
            rows = []
            for position, line in jsonl_lines(path, 0, -1):
                record, _ = parse_jsonl_line(line, path, position, config)
                if record is not None:
                    rows.append({k: v for k, v in record.items() if k not in (schema.ID, schema.TEXT)})
                if len(rows) >= SCHEMA_PROBE_RECORDS:
                    break
            try:
                found = {f.name: f.type for f in pa.Table.from_pylist(rows).schema} if rows else {}
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                found = {key: pa.string() for row in rows for key in row}
        for name, arrow_type in found.items():
            if name in (config.id_field, config.text_field) or name in schema.RESERVED_COLUMNS or name == EXTRA_JSON:
                continue
            value_type = _column_type(arrow_type)
            if fields.get(name, value_type) != value_type:
                value_type = pa.string()
            fields[name] = value_type
    return dict(sorted(fields.items()))


def selected_schema(extra_fields: dict[str, pa.DataType]) -> pa.Schema:
    """id, text, the probed input fields, ``extra_json``, then the score columns (CONTRACT.md)."""
    return pa.schema(
        [pa.field(schema.ID, pa.string(), nullable=False), pa.field(schema.TEXT, pa.string(), nullable=False)]
        + [pa.field(name, arrow_type) for name, arrow_type in extra_fields.items()]
        + [pa.field(EXTRA_JSON, pa.string())]
        + [pa.field(name, arrow_type) for name, arrow_type in schema.SCORE_COLUMNS.items()]
    )


def scores_schema() -> pa.Schema:
    """id, the score columns, ``selected`` and ``drop_reason``: one row per valid input record."""
    return pa.schema(
        [pa.field(schema.ID, pa.string(), nullable=False)]
        + [pa.field(name, arrow_type) for name, arrow_type in schema.SCORE_COLUMNS.items()]
        + [pa.field(schema.SELECTED, pa.bool_(), nullable=False), pa.field(schema.DROP_REASON, pa.string())]
    )


def _fits(value, arrow_type: pa.DataType) -> bool:
    if pa.types.is_string(arrow_type):
        return isinstance(value, str)
    if pa.types.is_boolean(arrow_type):
        return isinstance(value, bool)
    if pa.types.is_integer(arrow_type):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(arrow_type):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return False


def conform_row(record: dict, arrow_schema: pa.Schema) -> dict:
    """The record as a row of ``arrow_schema``: missing columns null, private fields dropped.

    An input field that is not in the schema, or whose value does not fit its column's type (a
    nested value, a string where the probe saw numbers, ...), is kept in ``extra_json``, a JSON
    object of such fields, so nothing the input held is lost.
    """
    row = {name: None for name in arrow_schema.names}
    leftovers = {}
    for key, value in record.items():
        if key.startswith(PRIVATE_PREFIX):
            continue
        if key not in row or key == EXTRA_JSON:
            leftovers[key] = value
            continue
        arrow_type = arrow_schema.field(key).type
        if value is None or key in schema.SCORE_COLUMNS or key in (schema.ID, schema.TEXT, schema.DROP_REASON, schema.SELECTED):
            row[key] = value
        elif _fits(value, arrow_type):
            row[key] = float(value) if pa.types.is_floating(arrow_type) else value
        elif pa.types.is_string(arrow_type):
            row[key] = json.dumps(value, ensure_ascii=False, default=str)
        else:
            leftovers[key] = value
    if leftovers:
        row[EXTRA_JSON] = json.dumps(leftovers, ensure_ascii=False, default=str, sort_keys=True)
    return row


class WriteParquet(beam.PTransform):
    """Write records conformed to ``arrow_schema`` as ``<prefix>-SSSSS-of-NNNNN.parquet``.

    Beam's file sink writes to a temporary directory and renames the shards into place when the
    pipeline finalizes, so a failed run leaves no partial shard under the final name.
    """

    def __init__(self, file_prefix: str, arrow_schema: pa.Schema):
        super().__init__()
        self._prefix = file_prefix
        self._schema = arrow_schema

    def expand(self, records):
        return (
            records
            | "ToRows" >> beam.Map(conform_row, self._schema)
            | "Write" >> beam.io.WriteToParquet(self._prefix, self._schema, file_name_suffix=".parquet", codec="zstd")
        )


class WriteErrors(beam.PTransform):
    """Write dead-letter records as JSON Lines ``<prefix>-SSSSS-of-NNNNN.jsonl``."""

    def __init__(self, file_prefix: str):
        super().__init__()
        self._prefix = file_prefix

    def expand(self, errors):
        return (
            errors
            | "ToJson" >> beam.Map(lambda error: json.dumps(error, ensure_ascii=False, sort_keys=True, default=str))
            | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl")
        )
