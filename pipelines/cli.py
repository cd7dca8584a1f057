"""The ``winnow`` command: ``winnow select|dedup|vendi ...``.

Errors a user can act on (bad flags, unreadable inputs, a failed job's cause) are printed as one
line, ``winnow <command>: error: ...``, with exit code 2 (usage) or 1 (the job failed) — not as
a traceback. ``WINNOW_DEBUG=1`` shows the traceback too.
"""

import logging
import os
import sys

USAGE = """usage: winnow <command> [options]

commands:
  select   read shards, deduplicate, score and select a subset (Parquet + report)

Run 'winnow <command> --help' for a command's options.
"""


class _DropImportNoise(logging.Filter):
    """Beam logs 'apitools not found' on import whenever the GCP extras are absent; it means nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


def configure_logging() -> None:
    """winnow's progress at INFO, everything else (Beam) at WARNING, on stderr.

    Must run before apache_beam is imported, so Beam's import-time warning meets this handler.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_DropImportNoise())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("winnow").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    configure_logging()
    from pipelines import options, runner, select_job
    from transforms import io

    commands = {"select": select_job.main}
    command, rest = argv[0], argv[1:]
    if command not in commands:
        print(f"winnow: unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    try:
        return commands[command](rest)
    except (options.UsageError, io.InputError, runner.JobFailed) as err:
        if os.environ.get("WINNOW_DEBUG"):
            raise
        print(f"winnow {command}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, options.UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
