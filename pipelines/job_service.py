"""Beam's local job service, the end a ``--runner PortableRunner`` job is submitted to, run safely.

    python -m pipelines.job_service --port 8099

Takes the flags of ``python -m apache_beam.runners.portability.local_job_service_main`` except
``--background`` and ``--stop``. The job service runs each submitted job on Beam's
``FnApiRunner``, whose timed data flushes lose data (``runner.flush_local_data_by_size_only``);
this entry point turns them off before serving. Run it in the foreground, or with ``&``:
``--background`` would start Beam's own service in a new process, without the fix.
"""

import logging
import signal
import sys

from apache_beam.runners.portability import local_job_service_main

from pipelines import runner

UNSUPPORTED_FLAGS = ("--background", "--stop")


def main(argv: list[str]) -> int:
    """Serve jobs until terminated; 2 for an unsupported flag."""
    unsupported = [flag for flag in argv if flag in UNSUPPORTED_FLAGS]
    if unsupported:
        print(f"pipelines.job_service: error: {' '.join(unsupported)} not supported; run it in the foreground or with &", file=sys.stderr)
        return 2
    runner.flush_local_data_by_size_only()
    local_job_service_main.run([local_job_service_main.__file__, *argv])
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig()
    logging.getLogger().setLevel(logging.INFO)  # Beam's import may have configured the root logger already
    sys.exit(main(sys.argv[1:]))
