"""The features table: one compact row per input record, written once by the score pass, read by every later pass.

Layout of ``OUTPUT/features/`` (Parquet and JSON on any Beam filesystem)::

    manifest.json          the inputs, the work units and every scoring option the rows depend on
    fit.pkl, fit.json      the fitted state (DSIR model, ZIP-FIT target model, embedding projection,
                           k-means centroids) and its summary; fit.json marks it complete
    unit-00000.parquet     the rows of work unit 0, in record order (row i = ordinal i)
    unit-00000.json        its completion marker: counts, the unit's Arrow schema, conflicts
    dedup-<key>/           the dedup decisions of the run that made the table (``dedup_cache.py``)

A unit is complete only when its marker exists: renames are not atomic on object stores, so the
marker is written after the shard. A rerun with ``--resume`` scores only the units without one.

Columns (only those of the options that ran): ``ordinal`` int32, ``position`` int64 (1-based line
or row), ``id`` (the input's id type), ``invalid_reason`` and ``raw`` (dead letters only),
``length`` int64 (characters), ``exact_hash`` fixed_size_binary(16), ``signature``
fixed_size_binary(4 num_perm) (little-endian uint32s; tables of earlier versions,
fixed_size_list<uint32>[num_perm], are read as well), ``dsir_log_weight`` float64, ``dsir_target_log_weights``
list<float64>, ``dsir_length`` int64 (DSIR's token length), ``zipfit_alignment`` float64,
``embedding`` fixed_size_binary(2 dim) (unit vectors as little-endian float16s, zeros where absent;
earlier tables' fixed_size_list<float16>[dim] are read as well), ``cluster`` int32,
``cluster_distance`` float32.
"""

import base64
import dataclasses
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from winnow.transforms import dedup, io
from winnow.transforms.dsir import DsirModel
from winnow.transforms.embed import Projection
from winnow.transforms.zipfit import TargetModel

MANIFEST, FIT_STATE, FIT_SUMMARY = "manifest.json", "fit.pkl", "fit.json"
VERSION = 1

ORDINAL, POSITION, ID, INVALID_REASON, RAW, LENGTH = "ordinal", "position", "id", "invalid_reason", "raw", "length"
EXACT_HASH, SIGNATURE = "exact_hash", "signature"
BAND_KEYS = "band_keys"  # dedup index shards: the LSH band keys of the signature, for BAND_ROWS_KEY
BAND_ROWS_KEY = b"winnow.band_rows"  # schema metadata of an index shard with band keys: b"<bands>,<rows>"
DSIR_LOG_WEIGHT, DSIR_TARGET_LOG_WEIGHTS, DSIR_LENGTH = "dsir_log_weight", "dsir_target_log_weights", "dsir_length"
ZIPFIT_ALIGNMENT = "zipfit_alignment"
EMBEDDING, CLUSTER, CLUSTER_DISTANCE = "embedding", "cluster", "cluster_distance"
EMBEDDING_DTYPE = np.dtype("<f2")  # how ``embedding_array`` stores a vector's coordinates
# stored plain and uncompressed: hashes are random bits (a dictionary or zstd costs time and saves nothing), and zstd
# saves little of float16 embeddings for several times their decode time
PLAIN_COLUMNS = (EXACT_HASH, SIGNATURE, BAND_KEYS, EMBEDDING)


class FeaturesError(Exception):
    """A features table cannot be used for this run; the message names the option or file."""


@dataclasses.dataclass(frozen=True, eq=False)
class FitState:
    """The fitted state the score pass needs (each None when its method does not run)."""

    dsir: DsirModel | None = None
    zipfit: TargetModel | None = None
    projection: Projection | None = None
    embedding_width: int | None = None  # --embedding-field: the width every vector must have
    centroids: np.ndarray | None = None
    stats: dict = dataclasses.field(default_factory=dict)


def id_arrow_type(id_type: str) -> pa.DataType:
    return pa.int64() if id_type == "int" else pa.string()


def features_schema(id_type: str, columns: dict[str, pa.DataType]) -> pa.Schema:
    """The shard schema: the fixed columns, then the scoring columns of the options that ran."""
    fixed = [(ORDINAL, pa.int32()), (POSITION, pa.int64()), (ID, id_arrow_type(id_type)), (INVALID_REASON, pa.string()),
             (RAW, pa.string()), (LENGTH, pa.int64())]
    return pa.schema(fixed + list(columns.items()))


def parquet_options(schema: pa.Schema) -> dict:
    """``pq.write_table``/``ParquetWriter`` keywords for winnow's own tables: zstd and dictionaries for the string
    columns, but the ``PLAIN_COLUMNS`` uncompressed (random bits: written and read faster, hardly larger).
    Parquet names a list column's values ``<name>.list.element``: the codecs are keyed by that path."""
    def path(field: pa.Field) -> str:
        listed = pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type) or pa.types.is_large_list(field.type)
        return f"{field.name}.list.element" if listed else field.name

    return {"compression": {path(field): "none" if field.name in PLAIN_COLUMNS else "zstd" for field in schema},
            "use_dictionary": [field.name for field in schema if pa.types.is_string(field.type)]}


def schema_to_text(arrow_schema: pa.Schema) -> str:
    return base64.b64encode(arrow_schema.serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file (object stores publish it complete on close)."""
    with FileSystems.create(path, mime_type="application/octet-stream") as handle:
        handle.write(data)


def read_bytes(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


def write_json(path: str, value) -> None:
    write_bytes(path, json.dumps(value, indent=1, sort_keys=True, default=_json_default).encode("utf-8"))


def read_json(path: str):
    return json.loads(read_bytes(path).decode("utf-8"))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


class FeaturesTable:
    """Paths and reads of one features table (``root`` = ``OUTPUT/features``)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def path(self, name: str) -> str:
        return FileSystems.join(self.root, name)

    def shard(self, unit: int) -> str:
        return self.path(f"unit-{unit:05d}.parquet")

    def marker(self, unit: int) -> str:
        return self.path(f"unit-{unit:05d}.json")

    def complete_units(self) -> set[int]:
        """The units whose marker exists."""
        pattern = self.path("unit-*.json")
        matched = FileSystems.match([pattern])[0].metadata_list
        return {int(meta.path.rsplit("unit-", 1)[1][:5]) for meta in matched}

    def summary(self, unit: int) -> dict:
        return read_json(self.marker(unit))

    def manifest(self) -> dict:
        path = self.path(MANIFEST)
        if not exists(path):
            raise FeaturesError(f"{self.root}: no {MANIFEST}; not a winnow features table")
        return read_json(path)

    def fit_state(self) -> FitState:
        return pickle.loads(read_bytes(self.path(FIT_STATE)))

    def fit_complete(self) -> bool:
        return exists(self.path(FIT_SUMMARY))

    def write_fit_state(self, state: FitState) -> None:
        write_bytes(self.path(FIT_STATE), pickle.dumps(state))
        write_json(self.path(FIT_SUMMARY), state.stats)  # last: marks the fit complete

    def read(self, unit: int, columns: list[str], ordinals: np.ndarray | None = None) -> pa.Table:
        """Columns of a unit's shard; only the rows ``ordinals`` (``read_rows``) when given."""
        if ordinals is not None:
            return read_rows(self.shard(unit), columns, ordinals)
        return pq.read_table(FileSystems.open(self.shard(unit)), columns=columns)

    def ids(self, unit: int, ordinals: np.ndarray) -> list:
        """The ids of a unit's rows ``ordinals`` (a ``select.KeyBatch``'s id lookup)."""
        return self.read(unit, [ID], ordinals).column(ID).to_pylist()


ROWS_PER_READ = 8192  # read_rows' batch: a few MB of signatures


def read_rows(path: str, columns: list[str], ordinals: np.ndarray) -> pa.Table:
    """The rows ``ordinals`` (any order, repeats allowed) of a Parquet file's ``columns``, in that order.

    Only the row groups holding a wanted row are read (a few ids cost a few 1,024-row groups, not
    the file), each ``ROWS_PER_READ`` rows at a time, keeping only the rows asked for: memory is
    one batch plus the result, not the whole column (fresh memory is what a large read costs most).
    Raises IndexError for an ordinal outside the file's rows.
    """
    ordinals = np.asarray(ordinals, np.int64)
    wanted, position = np.unique(ordinals, return_inverse=True)
    shard = pq.ParquetFile(FileSystems.open(path))
    metadata = shard.metadata
    if len(wanted) and (wanted[0] < 0 or wanted[-1] >= metadata.num_rows):
        raise IndexError(f"{path}: rows {wanted[0]}..{wanted[-1]} asked for, the file has {metadata.num_rows}")
    group_starts = np.cumsum([0] + [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)])
    parts = []
    for group in np.unique(np.searchsorted(group_starts, wanted, side="right") - 1).tolist():
        start = int(group_starts[group])
        for batch in shard.iter_batches(batch_size=ROWS_PER_READ, row_groups=[group], columns=columns, use_threads=False):
            low, high = np.searchsorted(wanted, [start, start + batch.num_rows])
            if high > low:
                parts.append(batch.take(pa.array(wanted[low:high] - start)))
            start += batch.num_rows
    fields = [shard.schema_arrow.field(name) for name in columns]
    table = pa.Table.from_batches(parts, schema=pa.schema(fields, metadata=shard.schema_arrow.metadata))
    return table if np.array_equal(wanted, ordinals) else table.take(pa.array(position))


class FeaturesSignatures(dedup.SignatureSource):
    """``dedup.SignatureSource`` over a features table and the shards of the dedup indexes in use."""

    def __init__(self, table: FeaturesTable, index_shards: dict[int, str]):
        self._table, self._index_shards = table, index_shards

    def fetch(self, unit: int, ordinals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if unit >= dedup.INDEX_UNIT_BASE:
            rows = read_rows(self._index_shards[unit], [ID, SIGNATURE], ordinals)
        else:
            rows = self._table.read(unit, [ID, SIGNATURE], ordinals)
        return np.array(rows.column(ID).to_pylist(), dtype=object), signatures_of(rows.column(SIGNATURE))

    def fetch_ids(self, unit: int, ordinals: np.ndarray) -> np.ndarray:
        if unit >= dedup.INDEX_UNIT_BASE:
            rows = read_rows(self._index_shards[unit], [ID], ordinals)
        else:
            rows = self._table.read(unit, [ID], ordinals)
        return np.array(rows.column(ID).to_pylist(), dtype=object)


def band_rows_tag(band_rows: tuple[int, int]) -> bytes:
    """The ``BAND_ROWS_KEY`` metadata value naming an index shard's bands: b"<bands>,<rows>"."""
    return "{},{}".format(*band_rows).encode()


def fixed_lists_of(column, stored_dtype, dtype=None) -> np.ndarray:
    """A fixed_size_binary column of little-endian ``stored_dtype`` rows (``fixed_rows_array``), or a fixed_size_list one -> (n, width) ``dtype`` (default ``stored_dtype``)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    dtype = stored_dtype if dtype is None else dtype
    if pa.types.is_fixed_size_binary(column.type):
        item = np.dtype(stored_dtype).newbyteorder("<")
        width = column.type.byte_width // item.itemsize
        values = np.frombuffer(column.buffers()[1], dtype=item, count=width * len(column), offset=column.offset * column.type.byte_width)
        return values.astype(dtype).reshape(-1, width)
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(-1, width)


def fixed_rows_array(values: np.ndarray) -> pa.Array:
    """(n, width) array -> a fixed_size_binary column of its little-endian rows.

    How signatures, band keys and embeddings are stored: Parquet decodes such a column as one flat
    buffer, a fixed_size_list one value and level at a time (tens of times slower).
    """
    rows = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    return pa.FixedSizeBinaryArray.from_buffers(fixed_rows_type(rows.dtype, rows.shape[1]), len(rows), [None, pa.py_buffer(rows.tobytes())])


def fixed_rows_type(dtype, width: int) -> pa.DataType:
    """The Arrow type of ``fixed_rows_array`` for rows of ``width`` values of ``dtype``."""
    return pa.binary(np.dtype(dtype).itemsize * width)


def signatures_of(column) -> np.ndarray:
    """A ``signature`` column -> (n, P) uint32."""
    return fixed_lists_of(column, np.uint32)


def signature_array(signatures: np.ndarray) -> pa.Array:
    """(n, P) uint32 signatures -> a fixed_size_binary(4 P) column (``fixed_rows_array``)."""
    return fixed_rows_array(np.asarray(signatures, np.uint32))


def embedding_array(vectors: np.ndarray) -> pa.Array:
    """(n, d) unit vectors -> a fixed_size_binary(2 d) column of float16 rows (``fixed_rows_array``).

    float16: half the bytes; cosine similarities of unit vectors keep about three decimal digits.
    """
    return fixed_rows_array(np.asarray(vectors, EMBEDDING_DTYPE))


def embeddings_of(column, dtype=np.float32) -> np.ndarray:
    """An ``embedding`` column -> (n, d) ``dtype`` (``EMBEDDING_DTYPE`` converts nothing)."""
    return fixed_lists_of(column, EMBEDDING_DTYPE, dtype)


def hashes_of(column) -> np.ndarray:
    """An ``exact_hash`` column -> (n, 2) uint64."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return np.frombuffer(column.buffers()[1], dtype=">u8", count=2 * len(column), offset=column.offset * 16).astype(np.uint64).reshape(-1, 2)


def hash_array(hashes: np.ndarray) -> pa.Array:
    """(n, 2) uint64 hashes -> a fixed_size_binary(16) column."""
    data = np.ascontiguousarray(hashes, dtype=">u8").tobytes()
    return pa.Array.from_buffers(pa.binary(16), len(hashes), [None, pa.py_buffer(data)])
