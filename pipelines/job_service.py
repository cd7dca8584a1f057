"""Beam's local job service, the end a ``--runner PortableRunner`` job is submitted to, run safely.

    python -m winnow.pipelines.job_service --port 8099

Takes the flags of ``python -m apache_beam.runners.portability.local_job_service_main`` except
``--background``. The job service runs each submitted job on Beam's
``FnApiRunner``, whose timed data flushes lose data (``runner.disable_timed_data_flushes``);
this entry point turns them off before serving. Run it in the foreground, or with ``&``:
``--background`` would start Beam's own service in a new process, without the fix.
"""

import logging
import signal
import sys

from apache_beam.runners.portability import local_job_service_main

from winnow.pipelines import runner

BACKGROUND_FLAG = "--background"


def main(argv: list[str]) -> int:
    """Serve jobs until terminated; 2 for ``--background`` (or an abbreviation argparse would accept)."""
    if any(len(flag) > 3 and BACKGROUND_FLAG.startswith(flag) for flag in argv):
        print(f"winnow.pipelines.job_service: error: {BACKGROUND_FLAG} not supported; run it in the foreground or with &", file=sys.stderr)
        return 2
    runner.disable_timed_data_flushes()
    runner.release_idle_bundle_processors()
    runner.memoize_dofn_specs()
    local_job_service_main.run([local_job_service_main.__file__, *argv])
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig()
    logging.getLogger().setLevel(logging.INFO)  # Beam's import may have configured the root logger already
    sys.exit(main(sys.argv[1:]))
