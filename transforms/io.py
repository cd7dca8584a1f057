"""Reading documents: input files, work units, and Arrow batches of valid records with dead letters.

Inputs are glob patterns on any filesystem Beam supports (local paths, ``gs://``, ...), any mix of
``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` and ``.parquet``. Files are cut into work units that
workers read independently, in batches, never whole into memory:

- uncompressed JSON Lines: byte ranges of ``split_bytes``; a line belongs to the range holding its
  first byte, so every line is read exactly once whatever the split. A range's first line number
  needs the line starts before it: ``count_line_starts`` counts one range's (GB/s, ``bytes.count``)
  and ``first_lines`` turns the counts into numbers;
- compressed JSON Lines: one unit per file, decompressed as a stream (gzip and zstd do not split);
- Parquet: runs of whole row groups of at most ``split_bytes`` compressed bytes.

A unit yields ``UnitBatch`` es: the valid records as an Arrow table whose columns are the input's
own (Parquet types as read; JSON Lines typed by pyarrow's inference from the parsed values:
numbers, strings, nested objects as structs, lists), their ids, texts, ordinals (0-based, over
every record of the unit, valid or not) and positions (1-based line or row numbers), and the
invalid records as dead letters (``deadletter.py``). A JSON Lines field whose values conflict
within a batch (a number in one record, a string in another), or that Parquet cannot store (an
empty object ``{}``), becomes a string column: strings kept, other values as JSON; the batch
names it in ``conflicts``. Reading a unit twice gives the same
batches, so later passes find a record again by its ordinal.

Ids: the ``id_field`` value as it is (a string or an integer; one type for all inputs). Without an
id field the id is ``<path relative to the inputs' common directory>:<position>`` (``IdPolicy``).

Problems with a whole file (a pattern matching nothing, an unknown extension, a directory, a
corrupt compressed stream, a Parquet file without the text column) raise ``InputError`` naming it.
"""

import dataclasses
import gzip
import io
import json
import os
import posixpath
import re
import zlib
from collections.abc import Iterator
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from winnow.transforms import deadletter, schema, tally
from winnow.transforms.validation import check_int

NAMESPACE = "winnow.io"
ERRORS = "errors"
JSONL, JSONL_GZ, JSONL_ZST, PARQUET = ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"
FORMATS = (JSONL_GZ, JSONL_ZST, JSONL, PARQUET)  # longest suffix first
SPLIT_BYTES = 64 << 20
BATCH_RECORDS = 1024
BATCH_BYTES = 8 << 20
LINE_BLOCK_BYTES = 4 << 20  # decompressed bytes split into lines at a time
PROBE_RECORDS = 100  # records of a JSON Lines file read before the run to check its fields
PROBE_BLOCK_BYTES = 64 << 10  # the probe reads this much at a time, not a whole block
_GLOB_CHARS = re.compile(r"[*?\[]")


class InputError(Exception):
    """A whole input file or pattern cannot be read; the message names it."""


@dataclasses.dataclass(frozen=True)
class ReadConfig:
    """How records are read. ``text_field`` must hold a non-empty string; ``id_field`` may be absent.

    Attributes:
        text_field, id_field: the record fields of the text and the id.
        split_bytes: the largest work unit of a splittable file, in bytes.
        batch_records, batch_bytes: a batch ends at whichever comes first.
    """

    text_field: str = "text"
    id_field: str = "id"
    split_bytes: int = SPLIT_BYTES
    batch_records: int = BATCH_RECORDS
    batch_bytes: int = BATCH_BYTES

    def __post_init__(self):
        if not self.text_field or not self.id_field:
            raise ValueError(f"text_field={self.text_field!r}, id_field={self.id_field!r}; both must be non-empty")
        if self.text_field == self.id_field:
            raise ValueError(f"text_field and id_field are both {self.text_field!r}; they must differ")
        check_int("split_bytes", self.split_bytes, 1024)
        check_int("batch_records", self.batch_records, 1)
        check_int("batch_bytes", self.batch_bytes, 1)


# --- files and units ----------------------------------------------------------------------


def input_format(path: str) -> str:
    """The format suffix of ``path`` (one of ``FORMATS``); ``InputError`` for anything else."""
    for suffix in FORMATS:
        if path.endswith(suffix):
            return suffix
    raise InputError(f"{path}: unknown input format; expected one of {', '.join(FORMATS)}")


def is_local(path: str) -> bool:
    """A path on this machine's disk: no ``scheme://`` (object stores and other Beam filesystems have one)."""
    return FileSystems.get_scheme(path) is None


def resolve_pattern(pattern: str) -> str:
    """A glob as an absolute path (local) or as given (object stores)."""
    return os.path.abspath(pattern) if is_local(pattern) else pattern


def match_inputs(patterns: list[str]) -> list[tuple[str, int]]:
    """``(path, size_in_bytes)`` of every file the patterns match, sorted, each once.

    Raises:
        InputError: a pattern matches nothing, or matches a file of an unknown format or a directory.
    """
    files = {}
    for pattern in patterns:
        try:
            matched = FileSystems.match([resolve_pattern(pattern)])[0].metadata_list
        except Exception as err:  # Beam raises BeamIOError with a nested dict of causes
            raise InputError(f"{pattern}: cannot list ({err})") from None
        if not matched:
            raise InputError(f"{pattern}: matches no file")
        for meta in matched:
            if is_local(meta.path) and os.path.isdir(meta.path):  # also one named like a shard
                raise InputError(f"{meta.path}: is a directory; give a glob such as {meta.path.rstrip('/')}/*.jsonl")
            input_format(meta.path)
            files[meta.path] = meta.size_in_bytes
    return sorted(files.items())


def common_root(patterns: list[str]) -> str:
    """The longest common directory of the patterns' fixed prefixes (the part before any glob character).

    ``shards/*`` and ``/abs/path/shards/*`` give the same root; ``a/*.jsonl`` with ``b/*.jsonl``
    give their parent.
    """
    prefixes = []
    for pattern in patterns:
        resolved = resolve_pattern(pattern)
        fixed = resolved[: m.start()] if (m := _GLOB_CHARS.search(resolved)) else resolved
        prefixes.append(posixpath.dirname(fixed) if not fixed.endswith("/") else fixed.rstrip("/"))
    root = posixpath.commonpath(prefixes) if all(p.startswith("/") for p in prefixes) else os.path.commonprefix(prefixes)
    return root.rstrip("/")


def relative_name(path: str, root: str) -> str:
    """``path`` relative to ``root`` (``common_root``), with forward slashes."""
    return path[len(root) + 1 :] if root and path.startswith(root + "/") else path


@dataclasses.dataclass(frozen=True)
class Unit:
    """One work unit: a byte range of a JSON Lines file, a run of row groups, or a whole file.

    Attributes:
        index: the unit's number in the run's plan (0-based).
        path: the file.
        start, stop: JSON Lines: bytes [start, stop) (stop -1: to the end); Parquet: row groups.
        first_position: the 1-based line or row number of the unit's first line or row.
        size: the unit's share of the file's bytes (progress).
    """

    index: int
    path: str
    start: int
    stop: int
    first_position: int
    size: int

    @property
    def format(self) -> str:
        return input_format(self.path)


def _parquet_file(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(_open_raw(path))
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable Parquet file: {err}") from None


def file_units(path: str, size: int, split_bytes: int) -> list[tuple[int, int, int, int]]:
    """``(start, stop, first_position, size)`` of one file's units (``first_position`` 0: unknown yet).

    A JSON Lines range after the first needs ``first_lines``; Parquet units know their first row.
    """
    fmt = input_format(path)
    if fmt == PARQUET:
        metadata = _parquet_file(path).metadata
        units, first_group, first_row, group_bytes, unit_rows = [], 0, 1, 0, 0
        total_rows = max(metadata.num_rows, 1)
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            compressed = sum(row_group.column(c).total_compressed_size for c in range(row_group.num_columns))
            if group > first_group and group_bytes + compressed > split_bytes:
                units.append((first_group, group, first_row, size * unit_rows // total_rows))
                first_group, first_row, group_bytes, unit_rows = group, first_row + unit_rows, 0, 0
            group_bytes += compressed
            unit_rows += row_group.num_rows
        units.append((first_group, metadata.num_row_groups, first_row, size * unit_rows // total_rows))
        return units
    if fmt != JSONL or size <= split_bytes:
        return [(0, -1, 1, size)]
    return [(start, min(start + split_bytes, size), 1 if start == 0 else 0, min(split_bytes, size - start))
            for start in range(0, size, split_bytes)]


def count_line_starts(path: str, start: int, stop: int) -> int:
    """Line starts in bytes [start, stop) of a JSON Lines file: a line starts at 0 and after each newline.

    Counting ``[max(start - 1, 0), stop - 1)`` for newlines (and 1 for ``start == 0``) reads the range once.
    """
    stream = _open_raw(path)
    try:
        stream.seek(max(start - 1, 0))
        remaining, count = stop - max(start - 1, 0) - 1, int(start == 0)
        while remaining > 0:
            chunk = stream.read(min(remaining, 16 << 20))
            if not chunk:
                break
            count += chunk.count(b"\n")
            remaining -= len(chunk)
        return count
    finally:
        stream.close()


def first_lines(line_starts: list[int]) -> list[int]:
    """The first line number of each range of one file, from each range's ``count_line_starts``."""
    return (1 + np.concatenate([[0], np.cumsum(line_starts[:-1])])).astype(int).tolist()


# --- probing before the run -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileProbe:
    """What the first records of a file show: its fields, and the Python type of its ids (None: no id field)."""

    path: str
    fields: tuple[str, ...]
    id_type: str | None  # "int", "str", or None


def probe_file(path: str, config: ReadConfig) -> FileProbe:
    """The fields of a file (Parquet: its schema; JSON Lines: the first ``PROBE_RECORDS`` objects).

    Raises:
        InputError: a Parquet id column that is neither a string nor an integer.
    """
    if input_format(path) == PARQUET:
        arrow_schema = _parquet_file(path).schema_arrow
        id_type = None
        if config.id_field in arrow_schema.names:
            id_type = _arrow_id_type(arrow_schema.field(config.id_field).type)
            if id_type is None:
                raise InputError(f"{path}: id column {config.id_field!r} has type {arrow_schema.field(config.id_field).type}; "
                                 "expected a string or an integer")
        return FileProbe(path, tuple(arrow_schema.names), id_type)
    fields: dict[str, None] = {}
    id_type = None
    for _, line, _ in _limited(jsonl_lines(path, 0, -1, PROBE_BLOCK_BYTES), PROBE_RECORDS):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            fields.update(dict.fromkeys(obj))
            if id_type is None and obj.get(config.id_field) is not None:
                id_type = _python_id_type(obj[config.id_field])
    return FileProbe(path, tuple(fields), id_type)


def _limited(iterator, n: int):
    for i, item in enumerate(iterator):
        if i >= n:
            break
        yield item


def _arrow_id_type(arrow_type: pa.DataType) -> str | None:
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    return None


def _python_id_type(value) -> str | None:
    if isinstance(value, bool):
        return None
    return "int" if isinstance(value, int) else "str" if isinstance(value, str) else None


@dataclasses.dataclass(frozen=True)
class IdPolicy:
    """How records get their ids: the ``id_field`` (``has_field``), or ``<name>:<position>`` under ``root``."""

    has_field: bool
    root: str
    id_type: str  # "int" or "str": the type of every id of the run


def check_probes(probes: list[FileProbe], config: ReadConfig, root: str) -> IdPolicy:
    """Check the probed files before the run and decide the id policy.

    Raises:
        InputError: a Parquet file without the text column, or a first file none of whose probed
            records has the text field (naming the fields there are), an input field that uses
            winnow's reserved prefix, or two files whose ids differ in type (naming both).
    """
    for probe in probes:  # a Parquet file's schema is all of it: every file is checked
        if input_format(probe.path) == PARQUET and config.text_field not in probe.fields:
            raise InputError(f"{probe.path}: Parquet file has no column {config.text_field!r} (columns: {', '.join(probe.fields)}); set --text-field")
    first = probes[0]
    if first.fields and config.text_field not in first.fields:
        raise InputError(f"{first.path}: no field {config.text_field!r} in its first records (fields: {', '.join(first.fields)}); "
                         "set --text-field")
    for probe in probes:
        reserved = schema.reserved_names(probe.fields)
        if reserved:
            raise InputError(f"{probe.path}: field {reserved[0]!r} uses winnow's reserved prefix {schema.PREFIX!r}; rename it")
    typed = [probe for probe in probes if probe.id_type is not None]
    for probe in typed[1:]:
        if probe.id_type != typed[0].id_type:
            raise InputError(f"ids of different types: {typed[0].id_type} in {typed[0].path}, {probe.id_type} in {probe.path}; "
                             "all inputs' ids must share one type")
    has_field = first.id_type is not None
    return IdPolicy(has_field, root, typed[0].id_type if has_field else "str")


# --- reading ----------------------------------------------------------------------------------


class UnitBatch(NamedTuple):
    """A batch of one unit's records (module docstring).

    Attributes:
        table: the valid records, the input's own columns (the text and id fields included).
        ids: (n,) the valid records' ids, ``int`` or ``str``.
        texts: (n,) their texts.
        ordinals: (n,) int64 ordinal of each valid record in its unit.
        positions: (n,) int64 1-based line or row numbers.
        invalid: ``(ordinal, position, reason, raw)`` of each invalid record.
        conflicts: JSON Lines fields stringified in this batch.
        read_bytes: input bytes this batch consumed (progress).
        skipped: records passed over unparsed (``read_unit``'s ``only``).
    """

    table: pa.Table
    ids: list
    texts: list[str]
    ordinals: np.ndarray
    positions: np.ndarray
    invalid: list[tuple[int, int, str, str]]
    conflicts: frozenset
    read_bytes: int
    skipped: int = 0

    @property
    def records(self) -> int:
        """Records the batch consumed: valid, invalid and skipped."""
        return len(self.ids) + len(self.invalid) + self.skipped


class _ZstdStream(io.RawIOBase):
    """Decompressed bytes of concatenated zstd frames; ``ZstdError`` when the last frame is cut short.

    (zstandard's own ``stream_reader`` ends silently on a truncated frame.)
    """

    def __init__(self, raw):
        super().__init__()
        self._raw = raw
        self._context = zstandard.ZstdDecompressor()
        self._frame = self._context.decompressobj()
        self._pending, self._start = b"", 0  # decompressed bytes not yet returned: self._pending[self._start:]
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._start == len(self._pending):
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise zstandard.ZstdError("stream ends inside a zstd frame")
                return 0
            self._pending, self._start = self._decompress(chunk), 0
        size = min(len(buffer), len(self._pending) - self._start)
        buffer[:size] = memoryview(self._pending)[self._start:self._start + size]
        self._start += size
        return size

    def _decompress(self, chunk: bytes) -> bytes:
        parts = []
        while chunk:
            parts.append(self._frame.decompress(chunk))
            self._in_frame = not self._frame.eof
            chunk = b""
            if self._frame.eof:
                chunk = self._frame.unused_data
                self._frame = self._context.decompressobj()
        return b"".join(parts)

    def close(self):
        self._raw.close()
        super().close()


def _open_raw(path: str):
    """The file's bytes, not decompressed by Beam; ``InputError`` for a directory (a glob can match one)."""
    try:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory; give a glob such as {path.rstrip('/')}/*.jsonl") from None


def _open_jsonl_stream(path: str, fmt: str):
    """(decompressed stream, raw file): the raw file's position tells how much of it was read."""
    raw = _open_raw(path)
    if fmt == JSONL_GZ:
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), buffer_size=1 << 20), raw
    if fmt == JSONL_ZST:
        return io.BufferedReader(_ZstdStream(raw), buffer_size=1 << 20), raw
    return raw, None


def jsonl_line_blocks(path: str, start: int, stop: int, block_bytes: int = LINE_BLOCK_BYTES) -> Iterator[tuple[int, list[bytes], int]]:
    """``(index, lines, read)``: the lines starting in [start, stop), about ``block_bytes`` at a time.

    ``lines`` are raw: blank ones included, each without its ``\\n`` (a ``\\r`` before it stays); ``index``
    is the block's first line's, counting from the range's first line; ``read`` is the bytes of the file
    read after the block from ``start`` (compressed bytes for a compressed file). ``stop == -1``
    reads to the end of the stream. Compressed files are read from the start. A leading UTF-8 BOM
    is removed. Splitting a block costs one C call, so a reader that parses a few lines of a unit
    pays little for the others.

    Raises:
        InputError: the compressed stream is corrupt or truncated.
    """
    fmt = input_format(path)
    stream, compressed = _open_jsonl_stream(path, fmt)
    offset, index, carry, last = start, 0, b"", False
    try:
        if start > 0:  # the line holding byte start - 1 belongs to the previous range
            stream.seek(start - 1)
            offset = start - 1 + len(stream.readline())
        first_block = offset == 0
        while not last and (stop == -1 or offset < stop):
            chunk = stream.read(block_bytes)
            block, last = carry + chunk, not chunk
            end = len(block) if last else block.rfind(b"\n") + 1  # at the end of the stream the last line may lack its \n
            block, carry = block[:end], block[end:]
            if not block:
                continue
            if stop != -1 and offset + len(block) > stop:  # lines starting at stop or later belong to the next range
                cut = block.find(b"\n", stop - offset - 1) + 1
                block, last = block[:cut or len(block)], True
            lines = block.split(b"\n")
            if block.endswith(b"\n"):
                lines.pop()
            if first_block and lines[0].startswith(b"\xef\xbb\xbf"):
                lines[0] = lines[0][3:]
            first_block = False
            offset += len(block)
            yield index, lines, (compressed.tell() if compressed else offset - start)
            index += len(lines)
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
        raise InputError(f"{path}: corrupt or truncated {fmt} stream after byte {offset} of its content: {err}") from None
    finally:
        stream.close()


def _record_lines(lines: list[bytes]) -> list[int]:
    """The positions of a block's non-blank lines: its records (blank lines are neither records nor errors)."""
    return [i for i, line in enumerate(lines) if line and not line.isspace()]


def jsonl_lines(path: str, start: int, stop: int, block_bytes: int = LINE_BLOCK_BYTES) -> Iterator[tuple[int, bytes, int]]:
    """``(index, line, read)`` of the non-blank lines of ``jsonl_line_blocks`` (``read``: after the line's
    block), line endings removed."""
    for first, lines, read in jsonl_line_blocks(path, start, stop, block_bytes):
        for i in _record_lines(lines):
            yield first + i, lines[i].rstrip(b"\r"), read


def _text_reason(text) -> str | None:
    """Why a text value is unusable, or None for a usable one."""
    if text is None:
        return deadletter.MISSING_TEXT
    if not isinstance(text, str):
        return deadletter.TEXT_NOT_STRING
    if not text or text.isspace():
        return deadletter.EMPTY_TEXT
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON allows lone surrogates; UTF-8 (and Arrow) do not
        return deadletter.INVALID_UTF8
    return None


def _id_reason(value, id_type: str) -> str | None:
    """Why an id value is unusable (absent, null, empty, another type than the run's), or None."""
    if _python_id_type(value) != id_type or value == "":
        return deadletter.INVALID_ID
    return None


def table_from_rows(rows: list[dict]) -> tuple[pa.Table, frozenset]:
    """Parsed JSON objects -> (Arrow table, fields stringified because their values conflict).

    Columns are the union of the objects' keys in first-seen order, typed by ``pa.array``'s
    inference. A field whose values cannot share one type becomes a string column: string values
    as they are, others as JSON.
    """
    if not rows:
        return pa.table({}), frozenset()
    try:
        table = pa.Table.from_batches([pa.RecordBatch.from_struct_array(pa.array(rows))])
        if not any(_unwritable(field.type) for field in table.schema):
            return table, frozenset()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):
        pass
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns, conflicts = {}, []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
            if not _unwritable(columns[name].type):
                continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError):
            pass
        conflicts.append(name)
        columns[name] = pa.array([None if v is None else _as_text(v) for v in values], pa.string())
    return pa.table(columns), frozenset(conflicts)


def _as_text(value) -> str:
    """A value of a stringified column: a string as it is, anything else as JSON; escaped when it holds a lone surrogate."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return json.dumps(value)


def _unwritable(arrow_type: pa.DataType) -> bool:
    """A type Parquet cannot store: a struct without fields (from ``{}`` values), at any depth."""
    if pa.types.is_struct(arrow_type):
        return arrow_type.num_fields == 0 or any(_unwritable(arrow_type.field(i).type) for i in range(arrow_type.num_fields))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return _unwritable(arrow_type.value_type)
    if pa.types.is_map(arrow_type):
        return _unwritable(arrow_type.key_type) or _unwritable(arrow_type.item_type)
    return False


class _Batcher:
    """Cuts a unit's records into batches of at most ``batch_records`` records or ``batch_bytes`` bytes."""

    def __init__(self, config: ReadConfig):
        self._config = config
        self.records, self.size = 0, 0

    def add(self, size: int) -> bool:
        """Count one record of ``size`` bytes; True when the batch is full."""
        self.records += 1
        self.size += size
        return self.records >= self._config.batch_records or self.size >= self._config.batch_bytes

    def reset(self) -> None:
        self.records, self.size = 0, 0


def _within(only: np.ndarray, start: int, stop: int) -> np.ndarray:
    """The values of the ascending ``only`` in [start, stop): the wanted ordinals of one block or batch."""
    return only[np.searchsorted(only, start):np.searchsorted(only, stop)]


def _jsonl_batches(unit: Unit, config: ReadConfig, ids: IdPolicy, name: str, only: np.ndarray | None) -> Iterator[UnitBatch]:
    pending: list[tuple[int, int, bytes]] = []  # (ordinal, position, line)
    batcher = _Batcher(config)
    ordinal, reported, read, skipped = 0, 0, 0, 0
    for first, lines, read in jsonl_line_blocks(unit.path, unit.start, unit.stop):
        records = _record_lines(lines)
        taken = range(len(records)) if only is None else (_within(only, ordinal, ordinal + len(records)) - ordinal).tolist()
        skipped += len(records) - len(taken)
        for j in taken:  # a batch holds batch_records parsed records at most; skipped ones only count as read
            line = lines[records[j]].rstrip(b"\r")
            pending.append((ordinal + j, unit.first_position + first + records[j], line))
            if batcher.add(len(line) + 1):
                yield _parse_lines(pending, config, ids, name, min(read, unit.size) - reported)._replace(skipped=skipped)
                pending, reported, skipped = [], min(read, unit.size), 0
                batcher.reset()
        ordinal += len(records)
    if pending or skipped or ordinal == 0:
        yield _parse_lines(pending, config, ids, name, unit.size - reported)._replace(skipped=skipped)


def _parse_lines(lines: list[tuple[int, int, bytes]], config: ReadConfig, ids: IdPolicy, name: str, size: int) -> UnitBatch:
    rows, doc_ids, texts, ordinals, positions, invalid = [], [], [], [], [], []
    for ordinal, position, line in lines:
        reason, obj = None, None
        try:
            decoded = line.decode("utf-8")
        except UnicodeDecodeError:
            reason, decoded = deadletter.INVALID_UTF8, line
        if reason is None:
            try:
                obj = json.loads(decoded)
            except ValueError:
                reason = deadletter.INVALID_JSON
        if reason is None and not isinstance(obj, dict):
            reason = deadletter.NOT_AN_OBJECT
        if reason is None:
            reason = _text_reason(obj.get(config.text_field))
        if reason is None and ids.has_field:
            reason = _id_reason(obj.get(config.id_field), ids.id_type)
        if reason is not None:
            invalid.append((ordinal, position, reason, deadletter.raw_preview(decoded)))
            continue
        rows.append(obj)
        doc_ids.append(obj[config.id_field] if ids.has_field else f"{name}:{position}")
        texts.append(obj[config.text_field])
        ordinals.append(ordinal)
        positions.append(position)
    table, conflicts = table_from_rows(rows)
    return UnitBatch(table, doc_ids, texts, np.array(ordinals, np.int64), np.array(positions, np.int64), invalid, conflicts, size)


def _parquet_batches(unit: Unit, config: ReadConfig, ids: IdPolicy, name: str, only: np.ndarray | None) -> Iterator[UnitBatch]:
    parquet = _parquet_file(unit.path)
    if config.text_field not in parquet.schema_arrow.names:
        raise InputError(f"{unit.path}: Parquet file has no column {config.text_field!r} (columns: {', '.join(parquet.schema_arrow.names)})")
    groups = list(range(unit.start, unit.stop))
    rows = sum(parquet.metadata.row_group(g).num_rows for g in groups) or 1
    ordinal = 0
    try:
        batches = parquet.iter_batches(batch_size=config.batch_records, row_groups=groups, use_threads=False)
        for batch in batches:
            table, ordinals = pa.Table.from_batches([batch]), np.arange(ordinal, ordinal + batch.num_rows, dtype=np.int64)
            if only is not None:
                ordinals = _within(only, ordinal, ordinal + batch.num_rows)
                table = table.take(pa.array(ordinals - ordinal))
            checked = _check_rows(table, ordinals, unit.first_position, config, ids, name, unit.size * batch.num_rows // rows)
            yield checked._replace(skipped=batch.num_rows - len(ordinals))
            ordinal += batch.num_rows
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{unit.path}: corrupt Parquet data in row groups {unit.start}..{unit.stop - 1}: {err}") from None
    if ordinal == 0:
        yield _check_rows(parquet.schema_arrow.empty_table(), np.zeros(0, np.int64), unit.first_position, config, ids, name, 0)


def _check_rows(table: pa.Table, ordinals: np.ndarray, first_position: int, config: ReadConfig, ids: IdPolicy, name: str,
                size: int) -> UnitBatch:
    """A Parquet batch (row i is the unit's ordinal ``ordinals[i]``) -> valid rows and dead letters (texts decoded from binary when needed)."""
    texts = table.column(config.text_field).to_pylist()
    raw_ids = table.column(config.id_field).to_pylist() if ids.has_field and config.id_field in table.column_names else None
    keep, doc_ids, valid_texts, invalid = [], [], [], []
    for i, text in enumerate(texts):
        reason = None
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                reason = deadletter.INVALID_UTF8
        reason = reason or _text_reason(text)
        if reason is None and ids.has_field:
            reason = _id_reason(raw_ids[i] if raw_ids is not None else None, ids.id_type)
        position = first_position + int(ordinals[i])
        if reason is not None:
            row = table.slice(i, 1).to_pylist()[0]
            invalid.append((int(ordinals[i]), position, reason, deadletter.raw_preview(json.dumps(row, default=str, ensure_ascii=False))))
            continue
        keep.append(i)
        doc_ids.append(raw_ids[i] if ids.has_field else f"{name}:{position}")
        valid_texts.append(text)
    kept = np.array(keep, np.int64)
    valid = table if len(keep) == table.num_rows else table.take(pa.array(kept))
    return UnitBatch(valid, doc_ids, valid_texts, ordinals[kept], ordinals[kept] + first_position, invalid, frozenset(), size)


def read_unit(unit: Unit, config: ReadConfig, ids: IdPolicy, only: np.ndarray | None = None) -> Iterator[UnitBatch]:
    """The batches of one unit, in record order (at least one batch, possibly empty).

    ``only``: the ordinals to parse and return (the others are passed over, counted as skipped,
    and not checked), or None for every record.

    Raises:
        InputError: the file is unreadable or corrupt, or a Parquet file has no text column.
    """
    name = relative_name(unit.path, ids.root)
    only = None if only is None else np.unique(np.asarray(only, np.int64))
    if unit.format == PARQUET:
        return _parquet_batches(unit, config, ids, name, only)
    return _jsonl_batches(unit, config, ids, name, only)


# --- schemas of the output -----------------------------------------------------------------


def unify_fields(schemas: list[pa.Schema]) -> tuple[pa.Schema, list[str]]:
    """One schema for all units' schemas: permissive promotion, fields in first-seen order.

    A field whose types cannot be unified (a string in one unit, a number or struct in another)
    becomes a string column; those fields are returned as the second element.
    """
    types: dict[str, list[pa.DataType]] = {}
    for one in schemas:
        for field in one:
            types.setdefault(field.name, []).append(field.type)
    fields, conflicts = [], []
    for name, seen in types.items():
        try:
            unified = pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in seen], promote_options="permissive")
            fields.append(unified.field(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, NotImplementedError):
            conflicts.append(name)
            fields.append(pa.field(name, pa.string()))
    return pa.schema(fields), conflicts


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` with exactly ``target``'s columns: missing ones null, others cast.

    A value that does not cast (a struct into a string column) is written as JSON.
    """
    columns = []
    for field in target:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if column.type == field.type:
            columns.append(column)
            continue
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            values = column.to_pylist()
            columns.append(pa.array([v if v is None or isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
                                     for v in values], field.type))
    return pa.Table.from_arrays(columns, schema=target)


# --- Beam wrappers ---------------------------------------------------------------------------


def plan_units(files: list[tuple[str, int]], config: ReadConfig, line_starts=None) -> list[Unit]:
    """The work units of the matched files, numbered in file order.

    ``line_starts(path, start, stop) -> int`` counts a JSON Lines range's line starts (default:
    ``count_line_starts``, read here); it is only called for files split into several ranges.
    """
    line_starts = line_starts or count_line_starts
    units = []
    for path, size in files:
        ranges = file_units(path, size, config.split_bytes)
        if len(ranges) > 1 and input_format(path) != PARQUET:
            firsts = first_lines([line_starts(path, start, stop) for start, stop, _, _ in ranges])
            ranges = [(start, stop, first, part) for (start, stop, _, part), first in zip(ranges, firsts)]
        units += [Unit(len(units) + i, path, start, stop, first, part) for i, (start, stop, first, part) in enumerate(ranges)]
    return units


def with_generated_ids(batch: UnitBatch, ids: IdPolicy) -> pa.Table:
    """The batch's table, with ``winnow_id`` appended when the ids are generated."""
    if ids.has_field:
        return batch.table
    return batch.table.append_column(schema.field(schema.ID), pa.array(batch.ids, pa.string()))


class _ReadUnitFn(beam.DoFn):
    """Unit -> the record batches of its valid records (Arrow tables); ``errors``: dead letters."""

    def __init__(self, config: ReadConfig, ids: IdPolicy, role: str | None):
        self._config, self._ids, self._role = config, ids, role

    def setup(self):
        self._exits = tally.Exits(NAMESPACE)

    def process(self, unit: Unit):
        for batch in read_unit(unit, self._config, self._ids):
            self._exits.count({tally.KEPT: len(batch.ids), **tally.count_values(tally.invalid_exit(r) for _, _, r, _ in batch.invalid)})
            for _, position, reason, raw in batch.invalid:
                yield beam.pvalue.TaggedOutput(ERRORS, deadletter.dead_letter(unit.path, position, reason, raw, self._role))
            if batch.ids:
                yield with_generated_ids(batch, self._ids)


class ReadBatches(beam.PTransform):
    """Read records from glob patterns: ``{"batches": Arrow tables of valid records, "errors": dead letters}``.

    The patterns are matched and the files probed when the pipeline is built (a pattern matching
    nothing, a wrong text field or ids of mixed types fail before anything runs). Each table holds
    the input's own columns, plus ``winnow_id`` when the input has no ``id_field``.
    """

    def __init__(self, patterns: list[str], config: ReadConfig = ReadConfig(), role: str | None = None):
        super().__init__()
        self._patterns, self._config, self._role = list(patterns), config, role

    def expand(self, pbegin):
        files = match_inputs(self._patterns)
        ids = check_probes([probe_file(path, self._config) for path, _ in files], self._config, common_root(self._patterns))
        # Reshuffle spreads the units over workers instead of reading them where Create ran.
        read = (
            pbegin
            | "ListUnits" >> beam.Create(plan_units(files, self._config))
            | "SpreadUnits" >> beam.Reshuffle()
            | "ReadUnits" >> beam.ParDo(_ReadUnitFn(self._config, ids, self._role)).with_outputs(ERRORS, main="batches")
        )
        return {"batches": read.batches, "errors": read[ERRORS]}
