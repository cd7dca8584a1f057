"""What every benchmark shares: the timing protocol (best of N, CPU seconds), and the end of a section
(machine load, exact command line, writing to ``--out``). The rules are in ``RESULTS_HEADER.md``."""

import os
import pathlib
import resource
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, NamedTuple


class Timing(NamedTuple):
    """Best of ``repeats`` calls: the smallest CPU and the smallest wall seconds (each taken on its
    own over the calls), and the result of the last call."""

    cpu: float
    wall: float
    result: Any
    repeats: int


def cpu_seconds(children: bool = False) -> float:
    """CPU seconds (user + system) of this process; with ``children``, plus those of its child
    processes that have exited and been waited for (a ``multiprocessing.Pool`` is, when it closes).

    ``time.process_time`` alone does not see a reference's worker processes.
    """
    if not children:
        return time.process_time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + usage.ru_utime + usage.ru_stime


def best_of(fn: Callable[[], Any], repeats: int, children: bool = False) -> Timing:
    """Call ``fn()`` ``repeats`` times and keep the fastest CPU and wall time (see ``Timing``)."""
    best_cpu = best_wall = float("inf")
    result = None
    for _ in range(repeats):
        cpu, wall = cpu_seconds(children), time.perf_counter()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, cpu_seconds(children) - cpu)
    return Timing(best_cpu, best_wall, result, repeats)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """``best_of`` for several functions, called round-robin so that load changes on the shared
    machine fall on every function alike."""
    best = {name: [float("inf"), float("inf"), None] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu, wall = time.process_time(), time.perf_counter()
            result = fn()
            entry = best[name]
            entry[1] = min(entry[1], time.perf_counter() - wall)
            entry[0] = min(entry[0], time.process_time() - cpu)
            entry[2] = result
    return {name: Timing(cpu, wall, result, repeats) for name, (cpu, wall, result) in best.items()}


def load_line(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    """Markdown line with the 1/5/15-min load averages (``os.getloadavg()``) before and after the run."""
    return (
        f"Machine load (1/5/15 min): before {before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f}, "
        f"after {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} ({os.cpu_count()} cores, shared)."
    )


def command_line(script: str, argv: list[str] | None) -> str:
    """Markdown line with the command that reproduces the run: ``python benchmarks/<script> <args>``.

    Args:
        script: the benchmark's ``__file__``.
        argv: the arguments ``main`` was given; None means ``sys.argv[1:]``.
    """
    args = sys.argv[1:] if argv is None else argv
    return f"Command: `{shlex.join(['python', f'benchmarks/{pathlib.Path(script).name}', *args])}`"


def code_line(script: str) -> str:
    """Markdown line naming the code measured: the git commit of the benchmark's checkout, and the
    folders with uncommitted changes (``transforms/``, ``pipelines/``, ``benchmarks/``), if any."""
    root = pathlib.Path(script).resolve().parents[1]

    def git(*args):
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "--short", "HEAD") or "").strip()
    if not commit:
        return "Code: not a git checkout."
    dirty = git("status", "--porcelain", "--", "transforms", "pipelines", "benchmarks") or ""
    folders = sorted({line[3:].split("/")[0] for line in dirty.splitlines()})
    changes = f", with uncommitted changes in {', '.join(f'`{f}/`' for f in folders)}" if folders else ""
    return f"Code: commit {commit}{changes}."


def write_section(out: pathlib.Path, lines: list[str], script: str, argv: list[str] | None, load_before, load_after):
    """Append the load, command and code lines to ``lines`` and write the section to ``out`` (parents created)."""
    footer = ["", load_line(load_before, load_after), "", command_line(script, argv), "", code_line(script), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([*lines, *footer]), encoding="utf-8")


def publish(lines: list[str], out: pathlib.Path | None, script: str, argv: list[str] | None, load_before) -> None:
    """Print the section; with ``out``, also write it there with the load and command lines."""
    print("\n".join(lines))
    if out:
        write_section(out, lines, script, argv, load_before, os.getloadavg())
