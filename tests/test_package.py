"""The source distribution is complete: installed alone, away from the repository, it runs a job.

Remote runners get winnow's code through ``--setup_file ./setup.py``: each worker builds and
installs the sdist. The ``sdist_venv`` fixture (conftest.py) does the same thing; a module missing
from the sdist then fails the run, which goes from a directory outside the repository with no
PYTHONPATH.
"""

import json
import pathlib

import pyarrow.parquet as pq

from examples import make_demo_corpus
from tests.conftest import ROOT, clean_env, run_checked

N_SELECT = 25


def test_sdist_installed_alone_runs_the_demo(sdist_venv, tmp_path):
    python, env = sdist_venv / "bin" / "python", clean_env()
    where = run_checked([str(python), "-c", "import winnow.pipelines, winnow.transforms; print(winnow.pipelines.__file__); print(winnow.transforms.__file__)"],
                        tmp_path, env)
    for module_file in where.stdout.split():
        assert pathlib.Path(module_file).is_relative_to(sdist_venv), module_file
        assert not pathlib.Path(module_file).is_relative_to(ROOT), module_file
    work = tmp_path / "work"
    make_demo_corpus.write_corpus(work / "demo", code_docs=20)
    run_checked([str(sdist_venv / "bin" / "winnow"), "select", "--input", "demo/raw/*", "--target", "demo/target/*", "--output", "out",
                 "--num-select", str(N_SELECT), "--method", "dsir", "--dedup", "exact,minhash"], work, env)
    report = json.loads((work / "out" / "report.json").read_text())
    assert report["counts"]["selected"] == N_SELECT and all(report["checks"].values()), report["checks"]
    assert sum(pq.read_metadata(f).num_rows for f in (work / "out" / "selected").glob("*.parquet")) == N_SELECT


def test_the_sdist_carries_the_license_and_the_metadata(sdist_venv):
    (info,) = sdist_venv.glob("lib/python*/site-packages/winnow-*-info")
    metadata = (info / "PKG-INFO").read_text() if (info / "PKG-INFO").exists() else (info / "METADATA").read_text()
    assert "License: Apache-2.0" in metadata or "License-Expression: Apache-2.0" in metadata
    assert "Summary: Data selection and curation" in metadata
