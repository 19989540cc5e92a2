#!/usr/bin/env bash
# Install what the benchmark needs: wrk (the load generator, Debian package) and the Python
# packages of bench/requirements.txt into the project's virtual environment (never elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
  else
    echo "bench/setup.sh: wrk is missing; install it (Debian: sudo apt-get install wrk)." >&2
    echo "  Without it bench/run.py falls back to a Python load generator." >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "bench/setup.sh: no .venv: run 'make install' first" >&2
  exit 1
fi
.venv/bin/python -m pip install --quiet -r bench/requirements.txt
echo "bench/setup.sh: ready (wrk: $(command -v wrk || echo 'missing, Python fallback'))"
