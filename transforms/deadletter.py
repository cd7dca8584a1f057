"""Dead letters: the one record shape and reason vocabulary for input winnow cannot use.

A record that cannot be read or used never crashes a job and never disappears: it becomes a
dead letter, written to ``errors/*.jsonl``::

    {"source": file, "position": 1-based line (JSON Lines) or row (Parquet),
     "reason": one code of REASONS, "raw": the record as text, truncated, ["role": "target"]}

Reasons are codes, never exception class names. Each is also counted: ``invalid_<reason>``.
"""

INVALID_JSON = "invalid_json"  # the line is not JSON
NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object
INVALID_UTF8 = "invalid_utf8"  # bytes that are not UTF-8, or text with a lone surrogate
MISSING_TEXT = "missing_text"  # no text field, or null
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"  # only whitespace
INVALID_ID = "invalid_id"  # an id field that is absent, null, empty, or neither a string nor an integer
# Embeddings read from an input field (--embedding-field), see vectors.py
NO_EMBEDDING = "no_embedding"
NOT_NUMERIC = "not_numeric"
BAD_SHAPE = "bad_shape"
NON_FINITE = "non_finite"
ZERO_NORM = "zero_norm"
DIM_MISMATCH = "dim_mismatch"

READ_REASONS = (INVALID_JSON, NOT_AN_OBJECT, INVALID_UTF8, MISSING_TEXT, TEXT_NOT_STRING, EMPTY_TEXT, INVALID_ID)
EMBEDDING_REASONS = (NO_EMBEDDING, NOT_NUMERIC, BAD_SHAPE, NON_FINITE, ZERO_NORM, DIM_MISMATCH)
REASONS = READ_REASONS + EMBEDDING_REASONS

RAW_PREVIEW_CHARS = 1000
TARGET_ROLE = "target"


def raw_preview(raw) -> str:
    """``raw`` as text of at most ``RAW_PREVIEW_CHARS`` characters (bytes decoded leniently)."""
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw[: RAW_PREVIEW_CHARS * 4]).decode("utf-8", errors="replace")
    elif not isinstance(raw, str):
        raw = repr(raw)
    return raw[:RAW_PREVIEW_CHARS]


def dead_letter(source: str, position: int | None, reason: str, raw, role: str | None = None) -> dict:
    """The dead-letter record of one unusable input record (module docstring)."""
    letter = {"source": source, "position": position, "reason": reason, "raw": raw_preview(raw)}
    if role is not None:
        letter["role"] = role
    return letter
