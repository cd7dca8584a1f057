"""Persistent dedup indexes: the kept documents of earlier runs, to deduplicate new data against.

An index is a directory on any Beam filesystem::

    index.json                  the options its rows depend on, and its complete shards
    shard-<run>-NNNNN.parquet   one per work unit of a run that wrote to it: id, exact_hash
                                (fixed_size_binary(16)) and, when MinHash ran, signature
                                (fixed_size_binary(4 num_perm): little-endian uint32s) and band_keys
                                (fixed_size_binary(8 bands): little-endian uint64s, the writing run's
                                bands, named in the schema metadata ``winnow.band_rows`` =
                                "bands,rows") of each kept record; shards of earlier versions, with
                                fixed_size_list columns, are read as well

``--dedup-index DIR`` (``winnow dedup --index DIR``) writes the run's kept records as new shards
and then lists them in ``index.json``: a later run appends, and a killed run leaves only unlisted
shards, which are ignored. ``--against DIR`` (repeatable) makes the indexed documents take part in
the run's exact groups and LSH buckets, first in the order: a record that duplicates one is
dropped with ``winnow_duplicate_of`` = the indexed document's id and ``winnow_duplicate_source`` =
the index. Indexed documents are never read as text and never selected, and never linked to one
another (each was kept by the run that indexed it). So an indexed row matters only when it shares
an exact hash or an LSH band key with one of the run's records: the run's keys form a key filter
(``dedup.KeyFilterCombineFn``, a side input), and each index shard yields only the rows that hit it.

The options that must match between an index and a run are stored and checked before the run: the
exact key's normalization, and for near duplicates the signature's num_perm, shingle, shingle
kind, hash, permutation and seed. LSH bands are derived from the signatures for the threshold
the run asks, so threshold and bands may differ: a run whose bands are a shard's reads its stored
band keys, any other computes them from its signatures.
"""

import uuid

from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import features
from winnow.pipelines.options import UsageError
from winnow.transforms import dedup

MANIFEST = "index.json"
SIGNATURE_OPTIONS = ("num_perm", "shingle", "shingle_kind", "shingle_hash", "permutation", "seed")


def index_options(scoring: dict) -> dict:
    """The options an index's rows depend on, from a features manifest's scoring options (no MinHash: exact only)."""
    minhash = scoring.get("minhash")
    return {"normalization": scoring["exact"], "signature": None if minhash is None else {name: minhash[name] for name in SIGNATURE_OPTIONS}}


def read_manifest(directory: str) -> dict | None:
    path = FileSystems.join(directory, MANIFEST)
    return features.read_json(path) if features.exists(path) else None


def check_against(directory: str, options: dict) -> dict:
    """The manifest of an ``--against`` index, after checking the run can use it.

    Raises:
        UsageError: no index there, or one whose options differ from the run's (naming the option).
    """
    manifest = read_manifest(directory)
    if manifest is None:
        raise UsageError(f"--against {directory}: no {MANIFEST}; not a winnow dedup index")
    if manifest["options"]["normalization"] != options["normalization"]:
        raise UsageError(f"--against {directory}: the index's exact-key normalization {manifest['options']['normalization']} differs from this run's")
    if options["signature"] is not None:
        theirs = manifest["options"]["signature"]
        if theirs is None:
            raise UsageError(f"--against {directory}: the index has no MinHash signatures (written without --dedup minhash)")
        for name in SIGNATURE_OPTIONS:
            if theirs[name] != options["signature"][name]:
                raise UsageError(f"--against {directory}: the index's MinHash {name} is {theirs[name]!r}, this run's {options['signature'][name]!r}")
    return manifest


def against_units(directories: list[str], options: dict) -> dict[int, str]:
    """``{index unit: shard path}`` of every listed shard of the ``--against`` indexes, in order."""
    units = {}
    for k, directory in enumerate(directories):
        manifest = check_against(directory, options)
        for s, shard in enumerate(manifest["shards"]):
            units[dedup.index_unit(k, s)] = FileSystems.join(directory, shard["name"])
    return units


def prepare_output(directory: str, options: dict) -> str:
    """Check (or create) the index a run writes to; returns the run's shard name prefix.

    Raises:
        UsageError: an existing index with other options.
    """
    manifest = read_manifest(directory)
    if manifest is not None and manifest["options"] != options:
        raise UsageError(f"--dedup-index {directory}: the index was written with other options ({manifest['options']}); "
                         "write to a new index")
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    return f"shard-{uuid.uuid4().hex[:12]}"


def shard_path(directory: str, prefix: str, unit: int) -> str:
    return FileSystems.join(directory, f"{prefix}-{unit:05d}.parquet")


def publish(directory: str, options: dict, prefix: str, rows: dict[int, int]) -> None:
    """List the run's shards (``{unit: rows}``, empty ones left out) in ``index.json``: the append is complete."""
    manifest = read_manifest(directory) or {"options": options, "shards": []}
    manifest["shards"] += [{"name": f"{prefix}-{unit:05d}.parquet", "rows": n} for unit, n in sorted(rows.items()) if n]
    features.write_json(FileSystems.join(directory, MANIFEST), manifest)
