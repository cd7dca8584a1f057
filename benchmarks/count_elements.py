"""Element counts per PCollection of one ``winnow select`` run, also when the run fails its accounting check.

Runs the job in this process and keeps Beam's result, then sums the runner's element-count
monitoring infos per PCollection, labelled by the transform that produces it. A PCollection that
crosses from one fused stage to the next is counted twice, by the stage that writes it and by
the stage that reads it: on a correct run its count is twice the next step's, and any excess is
what the runner lost in transit between the two stages.

Usage: ``python benchmarks/count_elements.py OUT.json -- <winnow select arguments>``
"""

import json
import pathlib
import sys

from apache_beam.metrics import monitoring_infos

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from winnow.pipelines import cli, runner  # noqa: E402


def run_keeping_result(argv: list[str]):
    """``(exit code or the error, Beam result, the pipeline)`` of ``winnow select argv``."""
    kept = {}
    original = runner.run

    def run(pipeline):
        kept["pipeline"], kept["result"] = pipeline, original(pipeline)
        return kept["result"]

    runner.run = run
    try:
        outcome = cli.main(["select", *argv])
    except runner.JobFailed as err:
        outcome = str(err)
    finally:
        runner.run = original
    return outcome, kept["result"], kept["pipeline"]


def element_counts(result, pipeline) -> dict[str, int]:
    """``{producing transform[output tag]: summed element count}`` over the run's monitoring infos."""
    producers = {}
    for transform in pipeline.to_runner_api().components.transforms.values():
        for tag, pcollection in transform.outputs.items():
            producers.setdefault(pcollection, f"{transform.unique_name}[{tag}]")
    counts = {}
    for info in result.monitoring_infos():
        if info.urn == monitoring_infos.ELEMENT_COUNT_URN:
            name = producers.get(info.labels.get("PCOLLECTION"), info.labels.get("PCOLLECTION"))
            counts[name] = counts.get(name, 0) + monitoring_infos.extract_counter_value(info)
    return counts


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out, separator, select_args = argv[0], argv[1], argv[2:]
    if separator != "--":
        raise SystemExit(__doc__)
    cli.configure_logging(False)
    outcome, result, pipeline = run_keeping_result(select_args)
    counts = element_counts(result, pipeline)
    pathlib.Path(out).write_text(json.dumps({"outcome": str(outcome), "counts": counts}, indent=1, sort_keys=True))
    print(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
