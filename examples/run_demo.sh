#!/usr/bin/env bash
# README's demo command: install winnow into .venv (created if missing), build the demo corpus from
# the Python standard library's own text, and run `winnow select` on it. Output: demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet .
.venv/bin/python examples/make_demo_corpus.py examples/demo_data
.venv/bin/winnow select \
  --input 'examples/demo_data/raw/*' \
  --target 'examples/demo_data/target/*.jsonl' \
  --output demo_out --overwrite \
  --method combined --dedup exact,minhash --num-select 300 --write-scores --seed 0
echo "demo: selected records in demo_out/selected/, report in demo_out/report.html"
