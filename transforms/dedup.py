"""Exact and near-duplicate decisions on compact per-document rows: hashes and MinHash signatures.

Documents are named by a ``docref``, ``unit << 32 | ordinal`` (their work unit and their place in
it), and ordered by ``(source, id)``: the documents of a dedup index (``--against``) first, in
index order, then the run's own, each by its id. "Smallest" below means first in that order, so a
duplicate of an indexed document always names the indexed one. Indexed documents are never linked
to one another (buckets of indexed documents only are dropped, and so are links between two), so
the caller may pass only the indexed rows that share a key with the run's (``key_filter_*``).

Exact (``DedupExact``): the key is ``blake2b-128(normalize_text(text))`` (NFKC, case folding,
whitespace collapsing; each switchable in ``ExactDedupConfig``). Rows are spread over shards by
key; per key the smallest document is kept and every other one is dropped ``exact_duplicate``
with ``duplicate_of`` = the kept id.

Near (``DedupNear``), four stages as in datatrove's MinHash dedup:

1. buckets: each eligible document's ``bands`` LSH keys (``minhash.band_keys``, computed by the
   caller), spread over shards by key; the documents of a bucket shared by two or more get their
   ids (grouped by unit, from a ``SignatureSource``), and are linked by star edges to the
   bucket's smallest document (a bucket of k documents gives k - 1 links, not k(k-1)/2), as in a
   run without shards;
2. verification: a link is kept only if the estimated Jaccard of the two signatures
   (``minhash.estimate_jaccard``) is ``>= threshold``. The signatures are not shuffled: links are
   grouped by the unit of one end, whose signatures a ``SignatureSource`` reads, then by the unit
   of the other end;
3. connected components of the verified links, computed by Beam stages only (below);
4. decisions: the smallest member of a component is its representative and is kept; every
   other member is dropped ``near_duplicate`` with ``duplicate_of`` = the representative, and
   every member gets ``dedup_cluster``, a 64-bit id of its component. A chain A~B, B~C with
   A !~ C is one component: A kept, B and C dropped.

Mega-cluster guard (``split_component``). Components can chain distinct documents into one huge
cluster when many share a template (boilerplate pages, generated data): every link is verified,
yet A~B~C~... drifts. A component of more than ``max_cluster_size`` members is split: the
smallest unassigned member becomes a representative, every unassigned member whose Jaccard with
it is ``>= threshold`` joins it, and so on until every member is assigned; so every dropped
member of a split component is itself similar to the record it names. The Jaccard is the exact
one of the two documents' shingle sets (``GuardSimilarity``, the sets of ``minhash.shingle_sets``)
where both are the run's documents, and the signatures' estimate where one is a dedup index's
(indexed documents are never re-read). The estimate alone cannot do it: at J = 0.75 its standard
deviation over 128 permutations is 0.04, so among thousands of template pairs many estimate >= 0.8.
The text stays where it is: the run members' ordinals are grouped by unit, a ``TextSource`` reads
only those rows of the unit, and only their shingle sets (sorted uint32 hashes) are grouped by
component. The cost is bounded by the affected components, never by the corpus: the rows read are
their members, and each representative costs a lookup of its shingles in the component's sorted
shingles plus one step per member holding each of them (``GuardSimilarity``: about m x 300 for the
m members of one template sharing 300 shingles). The representatives are capped at
``MAX_SPLIT_GROUPS``: members left after that many stay alone (kept: less deduplication, never more). The stats report every split
component: its size before, its largest group after, and a sample of its members.

Connected components (Kiveris, Lattanzi, Mirrokni, Rastogi & Vassilvitskii 2014, "Connected
Components in MapReduce and Beyond"). Edges are pairs ``(u, v)`` with ``u > v``; ``G(u)`` is the
neighbour set of ``u`` and ``m(u) = min(G(u) | {u})``. One round is

- large-star: every node ``u`` links each neighbour ``v > u`` to ``m(u)``;
- small-star: every node ``u`` links itself and each neighbour ``v < u`` to
  ``m = min({v in G(u): v < u} | {u})``.

Both keep each component connected and inside its component, and every link points from a
larger to a smaller node. A node is *unstable* when large-star would change its edges (it has a
smaller and a larger neighbour) or small-star would (two or more smaller neighbours). If no node
is unstable in either operation of a round, the graph is a fixpoint, and then it is one star per
component whose centre is the component's smallest node. Beam has no loops, so ``cc_rounds``
rounds (default 12) are unrolled; the stats report the unstable nodes per round and
``converged`` (last round stable). Kiveris et al. show O(log^2 n) rounds for n nodes; the slowest
shape, a path in sorted order, needs about log2(n) working rounds, so 12 rounds settle any
component up to a ~3,000-document chain, and LSH star links give shallow graphs. If the rounds
run out the result is still safe: a node's component is then its smallest remaining neighbour's,
so some components stay split (under-deduplication, never over-), and ``converged`` is false.

Scale: no stage gathers all documents, signatures or edges. Every shuffle carries compact arrays
(hashes, band keys, docrefs) grouped by shard or by unit, and the graph stages carry only linked
documents. Stats are fixed-size combines (counts, histogram, top-k).
"""

import dataclasses
import hashlib
import heapq
from collections import Counter

import apache_beam as beam
import numpy as np

from winnow.transforms import seeded
from winnow.transforms.minhash import MinHashConfig, estimate_jaccard, shingle_sets
from winnow.transforms.text import normalize_text, splitmix64
from winnow.transforms.validation import check_bool

NAMESPACE = "winnow.dedup"
TOP_GROUPS = 10  # largest groups/clusters listed in the stats
GROUP_SAMPLE = 10  # member ids listed per group
UNIT_BITS = 32
ORDINAL_MASK = (1 << UNIT_BITS) - 1
INDEX_UNIT_BASE = 1 << 24  # units of dedup index shards: INDEX_UNIT_BASE + shard number
ROWS_PER_SHARD = 200_000  # documents per dedup shard (a shard's rows are sorted in one worker)
MAX_SPLIT_GROUPS = 1_000  # representatives the guard makes in one component at most
FILTER_BITS_PER_KEY = 16  # key filter of the run's keys, which index rows must hit to take part
SHARED_BITS_PER_KEY = 8  # shared-key filter of the band keys: a key seen once passes with probability ~1/8
FILTER_CHUNK = 1 << 16  # keys per step of key_filter_contains
_UNSTABLE, _SUMMARIES, _NODES, _SPLITS = "unstable", "summaries", "nodes", "splits"
_GUARDED, _TEXT_ROWS = "guarded", "text_rows"


@dataclasses.dataclass(frozen=True)
class ExactDedupConfig:
    """Which normalizations the exact key applies (``text.normalize_text``); all on by default."""

    nfkc: bool = True
    casefold: bool = True
    collapse_whitespace: bool = True

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check_bool(field.name, getattr(self, field.name))


# --- core ------------------------------------------------------------------------------------


def docrefs(unit: int, ordinals: np.ndarray) -> np.ndarray:
    """(n,) int64 ``unit << 32 | ordinal``."""
    return (np.int64(unit) << np.int64(UNIT_BITS)) | np.asarray(ordinals, dtype=np.int64)


def unit_of(refs: np.ndarray) -> np.ndarray:
    """(n,) int64 unit of each docref."""
    return np.asarray(refs, dtype=np.int64) >> np.int64(UNIT_BITS)


def ordinal_of(refs: np.ndarray) -> np.ndarray:
    """(n,) int64 ordinal of each docref within its unit."""
    return np.asarray(refs, dtype=np.int64) & np.int64(ORDINAL_MASK)


def concat_parts(parts) -> list[np.ndarray]:
    """A group's parts joined column by column: ``[(a1, b1), (a2, b2)] -> [a1 + a2, b1 + b2]`` (numpy arrays)."""
    return [np.concatenate(column) for column in zip(*parts)]


def unit_masks(refs: np.ndarray):
    """``(unit, mask)`` for each unit among ``refs`` (docrefs), in unit order: the rows of ``refs`` in that unit."""
    units = unit_of(refs)
    for unit in np.unique(units).tolist():
        yield unit, units == unit


def source_of(unit: int, run_source: int) -> int:
    """The source rank of a unit: index shard ``INDEX_UNIT_BASE + k`` of index k ranks by its index, the run last."""
    return run_source if unit < INDEX_UNIT_BASE else index_of_unit(unit)


def sources_of(refs: np.ndarray, run_source: int) -> np.ndarray:
    """(n,) int64 ``source_of`` the unit of each docref."""
    units = unit_of(refs)
    return np.where(units < INDEX_UNIT_BASE, run_source, (units - INDEX_UNIT_BASE) >> 16)


def index_of_unit(unit: int) -> int:
    """The dedup index (0-based, ``--against`` order) of an index unit: set by ``IndexUnits``."""
    return (unit - INDEX_UNIT_BASE) >> 16


def index_unit(index: int, shard: int) -> int:
    """The unit number of shard ``shard`` of dedup index ``index``."""
    return INDEX_UNIT_BASE + (index << 16) + shard


def normalized_texts(texts: list[str], config: ExactDedupConfig) -> list[str]:
    """The texts as the exact key compares them (``text.normalize_text`` with the config's steps)."""
    return [normalize_text(t, config.nfkc, config.casefold, config.collapse_whitespace) for t in texts]


def exact_hashes(normalized: list[str]) -> np.ndarray:
    """(n, 2) uint64 ``blake2b-128`` of normalized texts (``normalized_texts``): equal rows = equal normalized texts."""
    digests = b"".join(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in normalized)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)


def shard_of(keys: np.ndarray, shards: int) -> np.ndarray:
    """(n,) int64 shard of each uint64 key: ``(key >> 32) · shards >> 32``."""
    return ((np.asarray(keys, np.uint64) >> np.uint64(32)) * np.uint64(shards) >> np.uint64(32)).astype(np.int64)


def shard_count(documents: int) -> int:
    """Shards for a dedup step over ``documents`` rows: one per ``ROWS_PER_SHARD``, at least 1."""
    return max(1, -(-documents // ROWS_PER_SHARD))


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal rows in a sorted (n,) or (n, w) key array; (g,) int64."""
    keys = np.asarray(sorted_keys)
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    change = keys[1:] != keys[:-1]
    if change.ndim == 2:
        change = change.any(axis=1)
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)


def key_groups(keys: np.ndarray):
    """``(key, rows)`` for each distinct value of the (n,) int ``keys``, ascending: the positions holding it,
    ascending. One stable sort, so splitting n rows costs O(n log n) however many keys (shards) there are."""
    order = np.argsort(keys, kind="stable")
    for rows in np.split(order, group_starts(keys[order])[1:]) if len(order) else []:
        yield int(keys[rows[0]]), rows


def bucket_members(keys: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (key, docref) rows of the LSH buckets shared by two or more documents, each row once.

    Args:
        keys: (n,) uint64 bucket keys; refs: (n,) int64 docrefs (one row per (document, band)).
    """
    order = np.argsort(keys, kind="stable")  # one key sort first: most buckets have one member
    keys, refs = _shared_rows(np.asarray(keys, np.uint64)[order], np.asarray(refs, np.int64)[order])
    order = np.lexsort((refs, keys))
    keys, refs = keys[order], refs[order]
    distinct = np.ones(len(keys), bool)
    distinct[1:] = (keys[1:] != keys[:-1]) | (refs[1:] != refs[:-1])
    return _shared_rows(keys[distinct], refs[distinct])


def _shared_rows(keys: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of (key-sorted) ``keys, refs`` whose key occurs at least twice."""
    starts = group_starts(keys)
    sizes = np.diff(np.append(starts, len(keys)))
    shared = np.repeat(sizes > 1, sizes)
    return keys[shared], refs[shared]


def buckets_with_run_member(keys: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the buckets (key-sorted ``bucket_members`` rows) holding one of the run's documents at least:
    indexed documents are never linked to one another, so a bucket of indexed documents only gives no link."""
    if not len(keys):
        return keys, refs
    starts = group_starts(keys)
    with_run = np.maximum.reduceat(unit_of(refs) < INDEX_UNIT_BASE, starts)
    keep = np.repeat(with_run, np.diff(np.append(starts, len(keys))))
    return keys[keep], refs[keep]


def source_id_order(sources: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The positions of documents sorted by ``(source, id)`` (ids compare within a source: an index keeps its input's id type)."""
    ranked = []
    for source in np.unique(sources).tolist():
        members = np.flatnonzero(sources == source)
        ranked.append(members[np.argsort(ids[members], kind="stable")])
    return np.concatenate(ranked) if ranked else np.zeros(0, np.int64)


def star_links(keys: np.ndarray, order: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star links of buckets: each member linked to its bucket's first member in ``order``.

    Args:
        keys: (n,) uint64 bucket keys of bucket members (``bucket_members``).
        order: (n,) int64 rank of each member in (source, id) order (smaller first).
        refs: (n,) int64 docrefs.

    Returns:
        ((m,) larger, (m,) smaller) docrefs of the links, each pair once, oriented by docref.
    """
    rows = np.lexsort((order, keys))
    keys, refs = keys[rows], refs[rows]
    starts = group_starts(keys)
    centre = np.repeat(refs[starts], np.diff(np.append(starts, len(keys))))
    linked = refs != centre
    pairs = np.stack([np.maximum(refs[linked], centre[linked]), np.minimum(refs[linked], centre[linked])], axis=1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)
    return pairs[:, 0], pairs[:, 1]


def _unique_pairs(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (first, second) pairs, sorted by first then second."""
    if not len(first):
        return first.astype(np.int64), second.astype(np.int64)
    pairs = np.unique(np.stack([first, second], axis=1).astype(np.int64), axis=0)
    return pairs[:, 0], pairs[:, 1]


def _smallest_per_node(nodes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pairs sorted by node: (starts, sizes, min value per node)."""
    starts = group_starts(nodes)
    sizes = np.diff(np.append(starts, len(nodes)))
    return starts, sizes, np.minimum.reduceat(values, starts) if len(nodes) else values[:0]


def large_star(nodes: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Large-star on a node shard: links ``(v, m(u))`` for every neighbour ``v > u`` of each node u.

    Args:
        nodes, neighbours: (n,) int64 directed pairs (u, v); every neighbour of a node in the shard is present.

    Returns:
        ((m,) larger, (m,) smaller) links, and the number of unstable nodes (a smaller and a larger neighbour).
    """
    nodes, neighbours = _unique_pairs(nodes, neighbours)
    starts, sizes, smallest = _smallest_per_node(nodes, neighbours)
    centre = np.minimum(smallest, nodes[starts]) if len(nodes) else smallest
    centre_of = np.repeat(centre, sizes)
    larger = neighbours > nodes
    has_larger = np.logical_or.reduceat(larger, starts) if len(nodes) else larger[:0]
    unstable = int((has_larger & (centre < nodes[starts])).sum()) if len(nodes) else 0
    return neighbours[larger], centre_of[larger], unstable


def small_star(larger: np.ndarray, smaller: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Small-star on a node shard: each node u and its neighbours ``v < u`` linked to the smallest of them.

    Args:
        larger, smaller: (n,) int64 links (u, v) with v < u, grouped by u (every link of a node present).

    Returns:
        ((m,) larger, (m,) smaller) links, and the number of unstable nodes (two or more smaller neighbours).
    """
    larger, smaller = _unique_pairs(larger, smaller)
    starts, sizes, centre = _smallest_per_node(larger, smaller)
    centre_of = np.repeat(centre, sizes)
    members = np.concatenate([smaller, larger[starts]]) if len(larger) else smaller
    centres = np.concatenate([centre_of, centre]) if len(larger) else centre_of
    linked = members != centres
    return members[linked], centres[linked], int((sizes > 1).sum())


def split_component(similarity, size: int, threshold: float, max_groups: int = MAX_SPLIT_GROUPS) -> np.ndarray:
    """The guard's groups of one component: (size,) int64, the member index of each member's representative.

    Members come in (source, id) order. The first unassigned member is a representative; every
    unassigned member with ``similarity(member, representative) >= threshold`` joins it.
    After ``max_groups`` representatives, every member still unassigned is its own.

    Args:
        similarity: ``similarity(rows, first)`` -> (len(rows),) float64 similarity of the members
            ``rows`` ((n,) int64, ``first`` among them) to member ``first`` (``GuardSimilarity``).
        size: the number of members.
    """
    rep = np.arange(size, dtype=np.int64)
    open_rows = rep
    for _ in range(max_groups):
        if not len(open_rows):
            break
        first = open_rows[0]
        close = similarity(open_rows, first) >= threshold
        close[0] = True
        rep[open_rows[close]] = first
        open_rows = open_rows[~close]
    return rep


def segment_positions(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(sum(sizes),) int64 positions of the segments ``[starts[i], starts[i] + sizes[i])`` of a flat array, in order."""
    offsets = np.cumsum(sizes) - sizes
    return np.repeat(starts - offsets, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)


class GuardSimilarity:
    """The guard's similarity of a component's members: the exact Jaccard ``|S_r & S_f| / |S_r | S_f|`` of
    their shingle sets where both members have one (the run's documents, whose text is read), else the
    signatures' estimate (``minhash.estimate_jaccard``: a dedup index's documents, never re-read).

    The sets' hashes are sorted once with their owners (an inverted index), so ``|S_r & S_f|`` for every
    member r at once is two ``searchsorted`` of ``S_f`` and a ``bincount`` of the owners of its hashes:
    O(|S_f| · log S + matches), where matches count the members holding each hash of ``S_f``.

    Args:
        signatures: (m, P) uint32 signatures of the members.
        hashes, starts, sizes: the members' shingle sets (``minhash.shingle_sets``) stored flat: member
            i's is the sorted unique ``hashes[starts[i] : starts[i] + sizes[i]]``, ``sizes[i] == 0``
            for a member without text.
    """

    def __init__(self, signatures: np.ndarray, hashes: np.ndarray, starts: np.ndarray, sizes: np.ndarray):
        self._signatures, self._sizes = signatures, np.asarray(sizes, np.int64)
        self._hashes = hashes[segment_positions(np.asarray(starts, np.int64), self._sizes)]  # member by member
        self._starts = np.cumsum(self._sizes) - self._sizes
        order = np.argsort(self._hashes, kind="stable")
        self._keys, self._owners = self._hashes[order], np.repeat(np.arange(len(self._sizes)), self._sizes)[order]

    @classmethod
    def of_sets(cls, signatures: np.ndarray, sets: list) -> "GuardSimilarity":
        """From one sorted unique uint32 array (or None: no text) per member."""
        sizes = np.array([0 if one is None else len(one) for one in sets], np.int64)
        hashes = np.concatenate([one for one in sets if one is not None] + [np.zeros(0, np.uint32)]).astype(np.uint32)
        return cls(signatures, hashes, np.cumsum(sizes) - sizes, sizes)

    @property
    def with_text(self) -> int:
        """Members compared on their text."""
        return int((self._sizes > 0).sum())

    def __call__(self, rows: np.ndarray, first: int) -> np.ndarray:
        """(len(rows),) float64 similarity of members ``rows`` to member ``first``."""
        exact = (self._sizes[rows] > 0) & (self._sizes[first] > 0)
        values = np.empty(len(rows), np.float64)
        values[~exact] = estimate_jaccard(self._signatures[rows[~exact]], self._signatures[first])
        if exact.any():
            target = self._hashes[self._starts[first] : self._starts[first] + self._sizes[first]]
            low, high = np.searchsorted(self._keys, target, "left"), np.searchsorted(self._keys, target, "right")
            common = np.bincount(self._owners[segment_positions(low, high - low)], minlength=len(self._sizes))[rows[exact]]
            values[exact] = common / (self._sizes[rows[exact]] + self._sizes[first] - common)
        return values


def key_filter_bits(keys: int, per_key: int = FILTER_BITS_PER_KEY) -> int:
    """Bits of a key filter for about ``keys`` keys: ``per_key`` per key, a power of two in [2^20, 2^30]."""
    return 1 << int(np.clip(np.ceil(np.log2(max(keys, 1) * per_key)), 20, 30))


def _probes(keys: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The filter's two bit positions of each uint64 key: its low and its high 32 bits, modulo ``bits``."""
    keys = np.asarray(keys, np.uint64)
    mask = np.uint64(bits - 1)
    return keys & mask, (keys >> np.uint64(32)) & mask


def _bits_at(words: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(n,) bool: the bits at uint64 ``positions`` of the bit array held in uint64 ``words``."""
    return ((words[positions >> np.uint64(6)] >> (positions & np.uint64(63))) & np.uint64(1)).astype(bool)


def key_filter_add(words: np.ndarray, keys: np.ndarray) -> None:
    """Add uint64 ``keys`` to a key filter (a Bloom filter of two probes over ``64 · len(words)`` bits), in place."""
    for position in _probes(keys, 64 * len(words)):
        np.bitwise_or.at(words, position >> np.uint64(6), np.uint64(1) << (position & np.uint64(63)))


def key_filter_contains(words: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(n,) bool: True for every key added (never a false negative), and for about ``(1 - e^(-2/b))^2`` of the others
    (b bits per added key: 1.4% at 16)."""
    hit = np.ones(len(keys), bool)
    for start in range(0, len(keys), FILTER_CHUNK):  # chunks: the temporaries stay small and reused
        chunk = hit[start:start + FILTER_CHUNK]
        for position in _probes(keys[start:start + FILTER_CHUNK], 64 * len(words)):
            chunk &= _bits_at(words, position)
    return hit


class KeyFilterCombineFn(beam.CombineFn):
    """uint64 key arrays -> the key filter of all their keys: ``(bits / 64,)`` uint64 words."""

    def __init__(self, bits: int):
        self._bits = bits

    def create_accumulator(self):
        return np.zeros(self._bits // 64, np.uint64)

    def add_input(self, accumulator, keys):
        key_filter_add(accumulator, keys)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = None
        for words in accumulators:
            merged = words if merged is None else np.bitwise_or(merged, words, out=merged)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def _word_masks(sorted_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending bit positions -> (the distinct uint64 words they fall in, each word's mask of their bits)."""
    words = sorted_positions >> np.uint64(6)
    starts = group_starts(words)
    if not len(starts):
        return words.astype(np.int64), np.zeros(0, np.uint64)
    return words[starts].astype(np.int64), np.bitwise_or.reduceat(np.uint64(1) << (sorted_positions & np.uint64(63)), starts)


class SharedKeysCombineFn(beam.CombineFn):
    """uint64 key arrays -> the shared-key filter: ``(bits / 64,)`` uint64 words, one bit per position ``key mod bits``.

    A position's bit is set when two or more keys (repeats included) fell on it, so a key seen twice always passes
    ``shared_keys_contain``, and a key seen once passes when another key shares its position (about ``keys / bits``
    of them). The accumulator is ``(once, twice)``: the positions hit at least once and at least twice.
    """

    def __init__(self, bits: int):
        self._bits = bits

    def create_accumulator(self):
        return np.zeros(self._bits // 64, np.uint64), np.zeros(self._bits // 64, np.uint64)

    def add_input(self, accumulator, keys):
        once, twice = accumulator
        positions = np.sort(np.asarray(keys, np.uint64) & np.uint64(self._bits - 1))
        words, masks = _word_masks(positions[1:][positions[1:] == positions[:-1]])
        twice[words] |= masks
        words, masks = _word_masks(positions[group_starts(positions)])
        twice[words] |= once[words] & masks
        once[words] |= masks
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        once, twice = next(accumulators)  # Beam merges one or more accumulators; the first one takes the rest in
        for other_once, other_twice in accumulators:
            twice |= other_twice | (once & other_once)
            once |= other_once
        return once, twice

    def extract_output(self, accumulator):
        return accumulator[1]


def shared_keys_contain(words: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(n,) bool: the ``keys`` whose position is set in the shared-key filter ``words`` (every key seen twice)."""
    return _bits_at(words, np.asarray(keys, np.uint64) & np.uint64(64 * len(words) - 1))


def cluster_id(source: int, doc_id) -> int:
    """The ``dedup_cluster`` of a component: a signed 64-bit hash of its representative."""
    return int(seeded.hash64([doc_id], f"dedup-cluster:{source}")[0].astype(np.int64))


@dataclasses.dataclass(frozen=True)
class GroupSummary:
    """One duplicate group (exact key) or cluster (component): the kept id and a sample of members.

    ``sample`` holds member ids in (source, id) order, kept id first, at most ``GROUP_SAMPLE``.
    """

    kept: str
    size: int
    dropped: int
    sample: tuple = ()


class DuplicateGroupsCombineFn(beam.CombineFn):
    """GroupSummary -> {"groups", "dropped", "size_histogram", "largest"}; fixed-size accumulator:
    counts, a size histogram, the ``top`` largest groups ordered by (size descending, kept id)."""

    def __init__(self, top: int = TOP_GROUPS):
        self._top = top

    def create_accumulator(self):
        return {"groups": 0, "dropped": 0}, Counter(), []

    def add_input(self, accumulator, summary):
        counts, sizes, largest = accumulator
        counts["groups"] += 1
        counts["dropped"] += summary.dropped
        sizes[summary.size] += 1
        return counts, sizes, self._keep_largest(largest + [summary])

    def merge_accumulators(self, accumulators):
        counts, sizes, largest = self.create_accumulator()
        for other_counts, other_sizes, other_largest in accumulators:
            for name, value in other_counts.items():
                counts[name] += value
            sizes.update(other_sizes)
            largest = self._keep_largest(largest + other_largest)
        return counts, sizes, largest

    def extract_output(self, accumulator):
        counts, sizes, largest = accumulator
        return {
            **counts,
            "size_histogram": {str(size): sizes[size] for size in sorted(sizes)},
            "largest": [{"kept": s.kept, "size": s.size, "ids": list(s.sample)} for s in largest],
        }

    def _keep_largest(self, summaries):
        return heapq.nsmallest(self._top, summaries, key=lambda s: (-s.size, str(s.kept)))


# --- Beam wrappers: exact ----------------------------------------------------------------------


def _exact_shards(element, shards: int):
    unit, ordinals, ids, hashes = element
    refs = docrefs(unit, ordinals)
    shard = shard_of(hashes[:, 0], shards)
    ids = np.asarray(ids, dtype=object)
    for s, rows in key_groups(shard):
        yield s, (hashes[rows], refs[rows], ids[rows])


class _ExactShardFn(beam.DoFn):
    """(shard, [(hashes, refs, ids)]) -> per unit, (unit, (ordinals, kept ids, kept sources)) of the dropped rows;
    ``summaries``: a GroupSummary per key shared by two or more rows."""

    def __init__(self, run_source: int):
        self._run_source = run_source

    def process(self, element):
        _, parts = element
        hashes, refs, ids = concat_parts(parts)
        sources = sources_of(refs, self._run_source)
        rank = np.empty(len(refs), np.int64)
        rank[source_id_order(sources, ids)] = np.arange(len(refs))
        order = np.lexsort((rank, hashes[:, 1], hashes[:, 0]))  # by key, then (source, id) within a key
        starts = group_starts(hashes[order])
        sizes = np.diff(np.append(starts, len(order)))
        dropped_refs, kept_ids, kept_sources = [], [], []
        for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
            members = order[start : start + size].tolist()
            kept = members[0]
            kept_source = int(sources[kept])
            for member in members[1:]:
                dropped_refs.append(refs[member])
                kept_ids.append(ids[kept])
                kept_sources.append(kept_source)
            yield beam.pvalue.TaggedOutput(
                _SUMMARIES, GroupSummary(str(ids[kept]), len(members), len(members) - 1, tuple(str(ids[i]) for i in members[:GROUP_SAMPLE]))
            )
        yield from _by_unit(np.array(dropped_refs, np.int64), [np.array(kept_ids, dtype=object), np.array(kept_sources, np.int64)])


def _by_unit(refs: np.ndarray, columns: list[np.ndarray]):
    """(unit, (ordinals, *columns)) for each run unit among ``refs`` (index units never get decisions)."""
    for unit, mask in unit_masks(refs):
        if unit >= INDEX_UNIT_BASE:
            continue
        yield unit, (ordinal_of(refs[mask]), *[column[mask] for column in columns])


class DedupExact(beam.PTransform):
    """Exact-duplicate decisions: ``(unit, ordinals, ids, hashes)`` rows -> the dropped rows per unit.

    Input elements: ``(unit, ordinals (n,) int64, ids (n,), hashes (n, 2) uint64)``, one or more per
    unit; dedup index units (``index_unit``) take part but are never dropped.

    ``expand`` returns ``{"drops": (unit, (ordinals, kept ids, kept sources)) elements, one or more per
    unit with drops; "groups": one dict (``DuplicateGroupsCombineFn``)}``.

    Args:
        shards: dedup shards (``shard_count`` of the number of rows).
        run_source: the source rank of the run's own documents (the number of indexes).
    """

    def __init__(self, shards: int, run_source: int = 0):
        super().__init__()
        self._shards, self._run_source = shards, run_source

    def expand(self, rows):
        # rows -> (shard, arrays): a shard's rows meet in one worker, sorted by key there
        decided = (
            rows
            | "ShardByHash" >> beam.FlatMap(_exact_shards, self._shards)
            | "GroupShards" >> beam.GroupByKey()
            | "DecideGroups" >> beam.ParDo(_ExactShardFn(self._run_source)).with_outputs(_SUMMARIES, main="drops")
        )
        groups = decided[_SUMMARIES] | "SummarizeGroups" >> beam.CombineGlobally(DuplicateGroupsCombineFn())
        return {"drops": decided.drops, "groups": groups}


# --- Beam wrappers: near ---------------------------------------------------------------------


class SignatureSource:
    """Where the near-dedup stages read documents' ids and signatures: ``fetch(unit, ordinals)``.

    Subclasses read a unit's rows from wherever they are stored (a features table, a dedup
    index); ``fetch`` returns ``(ids (n,) object array, signatures (n, P) uint32)`` in ``ordinals`` order.
    """

    def fetch(self, unit: int, ordinals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def fetch_ids(self, unit: int, ordinals: np.ndarray) -> np.ndarray:
        """(n,) object array of the ids only."""
        raise NotImplementedError


class TextSource:
    """Where the guard reads the run's documents' texts: ``texts(unit, ordinals)``.

    Subclasses read a run unit's records where they are stored (the input shards), parsing only
    the rows asked for; ``texts`` returns the raw texts, as the score pass signed them, in
    ``ordinals`` order (ascending).
    """

    def texts(self, unit: int, ordinals: np.ndarray) -> list[str]:
        raise NotImplementedError


def _band_shards(element, shards: int, shared: np.ndarray):
    """(unit, ordinals, band keys) -> (shard, (keys, docrefs)) of its (document, band) rows whose key may be shared.

    A bucket of one row gives no candidate, so the rows the shared-key filter ``shared`` rules out (most of
    them) never reach the shuffle.
    """
    unit, ordinals, keys = element
    refs = np.repeat(docrefs(unit, ordinals), keys.shape[1])
    keys = keys.reshape(-1)
    kept = shared_keys_contain(shared, keys)
    keys, refs = keys[kept], refs[kept]
    for s, rows in key_groups(shard_of(keys, shards)):
        yield s, (keys[rows], refs[rows])


def _shared_buckets(element):
    """(shard, [(keys, refs)]) -> (unit, (keys, refs)) of the members of buckets shared by two or more documents."""
    _, parts = element
    keys, refs = buckets_with_run_member(*bucket_members(*concat_parts(parts)))
    for unit, mask in unit_masks(refs):
        yield unit, (keys[mask], refs[mask])


class _MemberIdsFn(beam.DoFn):
    """(unit, [(keys, refs)]) -> (shard of key, (keys, refs, sources, ids)): the bucket members with their ids."""

    def __init__(self, source: "SignatureSource", shards: int, run_source: int):
        self._source, self._shards, self._run_source = source, shards, run_source

    def process(self, element):
        unit, parts = element
        keys, refs = concat_parts(parts)
        ids = self._source.fetch_ids(unit, ordinal_of(refs))
        sources = np.full(len(refs), source_of(unit, self._run_source), dtype=np.int64)
        for s, rows in key_groups(shard_of(keys, self._shards)):
            yield s, (keys[rows], refs[rows], sources[rows], ids[rows])


def _bucket_links(element):
    """(shard, [(keys, refs, sources, ids)]) -> (unit of the larger end, (larger, smaller)) star links."""
    _, parts = element
    keys, refs, sources, ids = concat_parts(parts)
    order = np.empty(len(refs), np.int64)
    order[source_id_order(sources, ids)] = np.arange(len(refs))
    larger, smaller = star_links(keys, order, refs)
    with_run = unit_of(smaller) < INDEX_UNIT_BASE  # indexed documents are never linked to one another
    larger, smaller = larger[with_run], smaller[with_run]
    for unit, mask in unit_masks(larger):
        yield unit, (larger[mask], smaller[mask])


class _FirstEndFn(beam.DoFn):
    """(unit u, [(larger, smaller)]) -> (unit of smaller, (larger, smaller, ids, signatures of larger)), each link once."""

    def __init__(self, source: SignatureSource):
        self._source = source

    def process(self, element):
        unit, parts = element
        pairs = np.unique(np.concatenate([np.stack(p, axis=1) for p in parts]), axis=0)
        ids, signatures = self._source.fetch(unit, ordinal_of(pairs[:, 0]))
        for other_unit, rows in key_groups(unit_of(pairs[:, 1])):
            yield other_unit, (pairs[rows, 0], pairs[rows, 1], ids[rows], signatures[rows])


class _VerifyFn(beam.DoFn):
    """(unit v, [(larger, smaller, ids, signatures)]) -> verified links, as (larger, smaller) arrays;
    ``nodes``: (docref, (id, signature bytes)) of both ends of each verified link."""

    def __init__(self, source: SignatureSource, threshold: float):
        self._source, self._threshold = source, threshold

    def process(self, element):
        unit, parts = element
        larger, smaller, larger_ids, larger_signatures = concat_parts(parts)
        smaller_ids, smaller_signatures = self._source.fetch(unit, ordinal_of(smaller))
        similar = estimate_jaccard(larger_signatures, smaller_signatures) >= self._threshold
        if similar.any():
            yield larger[similar], smaller[similar]
        for i in np.flatnonzero(similar).tolist():
            yield beam.pvalue.TaggedOutput(_NODES, (int(larger[i]), (larger_ids[i], larger_signatures[i].astype("<u4").tobytes())))
            yield beam.pvalue.TaggedOutput(_NODES, (int(smaller[i]), (smaller_ids[i], smaller_signatures[i].astype("<u4").tobytes())))


def _node_shards(links, shards: int, both: bool):
    """(larger, smaller) link arrays -> (shard of node, (nodes, neighbours)): keyed by the larger end, and with
    ``both`` by the smaller end too (large-star needs every neighbour of a node)."""
    larger, smaller = links
    nodes, neighbours = (np.concatenate([larger, smaller]), np.concatenate([smaller, larger])) if both else (larger, smaller)
    for s, rows in key_groups(shard_of(splitmix_ids(nodes), shards)):
        yield s, (nodes[rows], neighbours[rows])


def splitmix_ids(refs: np.ndarray) -> np.ndarray:
    """A uint64 spread of docrefs, for sharding nodes evenly."""
    return splitmix64(np.asarray(refs, np.int64).view(np.uint64))


class _StarFn(beam.DoFn):
    """(shard, [(nodes, neighbours)]) -> (larger, smaller) link arrays; ``unstable``: (round, op, count)."""

    def __init__(self, operation, round_index: int, op: str):
        self._operation, self._round, self._op = operation, round_index, op

    def process(self, element):
        _, parts = element
        larger, smaller, unstable = self._operation(*concat_parts(parts))
        if len(larger):
            yield larger, smaller
        if unstable:
            yield beam.pvalue.TaggedOutput(_UNSTABLE, ((self._round, self._op), unstable))


def _labels(element):
    """(shard, [(larger, smaller)]) of converged links -> (node, label) for every node with a smaller neighbour."""
    _, parts = element
    nodes, neighbours = _unique_pairs(*concat_parts(parts))
    starts, _, label = _smallest_per_node(nodes, neighbours)
    return list(zip(nodes[starts].tolist(), label.tolist()))


def _members(element):
    """(node, label) -> (node, label) and (label, label): every member of a component, its label included."""
    node, label = element
    return [(node, label), (label, label)]


def _component_decisions(refs: np.ndarray, ids: np.ndarray, rep: np.ndarray, run_source: int):
    """The decisions of one component's members ((source, id) order; ``rep``: each one's representative
    index): per unit, (unit, (ordinals, rep ids, rep sources, cluster ids, dropped)); ``summaries``:
    a GroupSummary per group of two or more (a split's singletons are neither dropped nor clustered)."""
    sources = sources_of(refs[rep], run_source)
    clusters = np.array([cluster_id(int(s), i) for s, i in zip(sources, ids[rep])], np.int64)
    for group in np.unique(rep).tolist():
        in_group = np.flatnonzero(rep == group)
        if len(in_group) > 1:
            yield beam.pvalue.TaggedOutput(_SUMMARIES, GroupSummary(
                str(ids[group]), len(in_group), len(in_group) - 1, tuple(str(i) for i in ids[in_group[:GROUP_SAMPLE]])))
    keep = np.bincount(rep, minlength=len(refs))[rep] > 1
    dropped = rep != np.arange(len(refs))
    yield from _by_unit(refs[keep], [ids[rep][keep], sources[keep], clusters[keep], dropped[keep]])


class _DecideComponentFn(beam.DoFn):
    """(label, [(docref, (id, signature))]) -> the decisions of a component of at most ``max_cluster_size``
    members (``_component_decisions``); a larger one goes to the guard: ``guarded``: (label, (refs, ids,
    signatures)) in (source, id) order, ``text_rows``: (unit, (ordinals, labels)) of its run members."""

    def __init__(self, max_cluster_size: int, run_source: int):
        self._max, self._run_source = max_cluster_size, run_source

    def process(self, element):
        label, members = element
        unique = {int(ref): info for ref, info in members}
        refs = np.fromiter(unique, np.int64, len(unique))
        infos = list(unique.values())
        order = source_id_order(sources_of(refs, self._run_source), np.array([info[0] for info in infos], dtype=object))
        refs, members = refs[order], [infos[i] for i in order.tolist()]
        ids = np.array([info[0] for info in members], dtype=object)
        if len(members) <= self._max:
            yield from _component_decisions(refs, ids, np.zeros(len(members), np.int64), self._run_source)
            return
        signatures = np.stack([np.frombuffer(info[1], dtype="<u4") for info in members])
        yield beam.pvalue.TaggedOutput(_GUARDED, (label, (refs, ids, signatures)))
        if (unit_of(refs) < INDEX_UNIT_BASE).sum() < 2:  # every pair has an indexed end: the estimate decides all
            return
        for unit, mask in unit_masks(refs):
            if unit < INDEX_UNIT_BASE:  # indexed documents are never re-read: their signatures stand in
                yield beam.pvalue.TaggedOutput(_TEXT_ROWS, (unit, (ordinal_of(refs[mask]), np.full(int(mask.sum()), label, np.int64))))


class _ShingleSetsFn(beam.DoFn):
    """(unit, [(ordinals, labels)]) -> (label, (refs, hashes, sizes)): the shingle sets (``minhash.shingle_sets``)
    of the unit's guarded members, read through a ``TextSource``, one element per component."""

    def __init__(self, source: TextSource, config: MinHashConfig):
        self._source, self._config = source, config

    def process(self, element):
        unit, parts = element
        ordinals, labels = concat_parts(parts)
        order = np.argsort(ordinals, kind="stable")
        ordinals, labels = ordinals[order], labels[order]
        hashes, sizes = shingle_sets(self._source.texts(unit, ordinals), self._config)
        starts = np.cumsum(sizes) - sizes
        refs = docrefs(unit, ordinals)
        for label in np.unique(labels).tolist():
            rows = np.flatnonzero(labels == label)
            yield label, (refs[rows], hashes[segment_positions(starts[rows], sizes[rows])], sizes[rows])


class _SplitComponentFn(beam.DoFn):
    """(label, {"members": [(refs, ids, signatures)], "sets": [(refs, hashes, sizes)]}) -> the guard's decisions
    (``split_component`` with ``GuardSimilarity``, ``_component_decisions``); ``splits``: a report per component."""

    def __init__(self, threshold: float, run_source: int):
        self._threshold, self._run_source = threshold, run_source

    def process(self, element):
        _, joined = element
        (refs, ids, signatures), = joined["members"]
        set_refs, hashes, set_sizes = concat_parts(joined["sets"]) if joined["sets"] else (refs[:0], np.zeros(0, np.uint32), refs[:0])
        member = {ref: i for i, ref in enumerate(refs.tolist())}
        position = np.array([member[ref] for ref in set_refs.tolist()], np.int64)
        starts, sizes = np.zeros(len(refs), np.int64), np.zeros(len(refs), np.int64)
        starts[position], sizes[position] = np.cumsum(set_sizes) - set_sizes, set_sizes
        similarity = GuardSimilarity(signatures, hashes, starts, sizes)
        rep = split_component(similarity, len(refs), self._threshold)
        groups = np.bincount(rep, minlength=len(refs))
        yield beam.pvalue.TaggedOutput(_SPLITS, {
            "size": len(refs), "groups": int((groups > 0).sum()), "largest_group": int(groups.max()), "text_members": similarity.with_text,
            "kept": str(ids[0]), "sample": [str(i) for i in ids[:GROUP_SAMPLE]],
        })
        yield from _component_decisions(refs, ids, rep, self._run_source)


def _near_stats(groups: dict, unstable: dict, splits: list, split_count: int, candidate_links: int, verified_links: int,
                config: MinHashConfig, bands: int, rows: int) -> dict:
    per_round = [[unstable.get((i, op), 0) for op in ("large_star", "small_star")] for i in range(config.cc_rounds)]
    return {
        "config": {**dataclasses.asdict(config), "bands": bands, "rows": rows},
        "near_duplicates": groups["dropped"],
        "candidate_links": candidate_links,
        "verified_links": verified_links,
        "clusters": groups["groups"],
        "cluster_size_histogram": groups["size_histogram"],
        "largest_clusters": groups["largest"],
        "split_components": splits,
        "split_component_count": split_count,
        "connected_components": {"rounds": config.cc_rounds, "unstable_nodes_per_round": per_round, "converged": per_round[-1] == [0, 0]},
    }


class DedupNear(beam.PTransform):
    """Near-duplicate decisions: ``(unit, ordinals, band keys)`` of eligible rows -> every clustered row per unit.

    Input elements: ``(unit, ordinals (n,) int64, band keys (n, bands) uint64)`` (``minhash.band_keys``
    of the rows' signatures with ``config.band_rows``); dedup index units take
    part (their members come first in the order) but get no decisions.

    ``expand`` returns ``{"decisions": (unit, (ordinals, rep ids, rep sources, cluster ids, dropped))
    elements for every member of a near-duplicate group (representatives with ``dropped`` False),
    "stats": one dict}``.

    Args:
        config: MinHashConfig (threshold, bands, cc_rounds, max_cluster_size).
        source: the ``SignatureSource`` verification reads signatures and ids from.
        text: the ``TextSource`` the guard reads the run's members of a component above the limit from.
        shards: band-key shards (``shard_count`` of the number of (document, band) rows).
        run_source: the source rank of the run's own documents (the number of indexes).
    """

    def __init__(self, config: MinHashConfig, source: SignatureSource, text: TextSource, shards: int, run_source: int = 0):
        super().__init__()
        self._config, self._source, self._text, self._shards, self._run_source = config, source, text, shards, run_source
        self._bands, self._rows = config.band_rows  # computed once, before the pipeline runs
        # the connected components' rows are links, far fewer than (document, band) rows: one node shard per
        # document shard (every round re-splits each shard's output into all shards: their number squared)
        self._component_shards = max(1, shards // self._bands)

    def expand(self, keyed):
        config = self._config
        # (unit, ordinals, band keys) -> (shard, (band keys, docrefs)) of the keys that may be shared -> shared buckets' members by unit
        # -> with their ids, by shard again -> star links to each bucket's smallest id, by unit of the larger end
        shared = beam.pvalue.AsSingleton(
            keyed
            | "BandKeys" >> beam.Map(lambda element: element[2].reshape(-1))
            | "SharedKeys" >> beam.CombineGlobally(SharedKeysCombineFn(key_filter_bits(self._shards * ROWS_PER_SHARD, SHARED_BITS_PER_KEY)))
        )
        candidates = (
            keyed
            | "ShardByBand" >> beam.FlatMap(_band_shards, self._shards, shared)
            | "GroupBands" >> beam.GroupByKey()
            | "SharedBuckets" >> beam.FlatMap(_shared_buckets)
            | "GroupMembersByUnit" >> beam.GroupByKey()
            | "MemberIds" >> beam.ParDo(_MemberIdsFn(self._source, self._shards, self._run_source))
            | "GroupMembersByBand" >> beam.GroupByKey()
            | "BucketLinks" >> beam.FlatMap(_bucket_links)
            | "GroupByLargerUnit" >> beam.GroupByKey()
            | "FetchLargerEnds" >> beam.ParDo(_FirstEndFn(self._source))
        )
        verified = (
            candidates
            | "GroupBySmallerUnit" >> beam.GroupByKey()
            | "Verify" >> beam.ParDo(_VerifyFn(self._source, config.threshold if config.verify else 0.0)).with_outputs(_NODES, main="links")
        )
        links = verified.links
        # link arrays per round; each star operation groups them by a shard of its node
        edges, unstable = links, []
        for i in range(config.cc_rounds):  # unrolled: Beam graphs have no loops
            large = (
                edges
                | f"Undirect{i}" >> beam.FlatMap(_node_shards, self._component_shards, True)
                | f"GroupNeighbours{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.ParDo(_StarFn(large_star, i, "large_star")).with_outputs(_UNSTABLE, main="links")
            )
            small = (
                large.links
                | f"KeyByLarger{i}" >> beam.FlatMap(_node_shards, self._component_shards, False)
                | f"GroupSmaller{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.ParDo(_StarFn(small_star, i, "small_star")).with_outputs(_UNSTABLE, main="links")
            )
            edges = small.links
            unstable += [large[_UNSTABLE], small[_UNSTABLE]]
        # node -> the smallest node it reached; a label is its own member. Before convergence a node can
        # be reached and reach further: it joins the smaller component (under-deduplication, never over-).
        members = (
            edges
            | "KeyLabels" >> beam.FlatMap(_node_shards, self._component_shards, False)
            | "GroupLabels" >> beam.GroupByKey()
            | "Label" >> beam.FlatMap(_labels)
            | "Members" >> beam.FlatMap(_members)
            | "OneLabelPerNode" >> beam.CombinePerKey(min)
        )
        infos = verified[_NODES] | "OneInfoPerNode" >> beam.CombinePerKey(min)
        decided = (
            {"label": members, "info": infos}
            | "JoinMemberInfo" >> beam.CoGroupByKey()
            | "KeyByLabel" >> beam.FlatMap(lambda item: [(item[1]["label"][0], (item[0], item[1]["info"][0]))])
            | "GroupComponents" >> beam.GroupByKey()
            | "DecideComponents" >> beam.ParDo(_DecideComponentFn(config.max_cluster_size, self._run_source))
            .with_outputs(_SUMMARIES, _GUARDED, _TEXT_ROWS, main="decisions")
        )
        # the guard: a component above the limit -> its run members' ordinals by unit -> their shingle sets,
        # computed where the text is read (text never crosses a shuffle) -> by component, with its members -> split
        sets = (
            decided[_TEXT_ROWS]
            | "GroupGuardedByUnit" >> beam.GroupByKey()
            | "ShingleSets" >> beam.ParDo(_ShingleSetsFn(self._text, config))
        )
        guarded = (
            {"members": decided[_GUARDED], "sets": sets}
            | "JoinGuardedSets" >> beam.CoGroupByKey()
            | "SplitComponents" >> beam.ParDo(_SplitComponentFn(config.threshold, self._run_source)).with_outputs(_SUMMARIES, _SPLITS, main="decisions")
        )
        decisions = (decided.decisions, guarded.decisions) | "AllDecisions" >> beam.Flatten()
        summaries = (decided[_SUMMARIES], guarded[_SUMMARIES]) | "AllSummaries" >> beam.Flatten()
        groups = summaries | "SummarizeClusters" >> beam.CombineGlobally(DuplicateGroupsCombineFn())
        unstable_counts = (
            unstable | "FlattenUnstable" >> beam.Flatten() | "SumUnstable" >> beam.CombinePerKey(sum) | "UnstableDict" >> beam.combiners.ToDict()
        )
        # the report shows the largest split components and counts them all (there is one per guarded component)
        splits = guarded[_SPLITS] | "LargestSplits" >> beam.combiners.Top.Smallest(TOP_GROUPS, key=lambda s: (-s["size"], s["kept"]))
        split_count = guarded[_SPLITS] | "CountSplits" >> beam.combiners.Count.Globally()
        candidate_count = candidates | "CountCandidates" >> beam.Map(lambda element: len(element[1][0])) | "SumCandidates" >> beam.CombineGlobally(sum)
        link_count = links | "CountLinks" >> beam.Map(lambda pair: len(pair[0])) | "SumLinks" >> beam.CombineGlobally(sum)
        stats = groups | "NearStats" >> beam.Map(
            _near_stats,
            unstable=beam.pvalue.AsSingleton(unstable_counts),
            splits=beam.pvalue.AsSingleton(splits),
            split_count=beam.pvalue.AsSingleton(split_count),
            candidate_links=beam.pvalue.AsSingleton(candidate_count),
            verified_links=beam.pvalue.AsSingleton(link_count),
            config=config, bands=self._bands, rows=self._rows,
        )
        return {"decisions": decisions, "stats": stats}

