"""``winnow vendi``: the Vendi score of a dataset, printed as the last line of stdout.

Embeddings come from an input field (``--embedding-field``) or, by default, from winnow's hashed
tf-idf embedding of the text (``transforms/embed.py``). The score is computed in the dual form
from a d x d Gram matrix accumulated by a CombineFn, so it runs on any runner and any size.
Records that cannot be read or embedded are counted and reported on stderr, never silently lost.
"""

import argparse
import math
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from winnow.pipelines import options, report, runner
from winnow.transforms import embed, io, vendi


def vendi_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="winnow vendi", allow_abbrev=False,
        description="Print the Vendi score (Friedman & Dieng 2023; order q, Pasarkar & Dieng 2023) of a dataset.",
        epilog="Any other --flag is a Beam pipeline option. The last line of stdout is the score.",
    )
    options.add_input_arguments(parser, "records")
    parser.add_argument("--q", type=_order, default=1.0, help="order q in [0, inf]; 'inf' for the max-eigenvalue order (default: 1)")
    parser.add_argument("--embedding-field", metavar="FIELD", help="use precomputed embeddings from this field (default: hashed tf-idf of the text)")
    parser.add_argument("--embed-dim", type=options.positive_int, metavar="D", help="embedding width of hashed tf-idf (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the embedding's sample and projection (default: %(default)s)")
    parser.add_argument("--work-dir", metavar="DIR", help="where the job leaves its result for this command to read; "
                        "must be reachable from the workers on a remote runner, e.g. gs://bucket/tmp (default: a local temp dir)")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys are the flag names); flags win")
    return parser


def _order(text: str) -> float:
    try:
        return vendi.check_order(math.inf if text.strip().lower() in ("inf", "infinity") else float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str]) -> int:
    args, beam_flags = options.parse(vendi_parser(), argv)
    read_config = options.read_config(args, "input")
    try:
        embed_config = embed.EmbedConfig(dim=args.embed_dim, seed=args.seed, embedding_field=args.embedding_field)
    except (TypeError, ValueError) as err:
        raise options.UsageError(str(err)) from None
    pipeline = runner.make_pipeline(beam_flags)
    read = pipeline | "ReadInputs" >> io.ReadDocuments(list(args.input), read_config)
    embedded = read["records"] | "Embed" >> embed.Embed(embed_config)
    scored = embedded["records"] | "Vendi" >> vendi.VendiOfRecords(embed.EMBEDDING, q=args.q)
    failed = [read["errors"], embedded["errors"], scored["errors"]] | "FlattenErrors" >> beam.Flatten()
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="winnow-vendi-")
    invalid = failed | "CountInvalid" >> beam.combiners.Count.Globally()
    runner.collect_stats({"vendi": scored["stats"], "invalid": invalid}, work_dir)
    runner.run(pipeline)
    stats_path = FileSystems.join(work_dir, report.STATS_FILE)
    result = report.read_json(stats_path)
    FileSystems.delete([stats_path])
    stats = result["vendi"]
    runner.LOG.info("vendi: %d embeddings of dimension %s; %d records invalid or without an embedding; profile %s",
                    stats["n_vectors"], stats["dim"], result["invalid"], stats["profile"])
    print(repr(float(stats["vendi_score"])))
    return 0
