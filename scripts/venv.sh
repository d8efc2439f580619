#!/usr/bin/env bash
# Creates (or reuses) ./.venv with the pinned stack. Idempotent: a stamp
# holding the hash of setup.py + constraints.txt skips reinstalling.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.onesearch_stamp
want=$(cat setup.py constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[venv] installing pinned dependencies into .venv (first run takes ~2 min)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # --no-compile: pip would byte-compile every installed file, one at a time
  # (~25 s, mostly TensorFlow modules never imported here); precompile.py
  # compiles only what the main job and the tests import (~12 s).
  .venv/bin/python -m pip install -q --no-compile -c constraints.txt -e '.[test]'
  PYTHONDONTWRITEBYTECODE= .venv/bin/python scripts/precompile.py
  echo "$want" > "$stamp"
else
  echo "[venv] reusing .venv"
fi
