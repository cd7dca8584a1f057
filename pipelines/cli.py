"""The ``winnow`` command: ``winnow select|dedup|vendi ...``.

Errors a user can act on (bad flags, unreadable inputs, a failed job's cause) are printed as one
line, ``winnow <command>: error: ...``, with exit code 2 (a bad flag or input, found before the
job runs) or 1 (the job failed) — not as a traceback. Ctrl-C prints one line (how far the run got,
and that ``--resume`` continues it) and exits 130. ``WINNOW_DEBUG=1`` shows the traceback too.
"""

import ctypes
import faulthandler
import logging
import os
import sys
import threading
import time

USAGE = """usage: winnow <command> [options]

commands:
  select   read shards, deduplicate, score and select a subset (Parquet + report)
  dedup    remove exact and near duplicates, keep one record per cluster (Parquet + report)
  vendi    print the Vendi score (diversity) of a dataset

Run 'winnow <command> --help' for a command's options.
"""


class _DropImportNoise(logging.Filter):
    """Beam logs 'apitools not found' on import whenever the GCP extras are absent; it means nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


REMOTE_STATE_LOGGERS = ("apache_beam.runners.portability.portable_runner", "apache_beam.runners.dataflow.dataflow_runner")


def configure_logging(debug: bool) -> None:
    """winnow's progress at INFO on stderr; Beam's own logs only with ``debug``.

    Without ``debug`` a failing job's cause reaches the user as winnow's one-line error, not as
    the worker tracebacks Beam logs. Must run before apache_beam is imported, so Beam's
    import-time warning meets this handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_DropImportNoise())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("winnow").setLevel(logging.INFO)
    logging.getLogger("apache_beam").setLevel(logging.WARNING if debug else logging.CRITICAL)
    for remote in REMOTE_STATE_LOGGERS:  # a remote runner's job state changes (and Dataflow's console URL)
        logging.getLogger(remote).setLevel(logging.INFO)


def enable_crash_tracebacks() -> None:
    """A crash in native code prints every thread's Python stack, here and in Beam's worker processes."""
    os.environ.setdefault("PYTHONFAULTHANDLER", "1")  # subprocess SDK workers inherit the environment
    if not faulthandler.is_enabled():
        try:
            faulthandler.enable()
        except (AttributeError, ValueError):  # stderr without a file descriptor (redirected in-process)
            pass


MALLOC_ARENAS = 2  # glibc's default allows 8 per core
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at ``MALLOC_ARENAS`` here and in worker subprocesses, unless ``MALLOC_ARENA_MAX`` is set.

    The local runner's threads otherwise each grow an arena that keeps the memory freed in it, and the
    peak grows with them (benchmarks/RESULTS.md, "Scale"). True when this process's cap was set (False
    without glibc or when the user chose one).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(MALLOC_ARENAS)  # subprocess SDK workers read it at start
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
    except (OSError, AttributeError):  # not glibc
        return False


def use_system_arrow_pool() -> bool:
    """Allocate Arrow's buffers with malloc here and in worker subprocesses, unless ``ARROW_DEFAULT_MEMORY_POOL`` is set.

    pyarrow's default pool, mimalloc, keeps the pages of the buffers it freed; glibc's heap hands them back
    (``start_malloc_trimmer``), which lowers a large decide pass's peak (benchmarks/RESULTS.md, "Scale").
    True when this process's pool was changed.
    """
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return False
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"  # read when pyarrow is imported, as in subprocess SDK workers
    import pyarrow

    pyarrow.set_memory_pool(pyarrow.system_memory_pool())  # this process may have imported pyarrow already
    return True


MALLOC_TRIM_INTERVAL_S = 1.0
_trimmer: threading.Thread | None = None


def start_malloc_trimmer() -> bool:
    """Every ``MALLOC_TRIM_INTERVAL_S``, hand the memory freed inside glibc's heaps back to the system (``malloc_trim(0)``).

    glibc returns only the top of a heap by itself; the pages freed below live data stay resident and
    a later stage's allocations, in another arena or of other sizes, add to them (the effect on a
    run's peak: benchmarks/RESULTS.md, "Scale"). Beam's worker subprocesses, in other running modes,
    are not trimmed. One daemon thread per process, ending with it; True when it runs (False without glibc).
    """
    global _trimmer
    if _trimmer is not None:
        return True
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return False

    def loop():
        while True:
            time.sleep(MALLOC_TRIM_INTERVAL_S)
            trim(0)

    _trimmer = threading.Thread(target=loop, name="winnow-malloc-trim", daemon=True)
    _trimmer.start()
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    debug = bool(os.environ.get("WINNOW_DEBUG"))
    configure_logging(debug)
    enable_crash_tracebacks()
    limit_malloc_arenas()
    use_system_arrow_pool()
    start_malloc_trimmer()
    from winnow.pipelines import dedup_job, options, runner, select_job, vendi_job
    from winnow.transforms import io

    commands = {"select": select_job.main, "dedup": dedup_job.main, "vendi": vendi_job.main}
    command, rest = argv[0], argv[1:]
    if command not in commands:
        print(f"winnow: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    try:
        return commands[command](rest)
    except SystemExit as exit_request:  # argparse: --help (0), already printed
        return exit_request.code
    except KeyboardInterrupt as interrupt:
        print(f"winnow {command}: {interrupt or 'interrupted'}", file=sys.stderr)
        return 130
    except (options.UsageError, io.InputError, runner.JobFailed) as err:
        if debug:
            raise
        print(f"winnow {command}: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, runner.JobFailed) else 2


if __name__ == "__main__":
    sys.exit(main())
