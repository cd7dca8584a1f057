"""Tests for transforms/dedup.py: exact keys, star operations, components, stats, pipelines."""

import json
import random
from collections import defaultdict

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from helpers import local_pipeline

from winnow.transforms import schema
from winnow.transforms.dedup import (
    DedupExact,
    DedupNearMinHash,
    DuplicateGroupsCombineFn,
    ExactDedupConfig,
    GroupSummary,
    MinHashConfig,
    check_record,
    exact_key,
    large_star,
    small_star,
    star_links,
)

# ---------------------------------------------------------------------------------------------
# Core


def test_exact_key_normalizations():
    default = ExactDedupConfig()
    assert exact_key("Hello  World", default) == exact_key(" hello world\n", default)
    assert exact_key("ＡＢＣ", default) == exact_key("abc", default)  # NFKC: full-width forms
    assert exact_key("Hello", default) != exact_key("Help", default)
    assert len(exact_key("x", default)) == 16
    assert exact_key("Hello", ExactDedupConfig(casefold=False)) != exact_key("hello", ExactDedupConfig(casefold=False))
    spaced = ExactDedupConfig(collapse_whitespace=False)
    assert exact_key("a  b", spaced) != exact_key("a b", spaced)
    assert exact_key("ＡＢＣ", ExactDedupConfig(nfkc=False)) != exact_key("abc", ExactDedupConfig(nfkc=False))


def test_exact_config_validation():
    with pytest.raises(TypeError, match="casefold='yes'"):
        ExactDedupConfig(casefold="yes")


def test_check_record():
    check_record({"id": "a", "text": "t"})
    for bad in ({"id": "a"}, {"id": 1, "text": "t"}, {"id": "a", "text": None}, ["a"]):
        with pytest.raises(TypeError):
            check_record(bad)


def test_star_operations_hand_worked():
    assert sorted(star_links(["c", "a", "b"])) == [("b", "a"), ("c", "a")]
    assert star_links(["a"]) == []
    # Large-star at "c" with neighbours a < c < d, e: d and e move to a; c is unstable.
    links, unstable = large_star("c", ["d", "a", "e", "d"])
    assert sorted(links) == [("d", "a"), ("e", "a")] and unstable
    # A centre (no smaller neighbour) keeps its links and is stable.
    links, unstable = large_star("a", ["b", "c"])
    assert sorted(links) == [("b", "a"), ("c", "a")] and not unstable
    # A leaf of a star (one smaller neighbour, no larger one) emits nothing here.
    assert large_star("d", ["a"]) == ([], False)
    # Small-star at "d" with smaller neighbours b, c: d and c move to b; unstable.
    links, unstable = small_star("d", ["c", "b", "c"])
    assert sorted(links) == [("c", "b"), ("d", "b")] and unstable
    assert small_star("d", ["a"]) == ([("d", "a")], False)


def _components_by_star_rounds(edges, rounds):
    """The Beam plan of DedupNearMinHash in plain Python: (member -> rep, unstable per round)."""
    history = []
    for _ in range(rounds):
        neighbours = defaultdict(list)
        for u, v in edges:
            neighbours[u].append(v)
            neighbours[v].append(u)
        large, large_unstable = [], 0
        for node, around in neighbours.items():
            links, unstable = large_star(node, around)
            large += links
            large_unstable += unstable
        smaller = defaultdict(list)
        for u, v in large:
            smaller[u].append(v)
        edges, small_unstable = [], 0
        for node, below in smaller.items():
            links, unstable = small_star(node, below)
            edges += links
            small_unstable += unstable
        history.append([large_unstable, small_unstable])
    reps = {}
    for u, v in edges:
        reps[u] = min(reps.get(u, v), v)
    return reps, history


def _union_find_minimum(edges):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        a, b = find(u), find(v)
        parent[max(a, b)] = min(a, b)
    return {x: find(x) for x in list(parent) if find(x) != x}


def test_star_rounds_equal_union_find_on_random_graphs():
    rng = random.Random(3)
    for trial in range(40):
        n = rng.randint(2, 60)
        ids = [f"n{i:03d}" for i in range(n)]
        edges = {tuple(sorted(rng.sample(ids, 2), reverse=True)) for _ in range(rng.randint(1, 2 * n))}
        if trial % 4 == 0:  # a long path in shuffled id order
            order = rng.sample(ids, n)
            edges = {tuple(sorted(pair, reverse=True)) for pair in zip(order, order[1:])}
        reps, history = _components_by_star_rounds(sorted(edges), 12)
        assert history[-1] == [0, 0], history
        assert reps == _union_find_minimum(edges)


def test_unconverged_rounds_are_safe():
    """Too few rounds on long paths: reported unstable, every drop points to a smaller id of the
    same component, and following duplicate_of always ends at a kept id (the minimum is kept)."""
    ids = [f"p{i:03d}" for i in range(200)]
    for order in (ids, random.Random(5).sample(ids, len(ids))):
        edges = [tuple(sorted(pair, reverse=True)) for pair in zip(order, order[1:])]
        reps, history = _components_by_star_rounds(edges, 2)
        assert history[-1] != [0, 0] and set(reps.values()) != {"p000"}
        kept = set(ids) - set(reps)
        assert "p000" in kept
        for member, rep in reps.items():
            assert rep < member
            while rep in reps:
                rep = reps[rep]
            assert rep in kept
        reps, history = _components_by_star_rounds(edges, 12)
        assert history[-1] == [0, 0] and set(reps.values()) == {"p000"}


def test_duplicate_groups_combine_fn():
    fn = DuplicateGroupsCombineFn(top=2)
    empty = fn.extract_output(fn.create_accumulator())
    assert empty == {
        "groups": 0, "dropped": 0, "guarded": 0, "oversized": 0, "size_histogram": {}, "largest": [],
    }
    summaries = [
        GroupSummary("b", 3, 2, sample=("b", "x", "y")),
        GroupSummary("a", 3, 1, guarded=1, sample=("a", "p", "q")),
        GroupSummary("z", 5, 4, oversized=True, sample=("z",)),
        GroupSummary("c", 2, 1, sample=("c", "d")),
    ]
    whole = fn.create_accumulator()
    for summary in summaries:
        whole = fn.add_input(whole, summary)
    parts = []
    for chunk in (summaries[:1], summaries[1:3], summaries[3:], []):
        acc = fn.create_accumulator()
        for summary in chunk:
            acc = fn.add_input(acc, summary)
        parts.append(acc)
    expected = {
        "groups": 4, "dropped": 8, "guarded": 1, "oversized": 1,
        "size_histogram": {"2": 1, "3": 2, "5": 1},
        "largest": [
            {"kept": "z", "size": 5, "ids": ["z"], "oversized": True},
            {"kept": "a", "size": 3, "ids": ["a", "p", "q"], "oversized": False},
        ],
    }
    assert fn.extract_output(whole) == expected
    assert fn.extract_output(fn.merge_accumulators(parts)) == expected
    assert fn.extract_output(fn.merge_accumulators(parts[::-1])) == expected


# ---------------------------------------------------------------------------------------------
# Pipelines


def _project(record):
    return record["id"], record.get(schema.DROP_REASON), record.get(schema.DUPLICATE_OF)


def _error_reason(error):
    return error["source"], error["reason"]


def test_dedup_exact_pipeline():
    records = [
        {"id": "b", "text": "Hello  World"},
        {"id": "a", "text": "hello world\n"},
        {"id": "c", "text": "HELLO WORLD"},
        {"id": "d", "text": "something else"},
        {"id": "e", "text": "hello world", schema.DROP_REASON: schema.TOO_SHORT},
        {"id": "f", "text": 123},
    ]

    def check_stats(stats):
        assert len(stats) == 1
        assert stats[0] == {
            "normalization": {"nfkc": True, "casefold": True, "collapse_whitespace": True},
            "records": 6, "eligible": 4, "errors": 1,
            "exact_duplicates": 2, "duplicate_groups": 1, "group_size_histogram": {"3": 1},
            "largest_groups": [{"kept": "a", "size": 3, "ids": ["a", "b", "c"]}],
        }

    with local_pipeline() as p:
        out = p | beam.Create(records) | DedupExact(ExactDedupConfig())
        assert_that(
            out["records"] | beam.Map(_project),
            equal_to([
                ("a", None, None), ("b", "exact_duplicate", "a"), ("c", "exact_duplicate", "a"),
                ("d", None, None), ("e", "too_short", None),
            ]),
        )
        assert_that(
            out["errors"] | "Reason" >> beam.Map(_error_reason),
            equal_to([("winnow.dedup", "exact_dedup_failed: TypeError")]),
            label="CheckErrors",
        )
        assert_that(out["stats"], check_stats, label="CheckStats")


def _chain_records():
    """a = X+Y, b = Y+Z, c = Z+W: J(a, b) = J(b, c) = 196/446 = 0.44, J(a, c) = 0."""
    part = {name: [f"{name}{i}" for i in range(size)] for name, size in (("x", 50), ("y", 200), ("z", 200), ("w", 50))}
    return [
        {"id": "a", "text": " ".join(part["x"] + part["y"])},
        {"id": "b", "text": " ".join(part["y"] + part["z"])},
        {"id": "c", "text": " ".join(part["z"] + part["w"])},
        {"id": "d", "text": " ".join(f"other{i}" for i in range(300))},
        {"id": "e", "text": " ".join(part["x"] + part["y"]), schema.DROP_REASON: schema.EXACT_DUPLICATE},
        {"id": "f", "text": None},
    ]


CHAIN = dict(threshold=0.3, bands=64, rows=2, cc_rounds=2)


def _check_near_stats(expected):
    """A matcher: the one stats dict has the ``expected`` entries and serializes to JSON."""

    def check(stats):
        (one,) = stats
        assert {key: one[key] for key in expected} == expected
        assert (one["records"], one["eligible"], one["errors"]) == (6, 4, 1)
        assert (one["config"]["bands"], one["config"]["rows"]) == (64, 2)
        json.dumps(one)

    return check


def test_dedup_near_chain_pipeline():
    """a~b, b~c, a!~c: one cluster, a kept, b and c dropped, whether links are verified or not;
    links below a higher threshold are rejected; the guard keeps c (no link of its own to a)."""
    transitive = [("a", None, None), ("b", "near_duplicate", "a"), ("c", "near_duplicate", "a"),
                  ("d", None, None), ("e", "exact_duplicate", None)]
    guarded = [("a", None, None), ("b", "near_duplicate", "a"), ("c", None, None),
               ("d", None, None), ("e", "exact_duplicate", None)]
    nothing = [("a", None, None), ("b", None, None), ("c", None, None), ("d", None, None), ("e", "exact_duplicate", None)]
    chain = {"clusters": 1, "cluster_size_histogram": {"3": 1}, "candidate_links": 2,
             "connected_components": {"rounds": 2, "unstable_nodes_per_round": [[1, 0], [0, 0]], "converged": True}}
    cases = {
        "Transitive": (MinHashConfig(verify=False, **CHAIN), transitive, {
            **chain, "near_duplicates": 2, "verified_links": 2, "kept_by_guard": 0, "oversized_clusters": 0,
            "largest_clusters": [{"kept": "a", "size": 3, "ids": ["a", "b", "c"], "oversized": False}]}),
        "Verified": (MinHashConfig(verify=True, **CHAIN), transitive, {
            **chain, "near_duplicates": 2, "verified_links": 2, "kept_by_guard": 0}),
        "Rejected": (MinHashConfig(verify=True, **{**CHAIN, "threshold": 0.6}), nothing, {
            "near_duplicates": 0, "candidate_links": 2, "verified_links": 0, "clusters": 0, "largest_clusters": [],
            "connected_components": {"rounds": 2, "unstable_nodes_per_round": [[0, 0], [0, 0]], "converged": True}}),
        "Guarded": (MinHashConfig(verify=True, max_cluster_size=2, **CHAIN), guarded, {
            **chain, "near_duplicates": 1, "kept_by_guard": 1, "oversized_clusters": 1,
            "largest_clusters": [{"kept": "a", "size": 3, "ids": ["a", "b", "c"], "oversized": True}]}),
    }
    with local_pipeline() as p:
        records = p | beam.Create(_chain_records())
        for name, (config, expected, stats) in cases.items():
            out = records | name >> DedupNearMinHash(config)
            assert_that(out["records"] | f"Project{name}" >> beam.Map(_project), equal_to(expected), label=f"Records{name}")
            assert_that(out["stats"], _check_near_stats(stats), label=f"Stats{name}")
            assert_that(
                out["errors"] | f"Reason{name}" >> beam.Map(_error_reason),
                equal_to([("winnow.dedup", "minhash_dedup_failed: TypeError")]),
                label=f"Errors{name}",
            )


def _write_chain_outputs(pipeline, out_dir):
    out = pipeline | beam.Create(_chain_records()) | DedupNearMinHash(MinHashConfig(**CHAIN))
    for name in ("records", "stats", "errors"):
        (
            out[name]
            | f"Json{name}" >> beam.Map(json.dumps, sort_keys=True)
            | f"Write{name}" >> beam.io.WriteToText(str(out_dir / name))
        )


def _read_lines(out_dir):
    return {name: sorted(line for f in out_dir.glob(f"{name}*") for line in f.read_text().splitlines())
            for name in ("records", "stats", "errors")}


def test_dedup_near_same_on_multiprocess_runner(tmp_path):
    """In-memory vs two SDK worker processes (everything pickles; conftest sets PYTHONPATH)."""
    with local_pipeline() as p:
        _write_chain_outputs(p, tmp_path / "memory")
    with local_pipeline(direct_running_mode="multi_processing", direct_num_workers=2) as p:
        _write_chain_outputs(p, tmp_path / "processes")
    in_memory, multi = _read_lines(tmp_path / "memory"), _read_lines(tmp_path / "processes")
    assert multi == in_memory
    records = sorted(_project(json.loads(line)) for line in in_memory["records"])
    assert records == [("a", None, None), ("b", "near_duplicate", "a"), ("c", "near_duplicate", "a"),
                       ("d", None, None), ("e", "exact_duplicate", None)]
    assert len(in_memory["stats"]) == 1 and len(in_memory["errors"]) == 1
