"""The record contract every transform shares (see CONTRACT.md).

A record flowing through winnow is a plain ``dict``:

- ``id`` (str) and ``text`` (str, non-empty): always present once a record is read and valid;
- the other input fields, unchanged;
- score columns (``SCORE_COLUMNS``), added by the method that computes them;
- ``drop_reason`` (str or absent/None): set by the first stage that rules the record out of
  selection (a duplicate, too short, ...). Later stages keep an existing reason and do not
  score dropped records for selection; ``not_selected`` is set by the selection itself.

Invalid records never become records: readers and scorers emit them on the ``errors`` output as
``{"source", "position", "reason", "raw"}`` dicts, written to ``errors/*.jsonl``.
"""

import numpy as np
import pyarrow as pa

ID, TEXT = "id", "text"
DROP_REASON, SELECTED = "drop_reason", "selected"
ERRORS_TAG = "errors"

DSIR_LOG_WEIGHT = "dsir_log_weight"
DSIR_TARGET_LOG_WEIGHTS = "dsir_target_log_weights"  # with several separate targets: one weight per target
DSIR_TARGET = "dsir_target"  # with separate targets: the target (0-based, in --target order) that selected the record
ZIPFIT_ALIGNMENT = "zipfit_alignment"
CLUSTER = "cluster"
CLUSTER_DISTANCE = "cluster_distance"
DUPLICATE_OF = "duplicate_of"
# Private embedding set by embed.Embed and read by kmeans/vendi (vendi.parse_embedding); the writer
# drops it. Bytes of a (dim,) float32 little-endian vector: Beam encodes bytes natively, but
# pickles a numpy array, ~20 us more per record at every stage boundary.
EMBEDDING = "__winnow_embedding"
EMBEDDING_DTYPE = np.dtype("<f4")

SCORE_COLUMNS = {
    DSIR_LOG_WEIGHT: pa.float64(),
    DSIR_TARGET_LOG_WEIGHTS: pa.list_(pa.float64()),
    DSIR_TARGET: pa.int32(),
    ZIPFIT_ALIGNMENT: pa.float64(),
    CLUSTER: pa.int32(),
    CLUSTER_DISTANCE: pa.float32(),
    DUPLICATE_OF: pa.string(),
}

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
SEMANTIC_DUPLICATE = "semantic_duplicate"
TOO_SHORT = "too_short"
NOT_SELECTED = "not_selected"
DROP_REASONS = (EXACT_DUPLICATE, NEAR_DUPLICATE, SEMANTIC_DUPLICATE, TOO_SHORT, NOT_SELECTED)

RESERVED_COLUMNS = frozenset({ID, TEXT, DROP_REASON, SELECTED, *SCORE_COLUMNS})


def embedding_bytes(vector: np.ndarray) -> bytes:
    """The ``EMBEDDING`` value of a (dim,) vector: its float32 little-endian bytes."""
    return np.asarray(vector, dtype=EMBEDDING_DTYPE).tobytes()


def is_eligible(record: dict) -> bool:
    """A record can still be selected: no earlier stage dropped it."""
    return record.get(DROP_REASON) is None


def drop(record: dict, reason: str, **columns) -> dict:
    """A copy of ``record`` dropped for ``reason`` unless it already was; ``columns`` are set either way."""
    out = {**record, **columns}
    if out.get(DROP_REASON) is None:
        out[DROP_REASON] = reason
    return out
