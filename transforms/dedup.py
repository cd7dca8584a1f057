"""Exact and near-duplicate removal: normalized-text hashing, and MinHash LSH clusters.

Exact (``DedupExact``): the key of a record is ``blake2b-128(normalize_text(text))`` (NFKC, case
folding, whitespace collapsing; each switchable in ``ExactDedupConfig``). Per key the smallest
id is kept; every other record is dropped with ``drop_reason = "exact_duplicate"`` and
``duplicate_of`` = the kept id.

Near (``DedupNearMinHash``), four stages as in datatrove's MinHash dedup:

1. signatures: ``minhash.minhash_signatures`` per batch (``BatchElements``), and the LSH bucket
   keys of each document (``minhash.band_keys``: band index + the band's raw values);
2. buckets -> links: documents sharing a bucket are linked by star edges to the bucket's
   smallest id (a bucket of k documents gives k - 1 links, not k(k-1)/2). With ``verify``
   (default) a link is kept only if the estimated Jaccard of its two signatures
   (``minhash.estimate_jaccard``) is ``>= threshold``: a member that only collided with the
   bucket's representative is not dropped for that link alone (LSH false positives removed);
3. connected components of the links, computed by Beam stages only (below);
4. filter: the smallest id of a component is its representative and is kept; every other
   member is dropped with ``drop_reason = "near_duplicate"``, ``duplicate_of`` = representative.
   A chain A~B, B~C with A !~ C is one cluster: A kept, B and C dropped. Guard: in a cluster
   larger than ``max_cluster_size`` (a run-away chain, or a very common template) only members
   with a link of their own to the representative are dropped; the others are kept, and the
   stats report every oversized cluster.

Connected components (Kiveris, Lattanzi, Mirrokni, Rastogi & Vassilvitskii 2014, "Connected
Components in MapReduce and Beyond"). Edges are pairs ``(u, v)`` with ``u > v``; ``G(u)`` is the
neighbour set of ``u`` and ``m(u) = min(G(u) | {u})``. One round is

- large-star: every node ``u`` links each neighbour ``v > u`` to ``m(u)``;
- small-star: every node ``u`` links itself and each neighbour ``v < u`` to
  ``m = min({v in G(u): v < u} | {u})``.

Both keep each component connected and inside its component, and every link points from a
larger to a smaller id. A node is *unstable* when large-star would change its edges (it has a
smaller and a larger neighbour) or small-star would (two or more smaller neighbours). If no node
is unstable in either operation of a round, the graph is a fixpoint, and then it is one star per
component whose centre is the component's smallest id. Beam has no loops, so ``cc_rounds``
rounds (default 12) are unrolled; the stats report the unstable nodes per round and
``converged`` (last round stable). Bound: Kiveris et al. show O(log^2 n) rounds for n nodes.
Measured by running the same two operations in plain Python on test graphs: the slowest
shape tried, a path in sorted id order, needs about log2(n) working rounds (10 for 1,000
nodes, 14 for 10,000), so 12 rounds settle any component up to a ~3,000-document chain; LSH
star links give shallow graphs (2 working rounds on the benchmark). If the rounds run out the
result is still safe: each node's ``duplicate_of`` is its smallest remaining neighbour, a
smaller id in the same component, so following ``duplicate_of`` ends at a kept record and no
component loses all its records; some components keep more than one record
(under-deduplication, never over-), and ``converged`` is false.

Scale: no stage gathers all documents, signatures or edges. The groupings are per bucket, per
link endpoint (its signature and links: two keyed joins verify a link), per node (its
neighbours), per representative (its members, streamed) and per id (a record and its
decision, joined back by a keyed ``CoGroupByKey``, not a side input). The stats are
fixed-size combines (counts, histogram, top-k).

Records already dropped by an earlier stage pass through unchanged and take no part. Record
ids are assumed unique.
"""

import dataclasses
import hashlib
import heapq
from collections import Counter

import apache_beam as beam
import numpy as np

from winnow.transforms import schema
from winnow.transforms.minhash import (
    MinHashConfig,
    band_keys,
    estimate_jaccard,
    minhash_signatures,
    permutation_params,
)
from winnow.transforms.text import normalize_text

__all__ = [
    "DedupExact",
    "DedupNearMinHash",
    "DuplicateGroupsCombineFn",
    "ExactDedupConfig",
    "GroupSummary",
    "MinHashConfig",
    "check_record",
    "exact_key",
    "large_star",
    "small_star",
    "star_links",
]

NAMESPACE = "winnow.dedup"  # counters, and the "source" of error records
TOP_GROUPS = 10  # largest groups/clusters listed in the stats
GROUP_SAMPLE = 10  # smallest member ids listed per largest group
MIN_BATCH, MAX_BATCH = 16, 256  # BatchElements bounds for the signature stage
_BUCKETS, _RECORDS, _SUMMARIES, _UNSTABLE = "buckets", "records", "summaries", "unstable"


@dataclasses.dataclass(frozen=True)
class ExactDedupConfig:
    """Which normalizations the exact key applies (``text.normalize_text``); all on by default."""

    nfkc: bool = True
    casefold: bool = True
    collapse_whitespace: bool = True

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, bool):
                raise TypeError(f"{field.name}={value!r}; expected a bool")


# ----------------------------------------------------------------------------------------------
# Pure core (no Beam)


def check_record(record: dict) -> None:
    """Raise TypeError unless ``record`` has a str ``id`` and a str ``text``."""
    if not isinstance(record, dict):
        raise TypeError(f"record is {type(record).__name__}, expected dict")
    for field in (schema.ID, schema.TEXT):
        if not isinstance(record.get(field), str):
            raise TypeError(f"{field} is {type(record.get(field)).__name__}, expected str")


def exact_key(text: str, config: ExactDedupConfig) -> bytes:
    """16-byte blake2b digest of the normalized text: equal keys = equal normalized texts."""
    normalized = normalize_text(text, config.nfkc, config.casefold, config.collapse_whitespace)
    return hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def star_links(ids) -> list[tuple[str, str]]:
    """Links ``(id, min(ids))`` of a bucket's members; two passes over a re-iterable ``ids``."""
    smallest = min(ids)
    return [(i, smallest) for i in ids if i != smallest]


def large_star(node: str, neighbours) -> tuple[list[tuple[str, str]], bool]:
    """Large-star at ``node``: links ``(v, m(node))`` for every neighbour ``v > node``.

    Returns:
        (links as (larger, smaller) pairs, unstable: node has a smaller and a larger neighbour).
    """
    distinct = set(neighbours)
    centre = min(distinct | {node})
    larger = [v for v in distinct if v > node]
    return [(v, centre) for v in larger], bool(larger) and centre < node


def small_star(node: str, smaller_neighbours) -> tuple[list[tuple[str, str]], bool]:
    """Small-star at ``node``: links ``node`` and every neighbour ``v < node`` to the smallest.

    Returns:
        (links as (larger, smaller) pairs, unstable: two or more smaller neighbours).
    """
    distinct = set(smaller_neighbours)
    centre = min(distinct | {node})
    return [(v, centre) for v in distinct | {node} if v != centre], len(distinct) > 1


@dataclasses.dataclass(frozen=True)
class GroupSummary:
    """One duplicate group (exact key) or cluster (component): the kept id and its members.

    ``sample`` holds the smallest member ids (kept id included), at most ``GROUP_SAMPLE``;
    ``guarded`` counts members an oversized cluster kept.
    """

    kept: str
    size: int
    dropped: int
    guarded: int = 0
    oversized: bool = False
    sample: tuple = ()


class DuplicateGroupsCombineFn(beam.CombineFn):
    """GroupSummary -> {"groups", "dropped", "guarded", "oversized", "size_histogram",
    "largest"}; fixed-size accumulator: counts, a size histogram, the ``top`` largest groups
    ordered by (size descending, kept id)."""

    def __init__(self, top: int = TOP_GROUPS):
        self._top = top

    def create_accumulator(self):
        return {"groups": 0, "dropped": 0, "guarded": 0, "oversized": 0}, Counter(), []

    def add_input(self, accumulator, summary):
        counts, sizes, largest = accumulator
        counts["groups"] += 1
        counts["dropped"] += summary.dropped
        counts["guarded"] += summary.guarded
        counts["oversized"] += int(summary.oversized)
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
            "largest": [
                {"kept": s.kept, "size": s.size, "ids": list(s.sample), "oversized": s.oversized}
                for s in largest
            ],
        }

    def _keep_largest(self, summaries):
        return heapq.nsmallest(self._top, summaries, key=lambda s: (-s.size, s.kept))


def _error(record, exc: Exception, method: str) -> dict:
    return {
        "source": NAMESPACE,
        "position": None,
        "reason": f"{method}_failed: {type(exc).__name__}",
        "raw": repr(record)[:1000],
    }


# ----------------------------------------------------------------------------------------------
# Beam wrappers


def _stats(pipeline, build, groups, records, eligible, errors, **extra):
    """One stats dict from singleton side inputs (counts and the group summary)."""

    def count(label, pcoll):
        return beam.pvalue.AsSingleton(pcoll | label >> beam.combiners.Count.Globally())

    return (
        pipeline
        | "StatsSeed" >> beam.Create([None])
        | "BuildStats"
        >> beam.Map(
            build,
            groups=beam.pvalue.AsSingleton(groups),
            records=count("CountRecords", records),
            eligible=count("CountEligible", eligible),
            errors=count("CountErrors", errors),
            **extra,
        )
    )


class _SplitEligibleFn(beam.DoFn):
    """record -> main: eligible records; "dropped": records an earlier stage dropped."""

    def setup(self):
        self._passed = beam.metrics.Metrics.counter(NAMESPACE, "already_dropped")

    def process(self, record):
        if isinstance(record, dict) and not schema.is_eligible(record):
            self._passed.inc()
            yield beam.pvalue.TaggedOutput("dropped", record)
        else:
            yield record


class _ExactKeyFn(beam.DoFn):
    """record -> (key, record); a record without str id/text -> errors."""

    def __init__(self, config: ExactDedupConfig):
        self._config = config

    def setup(self):
        self._invalid = beam.metrics.Metrics.counter(NAMESPACE, "invalid_record")

    def process(self, record):
        try:
            check_record(record)
            key = exact_key(record[schema.TEXT], self._config)
        except Exception as exc:  # a bad record goes to errors, never crashes the job
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(schema.ERRORS_TAG, _error(record, exc, "exact_dedup"))
            return
        yield key, record


class _DropExactFn(beam.DoFn):
    """(key, {"record": [...], "kept": [id]}) -> records, duplicates dropped; "summaries"."""

    def setup(self):
        self._dropped = beam.metrics.Metrics.counter(NAMESPACE, schema.EXACT_DUPLICATE)
        self._kept = beam.metrics.Metrics.counter(NAMESPACE, "kept")

    def process(self, element):
        _, grouped = element
        (kept,) = grouped["kept"]
        size, sample = 0, []
        for record in grouped["record"]:  # streamed once: no group is held in memory
            size += 1
            sample = heapq.nsmallest(GROUP_SAMPLE, sample + [record[schema.ID]])
            if record[schema.ID] == kept:
                self._kept.inc()
                yield record
            else:
                self._dropped.inc()
                yield schema.drop(record, schema.EXACT_DUPLICATE, **{schema.DUPLICATE_OF: kept})
        if size > 1:
            yield beam.pvalue.TaggedOutput(_SUMMARIES, GroupSummary(kept, size, size - 1, sample=tuple(sample)))


def _exact_stats(_, groups, records, eligible, errors, config):
    return {
        "normalization": dataclasses.asdict(config),
        "records": records,
        "eligible": eligible,
        "errors": errors,
        "exact_duplicates": groups["dropped"],
        "duplicate_groups": groups["groups"],
        "group_size_histogram": groups["size_histogram"],
        "largest_groups": [{k: g[k] for k in ("kept", "size", "ids")} for g in groups["largest"]],
    }


class DedupExact(beam.PTransform):
    """Drop records whose normalized text equals that of a record with a smaller id.

    ``expand(records)`` returns ``{"records": every input record once (duplicates dropped with
    duplicate_of), "stats": one dict, "errors": records without a str id/text}``.
    """

    def __init__(self, config: ExactDedupConfig = ExactDedupConfig()):
        super().__init__()
        if not isinstance(config, ExactDedupConfig):
            raise TypeError(f"config={config!r}; expected an ExactDedupConfig")
        self._config = config

    def expand(self, records):
        split = records | "SplitEligible" >> beam.ParDo(_SplitEligibleFn()).with_outputs("dropped", main="eligible")
        keyed = split.eligible | "KeyByText" >> beam.ParDo(_ExactKeyFn(self._config)).with_outputs(
            schema.ERRORS_TAG, main="keyed"
        )
        # key, record
        kept = (
            keyed.keyed
            | "KeyToId" >> beam.MapTuple(lambda key, record: (key, record[schema.ID]))
            | "SmallestId" >> beam.CombinePerKey(min)
        )
        # key, kept id: a fixed-size combine, so the join below streams each group once
        joined = (
            {"record": keyed.keyed, "kept": kept}
            | "JoinKept" >> beam.CoGroupByKey()
            | "DropDuplicates" >> beam.ParDo(_DropExactFn()).with_outputs(_SUMMARIES, main="records")
        )
        out = (joined.records, split.dropped) | "MergeRecords" >> beam.Flatten()
        groups = joined[_SUMMARIES] | "SummarizeGroups" >> beam.CombineGlobally(DuplicateGroupsCombineFn())
        stats = _stats(
            records.pipeline,
            _exact_stats,
            groups,
            records=records,
            eligible=keyed.keyed,
            errors=keyed[schema.ERRORS_TAG],
            config=self._config,
        )
        return {"records": out, "stats": stats, "errors": keyed[schema.ERRORS_TAG]}


class _SignatureFn(beam.DoFn):
    """batch of records -> (id, signature bytes); "records": (id, record); "buckets": (key, id).

    Signatures travel as little-endian bytes (``np.frombuffer`` restores the uint32 array):
    Beam's coder pickles a numpy array, about 18x slower per element.
    """

    def __init__(self, config: MinHashConfig, bands: int, rows: int):
        self._config, self._bands, self._rows = config, bands, rows

    def setup(self):
        self._params = permutation_params(self._config.num_perm, self._config.seed, self._config.permutation)
        self._invalid = beam.metrics.Metrics.counter(NAMESPACE, "invalid_record")
        self._signed = beam.metrics.Metrics.counter(NAMESPACE, "signatures")

    def process(self, batch):
        valid = []
        for record in batch:
            try:
                check_record(record)
            except TypeError as exc:  # a bad record goes to errors, never crashes the job
                self._invalid.inc()
                yield beam.pvalue.TaggedOutput(schema.ERRORS_TAG, _error(record, exc, "minhash_dedup"))
                continue
            valid.append(record)
        if not valid:
            return
        # (len(valid), num_perm) uint32: one vectorized pass per batch
        sigs = minhash_signatures([r[schema.TEXT] for r in valid], self._config, self._params)
        keys = band_keys(sigs, self._bands, self._rows)
        self._signed.inc(len(valid))
        little_endian = sigs.astype("<u4", copy=False)  # once per batch, not per document
        for record, sig, doc_keys in zip(valid, little_endian, keys):
            doc_id = record[schema.ID]
            yield doc_id, sig.tobytes()
            yield beam.pvalue.TaggedOutput(_RECORDS, (doc_id, record))
            for key in doc_keys:
                yield beam.pvalue.TaggedOutput(_BUCKETS, (key, doc_id))


def _bucket_links(element):
    _, ids = element
    return star_links(ids)


class _StarFn(beam.DoFn):
    """(node, neighbours) -> links (larger, smaller); "unstable": (round, op) per unstable node."""

    def __init__(self, operation, round_index: int, op: str):
        self._operation, self._round, self._op = operation, round_index, op

    def process(self, element):
        node, neighbours = element
        links, unstable = self._operation(node, neighbours)
        yield from links
        if unstable:
            yield beam.pvalue.TaggedOutput(_UNSTABLE, (self._round, self._op))


def _both_directions(edge):
    larger, smaller = edge
    return [(larger, smaller), (smaller, larger)]


def _one_signature(signatures) -> bytes:
    """The signature of an id: the smallest if the id was (wrongly) not unique."""
    return min(signatures)


def _link_with_signature(element):
    """(u, {"signature", "link": [v, ...]}) -> (v, (u, signature of u)) per link u -> v."""
    larger, grouped = element
    if not grouped["link"]:
        return []
    signature = _one_signature(grouped["signature"])
    return [(smaller, (larger, signature)) for smaller in grouped["link"]]


class _VerifyLinksFn(beam.DoFn):
    """(v, {"signature", "link": [(u, signature of u), ...]}) -> links (u, v) with J >= threshold."""

    def __init__(self, threshold: float):
        self._threshold = threshold

    def process(self, element):
        smaller, grouped = element
        if not grouped["link"]:
            return
        signature = np.frombuffer(_one_signature(grouped["signature"]), dtype="<u4")
        for larger, other in grouped["link"]:  # streamed once
            if estimate_jaccard(np.frombuffer(other, dtype="<u4"), signature) >= self._threshold:
                yield larger, smaller


class _DecideClusterFn(beam.DoFn):
    """(rep, {"member", "size", "direct"}) -> (member, rep) to drop; "summaries": GroupSummary."""

    def __init__(self, max_cluster_size: int):
        self._max_cluster_size = max_cluster_size

    def process(self, element):
        rep, grouped = element
        if not grouped["member"]:
            return
        (members,) = grouped["size"]
        oversized = members + 1 > self._max_cluster_size
        direct = set(grouped["direct"]) if oversized else set()  # the representative's degree
        dropped, guarded, sample = 0, 0, []
        for member in grouped["member"]:  # streamed once
            sample = heapq.nsmallest(GROUP_SAMPLE - 1, sample + [member])
            if oversized and member not in direct:
                guarded += 1
                continue
            dropped += 1
            yield member, rep
        yield beam.pvalue.TaggedOutput(
            _SUMMARIES, GroupSummary(rep, members + 1, dropped, guarded, oversized, (rep, *sample))
        )


class _DropNearFn(beam.DoFn):
    """(id, {"record": [record], "rep": [rep] or []}) -> the record, dropped if it has a rep."""

    def setup(self):
        self._dropped = beam.metrics.Metrics.counter(NAMESPACE, schema.NEAR_DUPLICATE)
        self._kept = beam.metrics.Metrics.counter(NAMESPACE, "kept")

    def process(self, element):
        _, grouped = element
        reps = list(grouped["rep"])
        for record in grouped["record"]:
            if reps:
                self._dropped.inc()
                yield schema.drop(record, schema.NEAR_DUPLICATE, **{schema.DUPLICATE_OF: reps[0]})
            else:
                self._kept.inc()
                yield record


def _near_stats(_, groups, records, eligible, errors, config, bands, rows, unstable, candidate_links, verified_links):
    per_round = [[unstable.get((i, op), 0) for op in ("large_star", "small_star")] for i in range(config.cc_rounds)]
    return {
        "config": {**dataclasses.asdict(config), "bands": bands, "rows": rows},
        "records": records,
        "eligible": eligible,
        "errors": errors,
        "near_duplicates": groups["dropped"],
        "candidate_links": candidate_links,
        "verified_links": verified_links,
        "kept_by_guard": groups["guarded"],
        "clusters": groups["groups"],
        "cluster_size_histogram": groups["size_histogram"],
        "largest_clusters": groups["largest"],
        "oversized_clusters": groups["oversized"],
        "connected_components": {
            "rounds": config.cc_rounds,
            "unstable_nodes_per_round": per_round,
            "converged": per_round[-1] == [0, 0],
        },
    }


class DedupNearMinHash(beam.PTransform):
    """Drop near-duplicates: MinHash LSH links, connected components, smallest id kept.

    ``expand(records)`` returns ``{"records": every input record once (near-duplicates dropped
    with duplicate_of = the cluster's representative), "stats": one dict, "errors": records
    without a str id/text}``.
    """

    def __init__(self, config: MinHashConfig = MinHashConfig()):
        super().__init__()
        if not isinstance(config, MinHashConfig):
            raise TypeError(f"config={config!r}; expected a MinHashConfig")
        self._config = config
        self._bands, self._rows = config.band_rows  # computed once, before the pipeline runs

    def expand(self, records):
        config = self._config
        split = records | "SplitEligible" >> beam.ParDo(_SplitEligibleFn()).with_outputs("dropped", main="eligible")
        signed = (
            split.eligible
            | "Batch" >> beam.BatchElements(min_batch_size=MIN_BATCH, max_batch_size=MAX_BATCH)
            | "Sign"
            >> beam.ParDo(_SignatureFn(config, self._bands, self._rows)).with_outputs(
                _RECORDS, _BUCKETS, schema.ERRORS_TAG, main="signatures"
            )
        )
        # bucket key, id -> (id, smallest id in its bucket); a pair sharing k bands is linked
        # k times, so duplicates are removed before the rounds multiply them
        candidates = (
            signed[_BUCKETS]
            | "GroupBuckets" >> beam.GroupByKey()
            | "BucketLinks" >> beam.FlatMap(_bucket_links)
            | "DistinctLinks" >> beam.Distinct()
        )
        if config.verify:
            # links whose two signatures agree on >= threshold of their entries; two keyed
            # joins bring both signatures to each link (no side input)
            with_larger = (
                {"signature": signed.signatures, "link": candidates}
                | "JoinLargerSignature" >> beam.CoGroupByKey()
                | "KeyBySmaller" >> beam.FlatMap(_link_with_signature)
            )
            links = (
                {"signature": signed.signatures, "link": with_larger}
                | "JoinSmallerSignature" >> beam.CoGroupByKey()
                | "VerifyLinks" >> beam.ParDo(_VerifyLinksFn(config.threshold))
            )
        else:
            links = candidates
        edges, unstable = links, []
        for i in range(config.cc_rounds):  # unrolled: Beam graphs have no loops
            large = (
                edges
                | f"Undirect{i}" >> beam.FlatMap(_both_directions)
                | f"GroupNeighbours{i}" >> beam.GroupByKey()
                | f"LargeStar{i}" >> beam.ParDo(_StarFn(large_star, i, "large_star")).with_outputs(_UNSTABLE, main="links")
            )
            small = (
                large.links
                | f"GroupSmaller{i}" >> beam.GroupByKey()
                | f"SmallStar{i}" >> beam.ParDo(_StarFn(small_star, i, "small_star")).with_outputs(_UNSTABLE, main="links")
            )
            edges = small.links
            unstable += [large[_UNSTABLE], small[_UNSTABLE]]
        # member, representative (its smallest neighbour: the component minimum once converged)
        reps = edges | "Representative" >> beam.CombinePerKey(min)
        # rep, member
        members = reps | "KeyMemberByRep" >> beam.MapTuple(lambda member, rep: (rep, member))
        sizes = members | "ClusterSize" >> beam.combiners.Count.PerKey()
        # rep, member with a link of its own to rep (read for oversized clusters only)
        direct = links | "KeyLinkBySmaller" >> beam.MapTuple(lambda larger, smaller: (smaller, larger))
        decided = (
            {"member": members, "size": sizes, "direct": direct}
            | "JoinCluster" >> beam.CoGroupByKey()
            | "DecideClusters" >> beam.ParDo(_DecideClusterFn(config.max_cluster_size)).with_outputs(_SUMMARIES, main="drops")
        )
        kept_or_dropped = (
            {"record": signed[_RECORDS], "rep": decided.drops}
            | "JoinDecision" >> beam.CoGroupByKey()
            | "DropNearDuplicates" >> beam.ParDo(_DropNearFn())
        )
        out = (kept_or_dropped, split.dropped) | "MergeRecords" >> beam.Flatten()
        groups = decided[_SUMMARIES] | "SummarizeClusters" >> beam.CombineGlobally(DuplicateGroupsCombineFn())
        unstable_counts = (
            unstable
            | "FlattenUnstable" >> beam.Flatten()
            | "CountUnstable" >> beam.combiners.Count.PerElement()
            | "UnstableDict" >> beam.combiners.ToDict()
        )
        candidate_count = candidates | "CountCandidates" >> beam.combiners.Count.Globally()
        link_count = links | "CountLinks" >> beam.combiners.Count.Globally()
        stats = _stats(
            records.pipeline,
            _near_stats,
            groups,
            records=records,
            eligible=signed.signatures,
            errors=signed[schema.ERRORS_TAG],
            config=config,
            bands=self._bands,
            rows=self._rows,
            unstable=beam.pvalue.AsSingleton(unstable_counts),
            candidate_links=beam.pvalue.AsSingleton(candidate_count),
            verified_links=beam.pvalue.AsSingleton(link_count),
        )
        return {"records": out, "stats": stats, "errors": signed[schema.ERRORS_TAG]}
