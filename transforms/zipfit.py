"""ZIP-FIT: how close each document is to the target set, measured by compression.

Paper: Obbad et al., "ZIP-FIT: Embedding-Free Data Selection via
Compression-Based Alignment" (2024). Reference implementation: the ``zip-fit`` package
(``zip_fit/zipfit.py``, class ``ZIPFIT``). Output column: ``winnow_zipfit_alignment`` (float64, higher =
closer to the target).

Modes, for a document x and the target sample y_1..y_M (UTF-8 bytes):

``faithful``: the paper's normalized compression distance, computed exactly as the reference
does it (gzip at ``level``; the document first in the concatenation; the mean over targets)::

    C(s)              = len(gzip.compress(s, compresslevel=level))
    NCD(x, y)         = (C(x + y) - min(C(x), C(y))) / max(C(x), C(y))
    zipfit_alignment  = 1 - (1/M) * sum_j NCD(x, y_j)

This costs N * M compressions of about two documents each.

``zstd_dict`` (the default): linear in N, with two zstd compressions per document. Rewrite the
per-pair term as ``1 - NCD(x, y) = S(x, y) / max(C(x), C(y))``, where
``S(x, y) = C(x) + C(y) - C(x + y)`` is what x and y save by being compressed together. The mode
keeps the per-target denominator exactly. It replaces the per-pair saving with one saving
against a zstd dictionary D trained on the whole target sample::

    Z(s)              = zstd frame size of s at ``level`` (no checksum, content size or dict id)
    S(x)              = Z(x) - Z(x | D)
    zipfit_alignment  = S(x) * (1/M) * sum_j 1 / max(Z(x), Z(y_j))

A trained dictionary holds target strings and target entropy tables. So S(x) rewards both effects
that make up gzip's S(x, y): shared substrings, and shared symbol statistics (x and y share one
Huffman block in C(x + y)). It is an approximation of ``faithful``: its rank agreement with the
faithful scores (Spearman), and that of the alternatives tried (a zlib preset dictionary, a raw
untrained zstd dictionary, the trained dictionary without the per-target denominator, a gzip
stream primed with target text) are in ``benchmarks/RESULTS.md`` ("ZIP-FIT"); this mode agreed
best among the linear ones.

Deviations from the reference:

- Level. The reference's default ``compress_level=0`` stores the data uncompressed. Then
  ``NCD(x, y) = L / (L + 23)`` with ``L = max(len(x), len(y))``, a pure length ratio, which
  picks target-like documents at about chance. winnow's default gzip level is 9, the default of
  ``gzip.compress``; the precision of each level and its agreement with the fast mode are in
  ``benchmarks/RESULTS.md``.
- Target. The reference uses every target document. winnow uses a seeded sample of at most
  ``target_sample`` targets: those with the smallest ``seeded.sample_rank(id, seed)`` (ties by
  id), in that order. The sample is chosen by a fixed-size Top combine, so it is the same on any
  number of workers and in any input order.
- Tiny targets. zstd cannot train a dictionary on less than a few KB of target text. For such
  targets ``zstd_dict`` uses the target text itself as a raw-content dictionary (the stats report
  ``dictionary_type``).

Bounds: both scores are < 1 in practice and can be negative. ``faithful`` is negative when
C(x + y) > C(x) + C(y): one Huffman block fits two unlike texts worse than two blocks do. At level
0 it is ``23 / (L + 23)`` whatever the content. ``zstd_dict`` is < 1 by construction, since
Z(x | D) > 0. It is negative when the dictionary's entropy tables make x larger, as happens for
upper-cased code and escape tables. The ranges both modes span on the demo corpus are in
``benchmarks/RESULTS.md``, section "ZIP-FIT".
"""

import zlib
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import zstandard

from winnow.transforms import schema, seeded
from winnow.transforms.validation import check_choice, check_int, is_int

__all__ = [
    "ZipfitConfig",
    "TargetModel",
    "AlignmentScorer",
    "ScoreZipfit",
    "gzip_size",
    "normalized_compression_distance",
    "faithful_alignment",
    "mean_inverse_max",
    "dictionary_alignment",
    "train_target_dictionary",
    "fit_target_model",
    "FitZipfit",
]

NAMESPACE = "winnow.zipfit"
FAITHFUL, ZSTD_DICT = "faithful", "zstd_dict"
MODES = (FAITHFUL, ZSTD_DICT)
DEFAULT_LEVELS = {FAITHFUL: 9, ZSTD_DICT: 3}  # gzip 9 and zstd 3: see the module docstring
LEVEL_RANGES = {FAITHFUL: (0, 9), ZSTD_DICT: (1, 22)}  # gzip / zstd levels, inclusive
GZIP_FRAME_BYTES = 18  # gzip header (10) + CRC-32 and length trailer (8) around raw deflate
# Dictionary size = target bytes / 4, clamped to [1 KiB, 16 KiB]: picked on the demo corpus by rank
# agreement with ``faithful`` over 4-32 KiB and 1/16-1/4 of the target text (a one-off comparison that
# benchmarks/bench_zipfit.py does not rerun).
DICT_MIN_BYTES, DICT_MAX_BYTES, DICT_TEXT_RATIO = 1024, 16384, 4
# Targets are cut into 512-byte training samples: zstd needs many samples to train on
# (whole documents fail below ~8 of them), and 512-byte cuts rank as well as whole documents.
DICT_SAMPLE_BYTES = 512
TRAINED, RAW_CONTENT = "trained", "raw_content"
MAX_BATCH = 512


@dataclass(frozen=True)
class ZipfitConfig:
    """ZIP-FIT settings; validated on construction.

    Attributes:
        mode: ``"zstd_dict"`` (default; linear in the number of documents) or ``"faithful"`` (the
            paper's gzip NCD, O(documents * targets) compressions).
        level: compression level of the mode's compressor: gzip 0-9 in ``faithful`` mode, zstd
            1-22 in ``zstd_dict`` mode. ``None`` (default) picks gzip 9 or zstd 3.
        target_sample: at most this many target documents are used (default 256). They are the
            ones with the smallest ``seeded.sample_rank(id, seed)``.
        seed: seeds the target sample; every worker derives the same sample from it.
    """

    mode: str = ZSTD_DICT
    level: int | None = None
    target_sample: int = 256
    seed: int = 0

    def __post_init__(self):
        check_choice("mode", self.mode, MODES)
        low, high = LEVEL_RANGES[self.mode]
        if self.level is not None and not (is_int(self.level) and low <= self.level <= high):
            raise ValueError(
                f"level={self.level!r}; expected an int in [{low}, {high}] for mode {self.mode!r}, "
                f"or None for {DEFAULT_LEVELS[self.mode]}"
            )
        check_int("target_sample", self.target_sample, 1)
        check_int("seed", self.seed, 0)

    @property
    def compress_level(self) -> int:
        """The level actually used: ``level``, or the mode's default when it is None."""
        return DEFAULT_LEVELS[self.mode] if self.level is None else self.level


def gzip_size(data: bytes, level: int) -> int:
    """C(data) = ``len(gzip.compress(data, compresslevel=level))``, without building the frame.

    ``gzip.compress`` writes a 10-byte header, then ``zlib.compress(data, level, wbits=-15)``, then
    an 8-byte trailer. So its length is the raw deflate length plus 18.
    """
    return len(zlib.compress(data, level, -15)) + GZIP_FRAME_BYTES


def normalized_compression_distance(cx, cy, cxy) -> np.ndarray:
    """NCD = (C(xy) - min(C(x), C(y))) / max(C(x), C(y)), float64; the arguments broadcast.

    Example: ``normalized_compression_distance(10, 20, 25)`` is (25 - 10) / 20 = 0.75.
    """
    cx, cy, cxy = (np.asarray(a, np.float64) for a in (cx, cy, cxy))
    return (cxy - np.minimum(cx, cy)) / np.maximum(cx, cy)


def faithful_alignment(
    texts: list[bytes], targets: list[bytes], target_sizes: np.ndarray, level: int
) -> np.ndarray:
    """(n,) float64: ``1 - (1/M) sum_j NCD(x_i, y_j)``, with C = ``gzip_size(., level)``.

    Args:
        texts: n documents x_i (UTF-8).
        targets: M >= 1 targets y_j (UTF-8); C(x_i + y_j) puts the document first, as the
            reference does.
        target_sizes: (M,) C(y_j).
        level: gzip level 0-9. Expects validated input.
    """
    cx = np.array([gzip_size(x, level) for x in texts], np.float64)
    cxy = np.array(
        [[gzip_size(x + y, level) for y in targets] for x in texts], np.float64
    ).reshape(len(texts), len(targets))
    ncd = normalized_compression_distance(cx[:, None], np.asarray(target_sizes)[None, :], cxy)
    return 1.0 - ncd.mean(axis=1)


def mean_inverse_max(sizes: np.ndarray, sorted_target_sizes: np.ndarray) -> np.ndarray:
    """(n,) float64: ``(1/M) sum_j 1 / max(z_i, t_j)`` in O((n + M) log M).

    A target with t_j <= z_i contributes 1/z_i and the others 1/t_j. So, with
    ``k_i = #{t_j <= z_i}``, the sum is ``k_i / z_i + sum_{j >= k_i} 1/t_j`` over the sorted
    targets: one searchsorted and a suffix sum, no (n, M) matrix when the sample is large.

    Args:
        sizes: (n,) positive document sizes z_i.
        sorted_target_sizes: (M,) positive target sizes t_j, ascending, M >= 1.
    """
    sizes = np.asarray(sizes, np.float64)
    targets = np.asarray(sorted_target_sizes, np.float64)
    inverse_suffix = np.append(np.cumsum((1.0 / targets)[::-1])[::-1], 0.0)  # (M + 1,)
    below = np.searchsorted(targets, sizes, side="right")
    return (below / sizes + inverse_suffix[below]) / len(targets)


def dictionary_alignment(
    sizes: np.ndarray, primed_sizes: np.ndarray, sorted_target_sizes: np.ndarray
) -> np.ndarray:
    """(n,) float64: ``(Z(x) - Z(x | D)) * (1/M) sum_j 1 / max(Z(x), Z(y_j))``.

    Args:
        sizes: (n,) Z(x_i), zstd size without dictionary.
        primed_sizes: (n,) Z(x_i | D), zstd size with the target dictionary.
        sorted_target_sizes: (M,) Z(y_j), ascending.
    """
    savings = np.asarray(sizes, np.float64) - np.asarray(primed_sizes, np.float64)
    return savings * mean_inverse_max(sizes, sorted_target_sizes)


def _zstd_compressor(level: int, dictionary: zstandard.ZstdCompressionDict | None = None):
    # Frame extras off: the sizes then count the compressed content, not bookkeeping bytes.
    return zstandard.ZstdCompressor(
        level=level, dict_data=dictionary, write_checksum=False, write_content_size=False,
        write_dict_id=False,
    )


def train_target_dictionary(targets: list[bytes], level: int) -> tuple[bytes, str]:
    """(dictionary bytes, ``"trained"`` | ``"raw_content"``): the zstd dictionary D of the targets.

    The size is ``clamp(sum(len(y)) // 4, 1024, 16384)`` bytes. D is trained with
    ``zstandard.train_dictionary``, which is deterministic, on 512-byte cuts of the targets.
    When there is too little text to train on, D is the concatenated targets used as raw
    content (the last 16 KiB of them).
    """
    total = sum(len(y) for y in targets)
    size = min(DICT_MAX_BYTES, max(DICT_MIN_BYTES, total // DICT_TEXT_RATIO))
    samples = [
        y[i : i + DICT_SAMPLE_BYTES] for y in targets for i in range(0, len(y), DICT_SAMPLE_BYTES)
    ]
    try:
        return zstandard.train_dictionary(size, samples, level=level).as_bytes(), TRAINED
    except zstandard.ZstdError:
        return b"".join(targets)[-DICT_MAX_BYTES:], RAW_CONTENT


@dataclass(frozen=True)
class TargetModel:
    """Everything a worker needs to score against the target sample; built once per pipeline.

    Attributes:
        mode, level: as in ``ZipfitConfig`` (level resolved).
        target_sizes: (M,) compressed target sizes: gzip C(y_j) in ``faithful`` mode, zstd Z(y_j)
            in ``zstd_dict`` mode.
        target_bytes: total UTF-8 bytes of the M targets.
        targets: the M target texts (``faithful`` only; empty otherwise).
        dictionary, dictionary_type: the zstd dictionary D and ``"trained"``/``"raw_content"``
            (``zstd_dict`` only).
    """

    mode: str
    level: int
    target_sizes: tuple[int, ...]
    target_bytes: int
    targets: tuple[bytes, ...] = ()
    dictionary: bytes = b""
    dictionary_type: str | None = None

    def stats(self) -> dict:
        """The JSON-serializable summary that goes into ``report.json``."""
        return {
            "mode": self.mode,
            "level": self.level,
            "target_docs": len(self.target_sizes),
            "target_bytes": self.target_bytes,
            "dictionary_type": self.dictionary_type,
            "dictionary_bytes": len(self.dictionary),
        }


def fit_target_model(targets: list[bytes], mode: str, level: int) -> TargetModel:
    """The ``TargetModel`` of M >= 1 target texts (UTF-8). Expects a validated mode and level.

    Raises:
        ValueError: if ``targets`` is empty; ZIP-FIT needs at least one target document.
    """
    if not targets:
        raise ValueError("the ZIP-FIT target set is empty; expected at least one target document")
    target_bytes = sum(len(y) for y in targets)
    if mode == FAITHFUL:
        sizes = tuple(gzip_size(y, level) for y in targets)
        return TargetModel(mode, level, sizes, target_bytes, targets=tuple(targets))
    dictionary, dictionary_type = train_target_dictionary(targets, level)
    plain = _zstd_compressor(level)
    sizes = tuple(len(plain.compress(y)) for y in targets)
    return TargetModel(
        mode, level, sizes, target_bytes, dictionary=dictionary, dictionary_type=dictionary_type
    )


class AlignmentScorer:
    """Scores batches of documents against one ``TargetModel``; holds the reusable compressor state.

    The state is built once here: gzip target sizes, or the zstd dictionary with its match tables
    precomputed at ``level``. Nothing is re-primed per document.
    """

    def __init__(self, model: TargetModel):
        self.model = model
        self._target_sizes = np.asarray(model.target_sizes, np.float64)
        if model.mode == ZSTD_DICT:
            trained = model.dictionary_type == TRAINED
            dict_type = zstandard.DICT_TYPE_FULLDICT if trained else zstandard.DICT_TYPE_RAWCONTENT
            dictionary = zstandard.ZstdCompressionDict(model.dictionary, dict_type=dict_type)
            dictionary.precompute_compress(level=model.level)
            self._plain = _zstd_compressor(model.level)
            self._primed = _zstd_compressor(model.level, dictionary)
            self._target_sizes = np.sort(self._target_sizes)

    def score(self, texts: list[bytes]) -> np.ndarray:
        """(len(texts),) float64 ``zipfit_alignment`` of UTF-8 documents; batch-independent."""
        model = self.model
        if model.mode == FAITHFUL:
            return faithful_alignment(texts, list(model.targets), self._target_sizes, model.level)
        sizes = np.array([len(self._plain.compress(x)) for x in texts], np.float64)
        primed = np.array([len(self._primed.compress(x)) for x in texts], np.float64)
        return dictionary_alignment(sizes, primed, self._target_sizes)


# --- Beam wrappers -----------------------------------------------------------------------------


def target_entries(ids: list, texts: list[str], seed: int) -> list[tuple[int, str, bytes]]:
    """``(rank, str(id), UTF-8 text)`` of target records: the entries ``FitZipfit`` samples the smallest of."""
    ranks = seeded.sample_rank(ids, seed).tolist()
    return [(rank, str(doc_id), text.encode("utf-8")) for rank, doc_id, text in zip(ranks, ids, texts)]


def fit_on_sample(sample: list[tuple[int, str, bytes]], config: ZipfitConfig) -> TargetModel:
    """The ``TargetModel`` of a sample of ``target_entries``, taken in (rank, id) order (a fixed float sum order)."""
    return fit_target_model([text for _, _, text in sorted(sample)], config.mode, config.compress_level)


def _table_entries(table: pa.Table, text_field: str, id_field: str, seed: int):
    return target_entries(table.column(id_field).to_pylist(), table.column(text_field).to_pylist(), seed)


class FitZipfit(beam.PTransform):
    """Target record batches (Arrow tables) -> a singleton ``TargetModel`` on a seeded sample of the target.

    The sample is the ``config.target_sample`` targets with the smallest ``seeded.sample_rank``,
    chosen by a fixed-size Top combine: no worker holds more, and the result does not depend on
    input order or bundling.
    """

    def __init__(self, config: ZipfitConfig = ZipfitConfig(), text_field: str = "text", id_field: str = "id"):
        super().__init__()
        self._config, self._text_field, self._id_field = config, text_field, id_field

    def expand(self, tables):
        return (
            tables
            | "TargetEntries" >> beam.FlatMap(_table_entries, self._text_field, self._id_field, self._config.seed)
            | "SampleTargets" >> beam.combiners.Top.Smallest(self._config.target_sample)
            | "FitTargetModel" >> beam.Map(fit_on_sample, self._config)
        )


class _ScoreTablesFn(beam.DoFn):
    """Record batch -> the batch with ``winnow_zipfit_alignment`` appended."""

    def __init__(self, text_field: str):
        self._text_field = text_field
        self._scorer = None

    def process(self, table: pa.Table, model: TargetModel):
        if self._scorer is None:  # side inputs are not available in setup(): the first batch builds it
            self._scorer = AlignmentScorer(model)
        texts = [text.encode("utf-8") for text in table.column(self._text_field).to_pylist()]
        yield table.append_column(schema.field(schema.ZIPFIT_ALIGNMENT), pa.array(self._scorer.score(texts)))


class ScoreZipfit(beam.PTransform):
    """Record batches (Arrow tables) -> the same batches with ``winnow_zipfit_alignment`` appended.

    Example: ``scored = raw | ScoreZipfit(target | FitZipfit())``.
    """

    def __init__(self, model: beam.PCollection, text_field: str = "text"):
        super().__init__()
        self._model, self._text_field = model, text_field

    def expand(self, tables):
        return tables | "Score" >> beam.ParDo(_ScoreTablesFn(self._text_field), beam.pvalue.AsSingleton(self._model))
