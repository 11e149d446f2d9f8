#!/usr/bin/env bash
# Creates .venv (once) and installs capprof with its pinned CPU torch; safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# Done before with this pyproject.toml (the install is editable, so code changes need nothing): skip, as make run does.
stamp=.venv/.capprof-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -x .venv/bin/capprof ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "$want" > "$stamp"
