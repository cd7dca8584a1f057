"""Text normalization and tokenization shared by every method (DSIR, MinHash, embeddings).

One module so that a pipeline tokenizes a document the same way everywhere, and can tokenize it
once. Pure stdlib; no Beam.

- ``wordpunct_tokens``: lower-cased runs of word characters or of punctuation, the pattern
  ``\\w+|[^\\w\\s]+`` of NLTK's ``WordPunctTokenizer`` (the DSIR reference's tokenizer), with
  Python's ``re``. NLTK 3.10 compiles it with the ``regex`` engine, whose ``\\w`` also matches
  combining marks, so on text with those (U+0301, Indic vowel signs) the two tokenizations differ.
- ``normalize_text``: Unicode NFKC, case folding and whitespace collapsing, the key of exact
  deduplication; each step can be switched off.
- ``word_shingles`` / ``char_shingles``: the sets MinHash estimates Jaccard similarity on.
"""

import re
import unicodedata

WORDPUNCT_PATTERN = re.compile(r"\w+|[^\w\s]+")


def wordpunct_tokens(text: str) -> list[str]:
    """Lower-cased word/punctuation runs, as ``WordPunctTokenizer().tokenize(text.lower())`` but for combining marks."""
    return WORDPUNCT_PATTERN.findall(text.lower())


def normalize_text(
    text: str, nfkc: bool = True, casefold: bool = True, collapse_whitespace: bool = True
) -> str:
    """The text exact deduplication compares: NFKC, case-folded, whitespace runs -> one space, stripped."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if casefold:
        text = text.casefold()
    if collapse_whitespace:  # str.split() splits on exactly the code points \s matches, ~5x faster
        text = " ".join(text.split())
    return text


def word_shingles(text: str, n: int) -> set[str]:
    """Set of word n-grams (space-joined) of the normalized text; one shingle for texts under n words."""
    words = normalize_text(text).split(" ")
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def char_shingles(text: str, n: int) -> set[str]:
    """Set of character n-grams of the normalized text; the whole text when shorter than n."""
    text = normalize_text(text)
    if len(text) <= n:
        return {text}
    return {text[i : i + n] for i in range(len(text) - n + 1)}
