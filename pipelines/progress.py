"""Live progress on the local runners: documents and bytes read per pass, as a bar on a terminal or log lines.

The local runners report no metrics while a job runs, in memory or across processes. A side
channel works on both: a reading DoFn adds the documents and bytes of each batch to a small file
of its own process in the run's progress folder (rewritten at most every ``FLUSH_S`` seconds and
at the end of each unit), and a thread of the ``winnow`` process sums the files every second for
a tqdm bar on a TTY, or a log line every ``LOG_EVERY_S`` seconds otherwise: pass, documents and
bytes of the total (file sizes are known before the run), documents/s and an ETA. On a remote
runner there is no shared folder; the runner's own UI shows progress.
"""

import json
import logging
import os
import sys
import threading
import time
import uuid

FLUSH_S = 1.0
LOG_EVERY_S = 10.0
LOG = logging.getLogger("winnow")


class Reporter:
    """Counts a DoFn's documents and bytes into its process's file in ``folder`` (None: does nothing)."""

    def __init__(self, folder: str | None, pass_name: str):
        self._folder, self._pass = folder, pass_name
        self._docs = self._bytes = self._unit_bytes = 0
        self._path = None
        self._flushed = 0.0

    def unit_done(self, size: int) -> None:
        """A unit is read: its bytes not counted yet by ``add`` (reading reports approximate bytes) count now."""
        self.add(0, max(size - self._unit_bytes, 0), force=True)
        self._unit_bytes = 0

    def add(self, docs: int, read_bytes: int, force: bool = False) -> None:
        if self._folder is None:
            return
        self._docs += docs
        self._bytes += read_bytes
        self._unit_bytes += read_bytes
        now = time.monotonic()
        if force or now - self._flushed >= FLUSH_S:
            self._flushed = now
            if self._path is None:
                self._path = os.path.join(self._folder, f"{self._pass}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json")
            temporary = self._path + ".tmp"
            with open(temporary, "w") as handle:
                json.dump({"docs": self._docs, "bytes": self._bytes}, handle)
            os.replace(temporary, self._path)


def read_totals(folder: str, pass_name: str) -> tuple[int, int]:
    """(documents, bytes) summed over the files of ``pass_name`` in ``folder``."""
    docs = read_bytes = 0
    for name in os.listdir(folder):
        if name.startswith(pass_name + "-") and name.endswith(".json"):
            try:
                with open(os.path.join(folder, name)) as handle:
                    counts = json.load(handle)
            except (OSError, ValueError):  # being replaced right now: counted next time
                continue
            docs += counts["docs"]
            read_bytes += counts["bytes"]
    return docs, read_bytes


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class Watcher:
    """While a pass runs: a thread that shows its progress from the reporters' files.

    Use as a context manager around the pass's run; ``total_bytes`` is the input size of the pass.
    """

    def __init__(self, folder: str | None, pass_name: str, total_bytes: int, done_bytes: int = 0):
        self._folder, self._pass, self._total, self._done = folder, pass_name, max(total_bytes, 1), done_bytes
        self._stop = threading.Event()
        self._thread = None
        self._bar = None

    def __enter__(self):
        if self._folder is not None:
            if sys.stderr.isatty():
                from tqdm import tqdm

                self._bar = tqdm(total=self._total, initial=self._done, unit="B", unit_scale=True, unit_divisor=1024,
                                 desc=self._pass, leave=True, file=sys.stderr)
            self._thread = threading.Thread(target=self._watch, name=f"winnow-progress-{self._pass}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
        return False

    def _watch(self) -> None:
        started, logged = time.monotonic(), time.monotonic()
        while not self._stop.wait(1.0):
            docs, read = read_totals(self._folder, self._pass)
            read += self._done
            elapsed = time.monotonic() - started
            rate = docs / elapsed if elapsed > 0 else 0.0
            fraction = min(read / self._total, 1.0)
            if self._bar is not None:
                self._bar.n = min(read, self._total)
                self._bar.set_postfix_str(f"{docs:,} docs, {rate:,.0f} docs/s", refresh=True)
            elif time.monotonic() - logged >= LOG_EVERY_S:
                logged = time.monotonic()
                eta = (elapsed / max(fraction - self._done / self._total, 1e-9)) * (1 - fraction) if fraction > self._done / self._total else float("nan")
                LOG.info("%s: %s of %s (%.0f%%), %s docs, %.0f docs/s, ETA %s", self._pass, _size(read), _size(self._total),
                         100 * fraction, f"{docs:,}", rate, "?" if eta != eta else f"{eta:.0f}s")
