"""README's commands and Python snippets stay true: the snippets run as written, the demo command's flags parse."""

import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from winnow.pipelines import select_job

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs_as_written(index, demo_corpus, tmp_path):
    """Each snippet runs in a fresh interpreter, from a folder where examples/demo_data is the demo corpus."""
    demo_dir, _ = demo_corpus
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "demo_data").symlink_to(demo_dir)
    finished = subprocess.run([sys.executable, "-c", SNIPPETS[index]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    printed = finished.stdout.strip().splitlines()
    assert printed, "a snippet prints its result"
    if "Top.Of(5" in SNIPPETS[index]:
        top = eval(printed[-1])  # [(id, weight), ...], best first
        assert len(top) == 5 and [w for _, w in top] == sorted((w for _, w in top), reverse=True)


def test_the_demo_command_parses_with_todays_flags():
    script = (ROOT / "examples" / "run_demo.sh").read_text()
    command = re.search(r"bin/winnow select(.*?)\n(?!\s)", script, flags=re.DOTALL).group(1).replace("\\\n", " ")
    args = select_job.select_parser().parse_args(shlex.split(command))
    assert args.method == "combined" and args.dedup == "exact,minhash"
