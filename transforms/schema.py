"""winnow's own columns and outcomes: the names every module and output shares (CONTRACT.md).

Input columns pass through untouched. winnow adds only its own columns, all named with the
reserved prefix ``winnow_``, and only those of the methods and options that ran; an input field
that uses the prefix is an error before the run (``reserved_names``).

Every valid record ends selected or dropped for one reason (``DROP_REASONS``), in this order of
precedence: a record that is a duplicate and too short is an ``exact_duplicate``.
"""

import pyarrow as pa

PREFIX = "winnow_"

ID = "winnow_id"  # the generated id, when the input has no id field
DSIR_LOG_WEIGHT = "winnow_dsir_log_weight"
DSIR_TARGET_LOG_WEIGHTS = "winnow_dsir_target_log_weights"  # with separate targets: one weight per target
DSIR_TARGET = "winnow_dsir_target"  # with separate targets: the target (0-based, --target order) that selected it
ZIPFIT_ALIGNMENT = "winnow_zipfit_alignment"
CLUSTER = "winnow_cluster"
CLUSTER_DISTANCE = "winnow_cluster_distance"
DUPLICATE_OF = "winnow_duplicate_of"  # the kept (or indexed) record's id
DUPLICATE_SOURCE = "winnow_duplicate_source"  # the dedup index that matched; null within the run
DEDUP_CLUSTER = "winnow_dedup_cluster"  # the near-duplicate component
SELECTED = "winnow_selected"
DROP_REASON = "winnow_drop_reason"

COLUMN_TYPES = {
    ID: pa.string(),
    DSIR_LOG_WEIGHT: pa.float64(),
    DSIR_TARGET_LOG_WEIGHTS: pa.list_(pa.float64()),
    DSIR_TARGET: pa.int32(),
    ZIPFIT_ALIGNMENT: pa.float64(),
    CLUSTER: pa.int32(),
    CLUSTER_DISTANCE: pa.float32(),
    DUPLICATE_OF: pa.string(),
    DUPLICATE_SOURCE: pa.string(),
    DEDUP_CLUSTER: pa.int64(),
    SELECTED: pa.bool_(),
    DROP_REASON: pa.string(),
}

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
TOO_SHORT = "too_short"
SEMANTIC_DUPLICATE = "semantic_duplicate"
NOT_SELECTED = "not_selected"
DROP_REASONS = (EXACT_DUPLICATE, NEAR_DUPLICATE, TOO_SHORT, SEMANTIC_DUPLICATE, NOT_SELECTED)
DUPLICATE_REASONS = (EXACT_DUPLICATE, NEAR_DUPLICATE, SEMANTIC_DUPLICATE)


def reserved_names(names) -> list[str]:
    """The names that use winnow's reserved prefix."""
    return [name for name in names if name.startswith(PREFIX)]


def field(name: str) -> pa.Field:
    """The Arrow field of one of winnow's columns."""
    return pa.field(name, COLUMN_TYPES[name])
