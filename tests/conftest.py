"""Shared fixtures: a small demo corpus, and a virtual environment where only winnow's sdist is installed.

Beam's multi_processing mode runs SDK workers in subprocesses that unpickle the test functions
by module name, so the repository root and tests/ go on their PYTHONPATH.
"""

import os
import pathlib
import subprocess
import sys
import sysconfig
import tarfile

import pytest

from examples import make_demo_corpus

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 300
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p
)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """A demo corpus with 300 code chunks: ``(directory, counts)``; raw/ has one shard per format."""
    out = tmp_path_factory.mktemp("demo")
    counts = make_demo_corpus.write_corpus(out, code_docs=300)
    return out, counts


def run_checked(command: list, cwd: pathlib.Path, env: dict) -> subprocess.CompletedProcess:
    finished = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert finished.returncode == 0, f"{command}\n{finished.stdout}\n{finished.stderr}"
    return finished


def clean_env() -> dict:
    """The environment without PYTHONPATH: a process started with it sees only what its venv installed."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="session")
def sdist_venv(tmp_path_factory) -> pathlib.Path:
    """A venv where winnow is installed from its sdist alone, away from the repository; returns the venv.

    The sdist is what ``--setup_file`` ships to remote workers. It is installed without
    dependencies, offline (``setup.py install --single-version-externally-managed`` from the
    unpacked sdist: ``pip install`` of an sdist offline needs build isolation's network or the
    ``wheel`` package). The dependencies come from the interpreter running the tests: the venv is
    made with ``--system-site-packages``, and when the test interpreter is itself a venv (CI's
    ``.venv``), a ``.pth`` line appends its site-packages too. That directory's own ``.pth``
    files are not run, so an editable install of winnow there cannot put the repository on the
    path; the sdist's copy comes first on ``sys.path``.
    """
    directory, env = tmp_path_factory.mktemp("sdist"), clean_env()
    dist, egg_base = directory / "dist", directory / "egg"
    egg_base.mkdir()
    # egg-info goes to the temporary directory, not the repository.
    run_checked([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(egg_base), "sdist", "--dist-dir", str(dist)], ROOT, env)
    (sdist,) = dist.glob("winnow-*.tar.gz")
    venv = directory / "venv"
    run_checked([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], directory, env)
    python = venv / "bin" / "python"
    site_packages = pathlib.Path(run_checked([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], directory, env).stdout.strip())
    parent_paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site_packages / "zz_test_interpreter.pth").write_text("".join(f"{p}\n" for p in parent_paths))
    with tarfile.open(sdist) as archive:
        archive.extractall(directory / "unpacked", filter="data")
    (source,) = (directory / "unpacked").glob("winnow-*")
    run_checked([str(python), "setup.py", "-q", "install", "--single-version-externally-managed", "--record", str(directory / "installed.txt")], source, env)
    return venv
