#!/usr/bin/env bash
# README's test command: install winnow with its test extra into .venv (created if missing), run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet ".[test]"
exec .venv/bin/python -m pytest "$@"
