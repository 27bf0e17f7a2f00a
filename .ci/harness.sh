#!/usr/bin/env bash
# CI steps of the research harness (issue 5); called from .ci/run.
#  1. downtime budgets: `migsim check budgets/standard.toml` (fails CI when a budget is exceeded)
#  2. notebooks: install the pinned Python requirements and execute every notebook against the
#     committed reference results (fails CI when a cell raises)
#  3. reference results: rerun the standard sweep and compare with results/standard; a mismatch
#     is a warning (set MIGSIM_STRICT_REFERENCE=1 to make it fatal)
# Takes about 2 minutes on 2 cores with a cold pip cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${MIGSIM_NB_VENV:-target/nb-venv}

echo "== harness: build"
cargo build --release -q
MIGSIM=target/release/migsim

echo "== harness: downtime budgets"
"$MIGSIM" check budgets/standard.toml --junit target/budgets-junit.xml

echo "== harness: notebooks"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r notebooks/requirements.txt
"$VENV/bin/python" notebooks/execute.py target/notebooks

echo "== harness: reference results are current"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$MIGSIM" sweep sweeps/standard.toml --out "$tmp/standard" --no-plots -q
if cmp -s "$tmp/standard/runs.csv" results/standard/runs.csv &&
   cmp -s "$tmp/standard/rounds.csv" results/standard/rounds.csv; then
  echo "results/standard matches a fresh run"
else
  msg="results/standard differs from a fresh run of sweeps/standard.toml; regenerate it with: cargo run --release -- sweep sweeps/standard.toml --fresh"
  if [ "${MIGSIM_STRICT_REFERENCE:-0}" = 1 ]; then
    echo "error: $msg" >&2
    exit 1
  fi
  echo "warning: $msg" >&2
fi
