#!/usr/bin/env bash
# The main job: install, migrate, import the demo sample, serve on the embedded default (SQLite + embedded Qdrant).
# Safe to re-run: each step skips what is done, and nothing changed through the API is overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CAPPROF_DATA_DIR=${CAPPROF_DATA_DIR:-.capprof}
.venv/bin/capprof db upgrade
.venv/bin/capprof import data --if-changed
.venv/bin/capprof profiles rebuild --if-stale
.venv/bin/capprof aptitude build --if-missing
.venv/bin/capprof reranker train --activate --if-missing
.venv/bin/capprof presets calibrate --if-missing
exec .venv/bin/capprof serve --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
