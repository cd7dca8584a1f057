"""Per-stage wall time and memory of one ``winnow select`` run on the local FnApiRunner.

Runs the job in this process and wraps the runner's bundle execution (``FnApiRunner._execute_bundle``,
a private method of Beam 2.77's local runner: this is a measurement tool, not part of winnow).
A sampler thread reads this process's RSS every ``SAMPLE_S`` seconds. For each fused stage
(a bundle; stages are named by the top-level winnow steps they run, e.g. ``DedupNearMinHash``)
it records the wall seconds, the RSS when the stage ends and the highest RSS sampled while it
ran. The table sums the seconds per name and keeps the highest RSS. The corpus is
``bench_scale``'s (demo text repeated and perturbed, 5% planted copies).

Usage: ``python benchmarks/profile_stages.py --docs 100000 --out benchmarks/sections/stages.md``
"""

import argparse
import os
import pathlib
import shlex
import sys
import tempfile
import threading
import time

import psutil
from apache_beam.runners.portability.fn_api_runner import fn_runner

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks.bench_scale import write_scale_corpus  # noqa: E402
from benchmarks.common import publish  # noqa: E402
from examples import make_demo_corpus  # noqa: E402
from winnow.pipelines import cli  # noqa: E402

SAMPLE_S = 0.05
SELECT_FLAGS = ["--fraction", "0.1", "--dedup", "exact,minhash", "--overwrite"]


class StageRecorder:
    """Wraps ``FnApiRunner._execute_bundle``: ``rows`` of (stage name, seconds, RSS MB at end, peak RSS MB)."""

    def __init__(self):
        self.rows: list[tuple[str, float, float, float]] = []
        self._process = psutil.Process()
        self._peak = 0.0
        self._lock = threading.Lock()  # the sampler and the bundle start both write _peak
        self._stop = threading.Event()

    def _rss_mb(self) -> float:
        return self._process.memory_info().rss / 2**20

    def _sample(self):
        while not self._stop.is_set():
            rss = self._rss_mb()
            with self._lock:
                self._peak = max(self._peak, rss)
            time.sleep(SAMPLE_S)

    def __enter__(self):
        original = fn_runner.FnApiRunner._execute_bundle
        recorder = self

        def execute(runner, context, bundle_manager, bundle_input):
            name = stage_name(bundle_manager.stage)
            with recorder._lock:
                recorder._peak = recorder._rss_mb()
            started = time.perf_counter()
            result = original(runner, context, bundle_manager, bundle_input)
            rss = recorder._rss_mb()
            with recorder._lock:
                peak = max(recorder._peak, rss)
            recorder.rows.append((name, time.perf_counter() - started, rss, peak))
            return result

        self._original = original
        fn_runner.FnApiRunner._execute_bundle = execute
        threading.Thread(target=self._sample, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        fn_runner.FnApiRunner._execute_bundle = self._original


def stage_name(stage) -> str:
    """The top-level winnow steps a fused stage runs, e.g. ``DedupExact+DedupNearMinHash``."""
    names = []
    for transform in stage.transforms:
        top = transform.unique_name.split("/")[0]
        if top and not top.startswith(("ref_", "fn/")) and top not in names:
            names.append(top)
    return "+".join(names) or stage.name


def summarize(rows) -> list[tuple[str, int, float, float]]:
    """Per stage name: (name, bundles, seconds, peak RSS MB), in order of first run."""
    table: dict[str, list] = {}
    for name, seconds, _, peak in rows:
        entry = table.setdefault(name, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        entry[2] = max(entry[2], peak)
    return [(name, n, seconds, peak) for name, (n, seconds, peak) in table.items()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--method", default="random", help="the select method profiled (combined also needs a target)")
    parser.add_argument("--top", type=int, default=15, help="stages listed, by seconds")
    parser.add_argument("--workdir", type=pathlib.Path)
    parser.add_argument("--out", type=pathlib.Path, help="write the Markdown section here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        corpus = pathlib.Path(tmp) / "corpus"
        corpus.mkdir()
        n_docs, text_bytes, _ = write_scale_corpus(corpus, args.docs)
        command = ["select", "--input", str(corpus / "*"), "--output", str(pathlib.Path(tmp) / "out"), "--method", args.method, *SELECT_FLAGS]
        if args.method != "random":
            demo = pathlib.Path(tmp) / "demo"
            make_demo_corpus.write_corpus(demo, code_docs=10)
            command += ["--target", str(demo / "target" / "*")]
        started = time.perf_counter()
        with StageRecorder() as recorder:
            if cli.main(command) != 0:
                raise RuntimeError(f"winnow {shlex.join(command)} failed")
        wall = time.perf_counter() - started
    stages = summarize(recorder.rows)
    peak = max(p for *_, p in stages)
    lines = [
        f"## Stages of `winnow select --method {args.method} --dedup exact,minhash`, {n_docs:,} documents",
        "",
        f"{n_docs:,} documents, {text_bytes / 1e6:.0f} MB of text, one process (FnApiRunner in memory): "
        f"{wall:.0f} s wall, {n_docs / wall:,.0f} docs/s, {text_bytes / 1e6 / wall:.2f} MB/s, peak RSS {peak:,.0f} MB. "
        f"{len(recorder.rows)} fused stages ran; the {args.top} longest, by their winnow steps:",
        "",
        "| stage (fused winnow steps) | bundles | wall s | documents / wall s | peak RSS MB while it ran |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, bundles, seconds, stage_peak in sorted(stages, key=lambda s: -s[2])[: args.top]:
        lines.append(f"| {name} | {bundles} | {seconds:.1f} | {n_docs / seconds:,.0f} | {stage_peak:,.0f} |")
    publish(lines, args.out, __file__, argv, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
