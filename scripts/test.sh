#!/usr/bin/env bash
# Set up .venv (reused when present), lint with ruff, run the test suite.
# With ONESEARCH_BEAM_TESTS=1 (set by .ci/run; also on when CI=true), then
# set up .venv-beam (scripts/beam_venv.sh) and run the tests marked `beam`
# (the Beam task cache on the tiny world) in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
echo "[lint] ruff check + ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# 8 fake CPU devices for the sharding tests (also set in tests/conftest.py).
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8}"
export JAX_PLATFORMS=cpu
export TF_CPP_MIN_LOG_LEVEL=2
# Two test processes (pytest-xdist, one per core; a test file stays in one
# process so its module fixtures are built once, and the files sharing a
# costly session fixture share a process: tests/conftest.py, heaviest files
# first). PYTEST_WORKERS=0: one process.
beam="${ONESEARCH_BEAM_TESTS:-}"
if [ -z "$beam" ] && [ "${CI:-}" = "true" ]; then
  beam=1
fi
if [ "$beam" != "1" ]; then
  exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
fi
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
echo "[beam] the Beam environment and the tests marked beam"
bash scripts/beam_venv.sh
exec .venv-beam/bin/python -m pytest -m beam tests/data/cache_tasks_test.py
