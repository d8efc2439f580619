#!/usr/bin/env bash
# The main job: set up .venv (reused when present) and run the pipeline on
# the embedded default world. Extra arguments go to run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/python run.py --workdir="${WORKDIR:-workdir}" "$@"
