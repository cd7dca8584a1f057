"""Tests for transforms/deadletter.py: the dead-letter record shape, its reason codes and the raw preview."""

import json
import re

import pytest

from winnow.transforms import deadletter, tally
from winnow.transforms.deadletter import RAW_PREVIEW_CHARS, dead_letter, raw_preview


def test_reasons_are_distinct_snake_case_codes_read_then_embedding():
    assert deadletter.REASONS == deadletter.READ_REASONS + deadletter.EMBEDDING_REASONS
    assert len(set(deadletter.REASONS)) == len(deadletter.REASONS) == 13
    assert all(re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", reason) for reason in deadletter.REASONS)
    assert deadletter.INVALID_UTF8 in deadletter.READ_REASONS and deadletter.DIM_MISMATCH in deadletter.EMBEDDING_REASONS
    # each is counted as the exit invalid_<reason>, all distinct
    assert len({tally.invalid_exit(r) for r in deadletter.REASONS}) == 13


def test_dead_letter_has_the_documented_shape():
    letter = dead_letter("raw/part-0.jsonl", 3, deadletter.INVALID_JSON, '{"id": "x", "text": "unterminated')
    assert letter == {"source": "raw/part-0.jsonl", "position": 3, "reason": "invalid_json", "raw": '{"id": "x", "text": "unterminated'}
    json.dumps(letter)  # written as one JSON line
    target = dead_letter("target.jsonl", None, deadletter.MISSING_TEXT, {"id": 1}, role=deadletter.TARGET_ROLE)
    assert target == {"source": "target.jsonl", "position": None, "reason": "missing_text", "raw": "{'id': 1}", "role": "target"}


def test_raw_preview_truncates_text_to_the_preview_length():
    assert raw_preview("short") == "short"
    long = "x" * (RAW_PREVIEW_CHARS + 5)
    assert raw_preview(long) == "x" * RAW_PREVIEW_CHARS
    assert raw_preview("é" * 2000) == "é" * RAW_PREVIEW_CHARS  # characters, not bytes


def test_raw_preview_decodes_bytes_leniently():
    assert raw_preview(b"caf\xe9 au lait") == "caf\ufffd au lait"
    assert raw_preview(bytearray(b"ok")) == "ok"
    # 4-byte characters: the first RAW_PREVIEW_CHARS * 4 bytes hold the whole preview
    emoji = "😀" * (RAW_PREVIEW_CHARS + 10)
    assert raw_preview(emoji.encode("utf-8")) == "😀" * RAW_PREVIEW_CHARS
    # a cut inside a character leaves a replacement character, still within the length
    cut = raw_preview(("a" + "😀" * RAW_PREVIEW_CHARS).encode("utf-8"))
    assert len(cut) == RAW_PREVIEW_CHARS and cut.startswith("a😀")


@pytest.mark.parametrize("raw, expected", [(12345, "12345"), (None, "None"), (["not", "an", "object"], "['not', 'an', 'object']")])
def test_raw_preview_reprs_other_values(raw, expected):
    assert raw_preview(raw) == expected
