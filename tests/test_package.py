"""The source distribution is complete: installed alone, away from the repository, it runs a job.

Remote runners get winnow's code through ``--setup_file ./setup.py``: each worker builds and
installs the sdist. This test does the same thing. It builds the sdist, installs it without
dependencies into a new virtual environment (``setup.py install
--single-version-externally-managed`` from the unpacked sdist: offline, ``pip install`` of an
sdist needs either network for build isolation or the ``wheel`` package, which setuptools < 70.1
lacks), and runs ``winnow select`` on a small demo corpus
with that environment's ``winnow``, from a directory outside the repository and with no
PYTHONPATH. A module missing from the sdist then fails the run.

The dependencies come from the interpreter running the tests, with nothing downloaded. The venv
is made with ``--system-site-packages``. When the test interpreter is itself a venv (CI's
``.venv``), that flag reaches only the base interpreter, so a ``.pth`` line also adds the test
interpreter's site-packages. That directory is only appended to ``sys.path``, and its own
``.pth`` files are not run, so an editable install of winnow in it cannot put the repository on
the path. The installed copy comes first on ``sys.path``.
"""

import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import tarfile

import pyarrow.parquet as pq

from examples import make_demo_corpus

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 300
N_SELECT = 25


def _run(command: list[str], cwd: pathlib.Path, env: dict) -> subprocess.CompletedProcess:
    finished = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert finished.returncode == 0, f"{command}\n{finished.stdout}\n{finished.stderr}"
    return finished


def test_sdist_installed_alone_runs_the_demo(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    dist, egg_base = tmp_path / "dist", tmp_path / "egg"
    egg_base.mkdir()
    # egg-info goes to tmp_path, not the repository.
    _run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(egg_base), "sdist", "--dist-dir", str(dist)], ROOT, env)
    (sdist,) = dist.glob("winnow-*.tar.gz")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    site_packages = pathlib.Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).stdout.strip())
    parent_paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site_packages / "zz_test_interpreter.pth").write_text("".join(f"{p}\n" for p in parent_paths))
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (source,) = (tmp_path / "unpacked").glob("winnow-*")
    # What pip does for an sdist without wheel support, offline: no download, no wheel package needed.
    _run([str(python), "setup.py", "-q", "install", "--single-version-externally-managed", "--record", str(tmp_path / "installed.txt")], source, env)

    where = _run([str(python), "-c", "import winnow.pipelines, winnow.transforms; print(winnow.pipelines.__file__); print(winnow.transforms.__file__)"], tmp_path, env)
    for module_file in where.stdout.split():
        assert pathlib.Path(module_file).is_relative_to(site_packages), module_file
        assert not pathlib.Path(module_file).is_relative_to(ROOT), module_file

    work = tmp_path / "work"
    make_demo_corpus.write_corpus(work / "demo", code_docs=20)
    _run([str(venv / "bin" / "winnow"), "select", "--input", "demo/raw/*", "--target", "demo/target/*", "--output", "out",
          "--num-select", str(N_SELECT), "--method", "dsir", "--dedup", "exact,minhash"], work, env)
    report = json.loads((work / "out" / "report.json").read_text())
    assert report["counts"]["selected"] == N_SELECT
    assert all(report["checks"].values()), report["checks"]
    selected = sum(pq.read_metadata(f).num_rows for f in (work / "out" / "selected").glob("*.parquet"))
    assert selected == N_SELECT
