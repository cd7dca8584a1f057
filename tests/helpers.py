"""Helpers for tests that run Beam pipelines, and shared test texts."""

import os

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline


def local_pipeline(**flags) -> TestPipeline:
    """A TestPipeline on the offline FnApiRunner (the DirectRunner would try to download Prism first).

    ``flags`` are pipeline options, e.g. ``direct_running_mode="multi_processing", direct_num_workers=2``.
    """
    return TestPipeline(runner=FnApiRunner(), options=PipelineOptions([], **flags))


class RootedFileSystem(LocalFileSystem):
    """A Beam filesystem of scheme ``rooted://`` kept under the local folder ``ROOT``.

    Code that reaches files only through Beam's ``FileSystems`` works on it as on any object
    store; code that opens local paths directly fails (``rooted://`` is no local path).
    """

    ROOT = None  # set by each test (monkeypatch)
    PREFIX = "rooted://"

    @classmethod
    def scheme(cls):
        return "rooted"

    def _local(self, path: str) -> str:
        assert path.startswith(self.PREFIX), path
        return os.path.join(self.ROOT, path[len(self.PREFIX):])

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def _list(self, dir_or_prefix):
        root = self._local(dir_or_prefix)
        for directory, _, files in os.walk(root):
            for name in files:
                local = os.path.join(directory, name)
                yield FileMetadata(self.PREFIX + os.path.relpath(local, self.ROOT), os.path.getsize(local), os.path.getmtime(local))

    def mkdirs(self, path):
        super().mkdirs(self._local(path))

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def copy(self, source_file_names, destination_file_names):
        super().copy([self._local(p) for p in source_file_names], [self._local(p) for p in destination_file_names])

    def rename(self, source_file_names, destination_file_names):
        super().rename([self._local(p) for p in source_file_names], [self._local(p) for p in destination_file_names])

    def exists(self, path):
        return super().exists(self._local(path))

    def size(self, path):
        return super().size(self._local(path))

    def last_updated(self, path):
        return super().last_updated(self._local(path))

    def checksum(self, path):
        return super().checksum(self._local(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        super().delete([self._local(p) for p in paths])


def estimate_passes() -> tuple[str, str, str]:
    """Texts A, B (A with one word edited), C (A with five words edited) of 200 words: exact word 5-gram
    Jaccard J(A, C) = 0.774, but the 128-permutation MinHash estimate (seed 1) is 0.844, and A and C share
    an LSH band at threshold 0.8, so C links to A; only the exact Jaccard keeps them apart."""
    words = [f"w{i}" for i in range(200)]
    b, c = list(words), list(words)
    b[100] = "b"
    for i in range(6, 200, 40):
        c[i] = f"c{i}"
    return " ".join(words), " ".join(b), " ".join(c)
