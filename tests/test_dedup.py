"""Tests for transforms/dedup.py: exact keys, bucket links, vectorised star operations, the guard, the Beam steps."""

import json
import os
import random
import tempfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from tests.helpers import estimate_passes, local_pipeline
from winnow.transforms import dedup
from winnow.transforms.dedup import DuplicateGroupsCombineFn, ExactDedupConfig, GroupSummary
from winnow.transforms.minhash import MinHashConfig, band_keys, estimate_jaccard, minhash_signatures, permutation_params


def _hashes(texts, config=ExactDedupConfig()):
    return dedup.exact_hashes(dedup.normalized_texts(texts, config))


def test_exact_hash_normalizations():
    a, b, c, d = _hashes(["Hello  World", " hello world\n", "ＡＢＣ", "abc"])
    assert (a == b).all() and (c == d).all()  # whitespace and case; NFKC full-width forms
    assert not (_hashes(["Hello"]) == _hashes(["Help"])).all()
    assert _hashes(["x"]).shape == (1, 2) and _hashes(["x"]).dtype == np.uint64
    no_case = ExactDedupConfig(casefold=False)
    assert not (_hashes(["Hello"], no_case) == _hashes(["hello"], no_case)).all()
    spaced = ExactDedupConfig(collapse_whitespace=False)
    assert not (_hashes(["a  b"], spaced) == _hashes(["a b"], spaced)).all()


def test_exact_config_validation():
    with pytest.raises(TypeError, match="casefold='yes'"):
        ExactDedupConfig(casefold="yes")


def test_docrefs_round_trip():
    refs = dedup.docrefs(5, np.array([0, 7, 2**31]))
    assert dedup.unit_of(refs).tolist() == [5, 5, 5]
    assert dedup.ordinal_of(refs).tolist() == [0, 7, 2**31]
    unit = dedup.index_unit(2, 3)
    assert unit >= dedup.INDEX_UNIT_BASE and dedup.index_of_unit(unit) == 2
    assert dedup.source_of(unit, run_source=4) == 2 and dedup.source_of(7, run_source=4) == 4


def test_shards_and_group_starts():
    keys = np.array([0, 2**63, 2**64 - 1], np.uint64)
    assert dedup.shard_of(keys, 4).tolist() == [0, 2, 3]
    assert dedup.shard_count(1) == 1 and dedup.shard_count(dedup.ROWS_PER_SHARD + 1) == 2
    assert dedup.group_starts(np.array([1, 1, 2, 5, 5, 5])).tolist() == [0, 2, 3]
    assert dedup.group_starts(np.array([[1, 2], [1, 2], [1, 3]])).tolist() == [0, 2]


def test_bucket_members_and_star_links_by_hand():
    keys = np.array([7, 7, 7, 9, 9, 11, 7], np.uint64)
    refs = np.array([30, 10, 20, 40, 50, 60, 10], np.int64)  # (7, 10) twice: one row
    shared_keys, shared_refs = dedup.bucket_members(keys, refs)
    assert sorted(zip(shared_keys.tolist(), shared_refs.tolist())) == [(7, 10), (7, 20), (7, 30), (9, 40), (9, 50)]
    # the centre is the member first in (source, id) order, whatever its docref: here 30 in bucket 7, 50 in bucket 9
    order = {10: 2, 20: 1, 30: 0, 40: 3, 50: 2}
    larger, smaller = dedup.star_links(shared_keys, np.array([order[r] for r in shared_refs.tolist()]), shared_refs)
    assert sorted(zip(larger.tolist(), smaller.tolist())) == [(30, 10), (30, 20), (50, 40)]


def test_star_operations_by_hand():
    # large-star at 3 with neighbours 1 < 3 < 4, 5: 4 and 5 move to 1; 3 is unstable. Nodes 1 and 4 are in the shard too.
    nodes = np.array([3, 3, 3, 1, 4, 5])
    neighbours = np.array([4, 1, 5, 3, 3, 3])
    larger, smaller, unstable = dedup.large_star(nodes, neighbours)
    assert sorted(zip(larger.tolist(), smaller.tolist())) == [(3, 1), (4, 1), (5, 1)] and unstable == 1
    # small-star at 4 with smaller neighbours 2, 3: 4 and 3 move to 2; unstable
    larger, smaller, unstable = dedup.small_star(np.array([4, 4, 4]), np.array([3, 2, 3]))
    assert sorted(zip(larger.tolist(), smaller.tolist())) == [(3, 2), (4, 2)] and unstable == 1
    assert [x.tolist() for x in dedup.small_star(np.array([4]), np.array([1]))[:2]] == [[4], [1]]


def _rounds(edges: np.ndarray, rounds: int) -> tuple[dict, list]:
    """The CC plan of DedupNear in plain numpy on one shard: (node -> label, unstable per round)."""
    larger, smaller = edges[:, 0], edges[:, 1]
    history = []
    for _ in range(rounds):
        larger, smaller, large_unstable = dedup.large_star(np.concatenate([larger, smaller]), np.concatenate([smaller, larger]))
        larger, smaller, small_unstable = dedup.small_star(larger, smaller)
        history.append((large_unstable, small_unstable))
    labels = {}
    for node, label in zip(larger.tolist(), smaller.tolist()):
        labels[node] = min(labels.get(node, label), label)
    return labels, history


@pytest.mark.parametrize("seed", range(5))
def test_star_rounds_find_the_connected_components_of_random_graphs(seed):
    rng = random.Random(seed)
    n = 60
    edges = {(max(a, b), min(a, b)) for a, b in ((rng.randrange(n), rng.randrange(n)) for _ in range(50)) if a != b}
    edges = np.array(sorted(edges), np.int64)
    labels, history = _rounds(edges, 12)
    assert history[-1] == (0, 0)  # converged
    graph = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    for node in set(edges.ravel().tolist()):
        members = np.flatnonzero(component == component[node])
        assert labels.get(node, node) == members.min()


def test_a_path_in_sorted_order_needs_about_log2_rounds():
    path = np.array([(i + 1, i) for i in range(200)], np.int64)
    labels, history = _rounds(path, 12)
    assert all(label == 0 for label in labels.values()) and history[-1] == (0, 0)
    assert sum(1 for h in history if h != (0, 0)) <= 10


def test_split_component_groups_members_around_similar_representatives():
    # a chain A~B~C where A and C are far apart (J(A, C) = 0.6): the guard keeps A and C apart
    base = np.arange(100, dtype=np.uint32)
    a = base.copy()
    b = base.copy()
    b[:20] += 1000  # J(A, B) = 0.8
    c = b.copy()
    c[20:40] += 2000  # J(B, C) = 0.8, J(A, C) = 0.6

    def estimated(*signatures):  # no text: the signatures' estimate
        return dedup.GuardSimilarity.of_sets(np.stack(signatures), [None] * len(signatures))

    assert dedup.split_component(estimated(a, b, c), 3, threshold=0.8).tolist() == [0, 0, 2]
    assert dedup.split_component(estimated(a, a, a), 3, 0.8).tolist() == [0, 0, 0]
    # past max_groups representatives, the members left stay alone
    assert dedup.split_component(estimated(a, c, a, b, c), 5, 0.8, max_groups=1).tolist() == [0, 1, 0, 0, 4]


def test_guard_similarity_is_the_exact_jaccard_by_hand():
    sets = [np.array([1, 2, 3, 4], np.uint32), np.array([2, 3, 4, 5, 6], np.uint32), np.array([9], np.uint32), np.array([1, 2, 3, 4], np.uint32)]
    similarity = dedup.GuardSimilarity.of_sets(np.zeros((4, 8), np.uint32), sets)
    # |{2,3,4}| / |{1..6}| = 3/6; disjoint 0; equal 1
    assert similarity(np.array([0, 1, 2, 3]), 0).tolist() == [1.0, 0.5, 0.0, 1.0]
    assert similarity(np.array([2, 0]), 1).tolist() == [0.0, 0.5]
    assert similarity(np.zeros(0, np.int64), 1).shape == (0,)
    # stored out of member order (as the guard joins them from several units): the same values
    flat = np.concatenate([sets[2], sets[0], sets[3], sets[1]])
    shuffled = dedup.GuardSimilarity(np.zeros((4, 8), np.uint32), flat, np.array([1, 9, 0, 5]), np.array([4, 5, 1, 4]))
    assert shuffled(np.array([0, 1, 2, 3]), 0).tolist() == [1.0, 0.5, 0.0, 1.0]


def test_guard_similarity_groups_a_hand_made_component_on_exact_jaccard():
    # sets: a = {0..9}; b = a with one element changed (J 9/11 = 0.82); c = a with two changed (J 8/12 = 0.67);
    # d = c with one more changed (J(c, d) = 0.82, J(a, d) = 0.54); every signature equal, so the
    # estimate alone would put all four in one group
    a = np.arange(10, dtype=np.uint32)
    b = np.sort(np.append(a[1:], 100)).astype(np.uint32)
    c = np.sort(np.append(a[2:], [100, 101])).astype(np.uint32)
    d = np.sort(np.append(a[3:], [100, 101, 102])).astype(np.uint32)
    signatures = np.zeros((4, 8), np.uint32)
    similarity = dedup.GuardSimilarity.of_sets(signatures, [a, b, c, d])
    assert dedup.split_component(similarity, 4, 0.8).tolist() == [0, 0, 2, 2]
    assert similarity.with_text == 4
    # a member without text (an indexed one) is compared by its signature: here equal to all
    mixed = dedup.GuardSimilarity.of_sets(signatures, [None, b, c, d])
    assert dedup.split_component(mixed, 4, 0.8).tolist() == [0, 0, 0, 0]


def test_cluster_id_is_stable_and_depends_on_source():
    assert dedup.cluster_id(1, "doc-7") == dedup.cluster_id(1, "doc-7")
    assert dedup.cluster_id(0, "doc-7") != dedup.cluster_id(1, "doc-7")
    assert -(2**63) <= dedup.cluster_id(0, 5) < 2**63


def test_duplicate_groups_combine_fn_merges_in_any_order():
    fn = DuplicateGroupsCombineFn(top=2)
    summaries = [GroupSummary("a", 3, 2, ("a", "b", "c")), GroupSummary("d", 2, 1, ("d", "e")), GroupSummary("f", 5, 4, ("f",))]
    one = fn.create_accumulator()
    for s in summaries:
        one = fn.add_input(one, s)
    parts = [fn.add_input(fn.create_accumulator(), s) for s in summaries]
    merged = fn.merge_accumulators([parts[2], fn.merge_accumulators([parts[1], parts[0]]), fn.create_accumulator()])
    for accumulator in (one, merged):
        out = fn.extract_output(accumulator)
        assert (out["groups"], out["dropped"]) == (3, 7)
        assert out["size_histogram"] == {"2": 1, "3": 1, "5": 1}
        assert [g["kept"] for g in out["largest"]] == ["f", "a"]
    assert fn.extract_output(fn.create_accumulator())["groups"] == 0


# ---------------------------------------------------------------------------------------------
# Beam steps


def test_dedup_exact_keeps_the_smallest_id_and_prefers_indexed_documents():
    texts = {"b": "Same text", "a": "same  TEXT", "c": "other", "d": "same text"}
    ids = np.array(sorted(texts), dtype=object)
    rows = [(0, np.arange(4), ids, _hashes([texts[i] for i in ids]))]
    indexed = [(dedup.index_unit(0, 0), np.arange(1), np.array(["z"], dtype=object), _hashes(["other"]))]
    with local_pipeline() as pipeline:
        out = pipeline | beam.Create(rows + indexed) | dedup.DedupExact(shards=2, run_source=1)
        drops = out["drops"] | beam.FlatMap(lambda e: [(int(o), str(k), int(s)) for o, k, s in zip(*e[1])])
        assert_that(drops, equal_to([(1, "a", 1), (3, "a", 1), (2, "z", 0)]), label="Drops")
        groups = out["groups"] | beam.Map(lambda g: (g["groups"], g["dropped"]))
        assert_that(groups, equal_to([(2, 3)]), label="Groups")


class _MemorySource(dedup.SignatureSource):
    def __init__(self, units: dict):
        self._units = units  # unit -> (ids, signatures)

    def fetch(self, unit, ordinals):
        ids, signatures = self._units[unit]
        return ids[ordinals], signatures[ordinals]

    def fetch_ids(self, unit, ordinals):
        return self._units[unit][0][ordinals]


class _MemoryTexts(dedup.TextSource):
    def __init__(self, units: dict):
        self._units = units  # run unit -> texts; asking for an index unit's raises KeyError

    def texts(self, unit, ordinals):
        assert (np.diff(ordinals) > 0).all()
        return [self._units[unit][o] for o in ordinals.tolist()]


def _near(texts: dict, config: MinHashConfig, units: int = 2, indexed: dict | None = None):
    """Run DedupNear on ``texts`` spread over ``units`` units, and ``indexed`` texts in one dedup index unit
    (whose text the guard may not read); returns {id: (rep, dropped)} of the run's documents (through a file:
    DoFns are pickled)."""
    indexed = indexed or {}
    ids = sorted(texts) + sorted(indexed)
    signatures = minhash_signatures([{**texts, **indexed}[i] for i in ids], config,
                                    permutation_params(config.num_perm, config.seed, config.permutation))
    placed = {u: [i for k, i in enumerate(sorted(texts)) if k % units == u] for u in range(units)}
    if indexed:
        placed[dedup.index_unit(0, 0)] = sorted(indexed)
    memory = {u: (np.array(members, dtype=object), signatures[[ids.index(m) for m in members]]) for u, members in placed.items()}
    elements = [(u, np.arange(len(members)), band_keys(memory[u][1], *config.band_rows)) for u, members in placed.items()]
    text_source = _MemoryTexts({u: [texts[m] for m in members] for u, members in placed.items() if u < dedup.INDEX_UNIT_BASE})
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "decided.json")
        with local_pipeline() as pipeline:
            out = pipeline | beam.Create(elements) | dedup.DedupNear(config, _MemorySource(memory), text_source, shards=3, run_source=1 if indexed else 0)
            decisions = out["decisions"] | beam.FlatMap(
                lambda e, placed_: [(placed_[e[0]][int(o)], (str(r), bool(d))) for o, r, _, _, d in zip(*e[1])], placed)
            _ = decisions | beam.combiners.ToList() | beam.Map(lambda found, p: open(p, "w").write(json.dumps(found)), path)
        return {doc_id: tuple(value) for doc_id, value in json.loads(open(path).read())}


WORDS = [f"w{i}" for i in range(400)]


def _doc(start: int, length: int = 60, edits: dict | None = None) -> str:
    words = WORDS[start : start + length]
    for position, word in (edits or {}).items():
        words[position] = word
    return " ".join(words)


def test_dedup_near_clusters_verified_copies_and_keeps_the_smallest_id():
    texts = {"d1": _doc(0), "d2": _doc(0, edits={30: "x"}), "d3": _doc(100), "d4": _doc(200), "d0": _doc(200, edits={10: "y"})}
    decided = _near(texts, MinHashConfig(threshold=0.8))
    assert decided == {"d1": ("d1", False), "d2": ("d1", True), "d0": ("d0", False), "d4": ("d0", True)}


def _chain() -> tuple[str, str, str]:
    """A ~ B ~ C by verified links at threshold 0.75, A !~ C (word 5-shingle Jaccard 0.85, 0.81, 0.69)."""
    a = _doc(0, 200)
    b = _doc(0, 200, {i: f"b{i}" for i in range(0, 200, 50)})
    c = _doc(0, 200, {**{i: f"b{i}" for i in range(0, 200, 50)}, **{i: f"c{i}" for i in range(25, 200, 50)}})
    return a, b, c


def test_the_guard_splits_a_chain_above_the_size_limit():
    # one component of 3 when the limit is 3 (no guard), split with max_cluster_size 2
    a, b, c = _chain()
    texts = {"a": a, "b": b, "c": c}
    loose = _near(texts, MinHashConfig(threshold=0.75, num_perm=256, max_cluster_size=3))
    assert loose == {"a": ("a", False), "b": ("a", True), "c": ("a", True)}
    guarded = _near(texts, MinHashConfig(threshold=0.75, num_perm=256, max_cluster_size=2))
    assert guarded == {"a": ("a", False), "b": ("a", True)}  # c is far from a: its own group, a singleton, kept


def test_the_guard_splits_on_exact_jaccard_what_the_estimate_joins():
    a, b, c = estimate_passes()
    config = MinHashConfig(max_cluster_size=2)
    signatures = minhash_signatures([a, b, c], config, permutation_params(config.num_perm, config.seed, config.permutation))
    # the premise: a guard on the signatures would keep c with a
    assert estimate_jaccard(signatures[0], signatures[2]) >= 0.8
    assert dedup.split_component(dedup.GuardSimilarity.of_sets(signatures, [None] * 3), 3, 0.8).tolist() == [0, 0, 0]
    texts = {"a": a, "b": b, "c": c}
    assert _near(texts, MinHashConfig(max_cluster_size=3)) == {"a": ("a", False), "b": ("a", True), "c": ("a", True)}  # no guard: one component
    assert _near(texts, config) == {"a": ("a", False), "b": ("a", True)}  # c is kept: J(a, c) = 0.774


def test_the_text_guard_is_the_same_on_any_unit_layout():
    a, b, c = estimate_passes()
    texts = {"a": a, "b": b, "c": c, "d": _doc(0, 200, {150: "d"}), "e": _doc(200, 150), "f": _doc(200, 150, {70: "f"})}
    config = MinHashConfig(max_cluster_size=2)
    decided = _near(texts, config, units=1)
    assert decided == _near(texts, config, units=3)
    assert decided == {"a": ("a", False), "b": ("a", True), "d": ("a", True), "e": ("e", False), "f": ("e", True)}


def test_the_guard_compares_indexed_members_by_their_signatures():
    # a is indexed: its text is never read, so c, estimated 0.844 to a, names a; run-only, c stays (above)
    a, b, c = estimate_passes()
    decided = _near({"b": b, "c": c}, MinHashConfig(max_cluster_size=2), indexed={"a": a})
    assert decided == {"b": ("a", True), "c": ("a", True)}


def test_the_guard_reads_no_text_when_one_member_is_the_runs():
    """A guarded component with one run member: every pair has an indexed end, so no text rows are asked for."""
    signature = np.arange(128, dtype="<u4").tobytes()
    run = dedup.docrefs(0, np.array([5]))[0]
    index_a, index_b = dedup.docrefs(dedup.index_unit(0, 0), np.array([1, 2]))
    fn = dedup._DecideComponentFn(max_cluster_size=2, run_source=1)

    def tags(members):
        return [out.tag for out in fn.process((7, members)) if isinstance(out, beam.pvalue.TaggedOutput)]

    one_run = [(int(run), ("c", signature)), (int(index_a), ("a", signature)), (int(index_b), ("b", signature))]
    assert tags(one_run) == [dedup._GUARDED]
    two_runs = one_run[:2] + [(int(dedup.docrefs(1, np.array([0]))[0]), ("d", signature))]
    assert tags(two_runs) == [dedup._GUARDED, dedup._TEXT_ROWS, dedup._TEXT_ROWS]


def test_dedup_near_is_the_same_on_any_unit_layout():
    rng = random.Random(3)
    texts = {}
    for i in range(30):
        base = rng.randrange(0, 300)
        texts[f"doc{i:02d}"] = _doc(base, edits={rng.randrange(60): f"e{i}"})
    config = MinHashConfig(threshold=0.7)
    assert _near(texts, config, units=1) == _near(texts, config, units=4)


def test_indexed_documents_are_never_linked_to_one_another():
    # indexed a ~ b, and the run's c ~ b only: c names b, the indexed document it duplicates, not a
    # through b; the run's d duplicates nothing
    a, b, c = _chain()
    config = MinHashConfig(threshold=0.75, num_perm=256)
    decided = _near({"c": c, "d": _doc(300, 90)}, config, indexed={"a": a, "b": b})
    assert decided == {"c": ("b", True)}


def test_shared_key_filter_passes_every_repeated_key_and_few_single_ones():
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**63, 20_000, dtype=np.int64).astype(np.uint64)
    repeated = keys[:2_000]
    batches = [keys[:10_000], keys[10_000:], repeated[:1_000], np.repeat(repeated[1_000:1_500], 2), repeated[1_500:]]  # repeats within and across batches
    bits = 1 << 18
    fn = dedup.SharedKeysCombineFn(bits)
    accumulators = [fn.add_input(fn.create_accumulator(), batch) for batch in batches]
    words = fn.extract_output(fn.merge_accumulators(accumulators))
    one_pass = fn.create_accumulator()
    for batch in batches:
        one_pass = fn.add_input(one_pass, batch)
    assert np.array_equal(words, fn.extract_output(one_pass)) and words.shape == (bits // 64,)
    positions = (keys & np.uint64(bits - 1)).astype(np.int64)
    counts = np.bincount(np.concatenate([positions, positions[:2_000]]), minlength=bits)
    assert np.array_equal(dedup.shared_keys_contain(words, keys), counts[positions] >= 2)  # the definition, counted directly
    assert dedup.shared_keys_contain(words, repeated).all()
    single = dedup.shared_keys_contain(words, keys[2_000:]).mean()
    assert 0 < single < 2 * len(keys) / bits
    assert not dedup.shared_keys_contain(fn.extract_output(fn.merge_accumulators([fn.create_accumulator()])), keys).any()


def test_key_filter_has_no_false_negatives_and_few_false_positives():
    rng = np.random.default_rng(0)
    added, others = rng.integers(0, 2**63, 5_000, dtype=np.int64).astype(np.uint64), rng.integers(0, 2**63, 100_000, dtype=np.int64).astype(np.uint64)
    assert dedup.key_filter_bits(5_000) == 1 << 20 and dedup.key_filter_bits(10**9) == 1 << 30
    bits = 1 << 17  # 26 bits per key here
    fn = dedup.KeyFilterCombineFn(bits)
    halves = [fn.add_input(fn.create_accumulator(), part) for part in np.array_split(added, 2)]
    words = fn.extract_output(fn.merge_accumulators(halves))
    whole = fn.add_input(fn.create_accumulator(), added)
    assert np.array_equal(words, whole) and words.shape == (bits // 64,)
    assert dedup.key_filter_contains(words, added).all()
    expected = (1 - np.exp(-2 * len(added) / bits)) ** 2
    assert abs(dedup.key_filter_contains(words, others).mean() - expected) < 0.3 * expected
