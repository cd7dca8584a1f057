"""The shared end of every benchmark section: machine load, exact command line, writing to ``--out``."""

import os
import pathlib
import shlex
import sys


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


def write_section(out: pathlib.Path, lines: list[str], script: str, argv: list[str] | None, load_before, load_after):
    """Append the load and command lines to ``lines`` and write the section to ``out`` (parents created)."""
    footer = ["", load_line(load_before, load_after), "", command_line(script, argv), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([*lines, *footer]), encoding="utf-8")


def publish(lines: list[str], out: pathlib.Path | None, script: str, argv: list[str] | None, load_before) -> None:
    """Print the section; with ``out``, also write it there with the load and command lines."""
    print("\n".join(lines))
    if out:
        write_section(out, lines, script, argv, load_before, os.getloadavg())
