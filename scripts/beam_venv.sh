#!/usr/bin/env bash
# Creates (or reuses) ./.venv-beam: the environment of the Beam caching job
# (onesearch_jax.data.cache_tasks, tests marked `beam`). apache-beam does not
# resolve against constraints.txt, so this environment is separate from
# .venv, as a Dataflow job's workers are: constraints-beam.txt's pins replace
# constraints.txt's for the packages it names (pillow, protobuf, ...), every
# other package keeps its constraints.txt pin. Idempotent: a stamp holding
# the hash of setup.py + both constraint files skips reinstalling.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=.venv-beam
if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv "$venv"
fi
stamp=$venv/.onesearch_stamp
want=$(cat setup.py constraints.txt constraints-beam.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[beam-venv] installing the Beam stack into $venv (first run takes ~1-1.5 min)"
  # The merged pins: constraints.txt minus the packages constraints-beam.txt
  # names, then constraints-beam.txt.
  names=$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' constraints-beam.txt \
    | tr 'A-Z_' 'a-z-' | sort -u)
  merged=$venv/constraints-merged.txt
  while IFS= read -r line; do
    name=$(printf '%s' "$line" | sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' \
      | tr 'A-Z_' 'a-z-')
    if [ -n "$name" ] && grep -qx "$name" <<<"$names"; then
      continue
    fi
    printf '%s\n' "$line"
  done <constraints.txt >"$merged"
  cat constraints-beam.txt >>"$merged"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  # --no-compile: modules compile on first import (only what the job uses).
  "$venv/bin/python" -m pip install -q --no-compile -c "$merged" -e '.[test,beam]'
  echo "$want" > "$stamp"
else
  echo "[beam-venv] reusing $venv"
fi
