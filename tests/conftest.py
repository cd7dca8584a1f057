"""Shared fixtures: a small demo corpus built once per test session.

Beam's multi_processing mode runs SDK workers in subprocesses that unpickle the test functions
by module name, so the repository root and tests/ go on their PYTHONPATH.
"""

import os
import pathlib

import pytest

from examples import make_demo_corpus

_ROOT = pathlib.Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(_ROOT), str(_ROOT / "tests"), os.environ.get("PYTHONPATH")) if p
)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """A demo corpus with 300 code chunks: ``(directory, counts)``; raw/ has one shard per format."""
    out = tmp_path_factory.mktemp("demo")
    counts = make_demo_corpus.write_corpus(out, code_docs=300)
    return out, counts

