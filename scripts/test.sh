#!/usr/bin/env bash
# The test suite, twice: against PostgreSQL (a throwaway database per run) and against SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable at 127.0.0.1:5432" >&2; exit 1; }

# The console's browser test drives Debian's chromium (never a downloaded browser); installed once, as root.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
  else
    echo "chromium is not installed: the console browser test will skip (and fail under CI)" >&2
  fi
fi

export CAPPROF_TEST_EMBEDDING_CACHE=${CAPPROF_TEST_EMBEDDING_CACHE:-$PWD/.capprof/test-embeddings}
.venv/bin/ruff check .
.venv/bin/mypy
echo "== tests against PostgreSQL =="
CAPPROF_TEST_BACKEND=postgres .venv/bin/python -m pytest -q "$@"
echo "== tests against SQLite =="
CAPPROF_TEST_BACKEND=sqlite .venv/bin/python -m pytest -q "$@"
